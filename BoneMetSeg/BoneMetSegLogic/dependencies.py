"""Which Python packages BoneMetSegLib still needs in this Python (Slicer's), without Qt.

The module widget asks this on first use. PyTorch is handled apart: it must come from the
PyTorch extension's installer (which picks the CPU or CUDA build for the machine), and an
existing torch is never changed. The other requirements are installed with pip only after the
user confirms, with a constraints file that pins the installed torch so pip cannot replace it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from dataclasses import dataclass
from typing import Callable, Iterable

# Keep in step with [project] dependencies in pyproject.toml (a test checks it).
TORCH_REQUIREMENT = "torch>=2.1"
REQUIREMENTS = (
    "monai>=1.4",
    "numpy>=1.24",
    "SimpleITK>=2.3",
    "slicerio>=1.1",
    "highdicom>=0.28",
    "tqdm>=4.60",
    "matplotlib>=3.7",
)

VersionLookup = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Requirement:
    """A distribution name with an optional minimum version (``name>=X``)."""

    name: str
    minimum: str | None = None

    def __str__(self) -> str:
        return f"{self.name}>={self.minimum}" if self.minimum else self.name


def parse_requirement(text: str) -> Requirement:
    """``"monai>=1.4"`` -> Requirement("monai", "1.4"); only ``name`` and ``name>=version`` forms."""
    match = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:>=\s*([0-9][0-9A-Za-z.+-]*))?\s*", text)
    if not match:
        raise ValueError(f"Unsupported requirement {text!r}: write 'name' or 'name>=version'.")
    return Requirement(match.group(1), match.group(2))


def version_tuple(text: str) -> tuple[int, ...]:
    """Leading numeric release of a version: ``"2.13.0+cpu"`` -> (2, 13, 0), ``"1.5rc1"`` -> (1, 5)."""
    parts = []
    for piece in re.split(r"[.+-]", text.strip()):
        digits = re.match(r"\d+", piece)
        if not digits:
            break
        parts.append(int(digits.group()))
        if digits.group() != piece:
            break
    return tuple(parts)


def _at_least(version: str, minimum: str) -> bool:
    have, need = version_tuple(version), version_tuple(minimum)
    width = max(len(have), len(need))
    return have + (0,) * (width - len(have)) >= need + (0,) * (width - len(need))


def installed_version(name: str) -> str | None:
    """Version of the installed distribution ``name``, or None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def is_satisfied(requirement: str | Requirement, version_of: VersionLookup = installed_version) -> bool:
    """True when the requirement's distribution is installed at the minimum version or newer."""
    req = parse_requirement(requirement) if isinstance(requirement, str) else requirement
    version = version_of(req.name)
    return version is not None and (req.minimum is None or _at_least(version, req.minimum))


def missing_requirements(requirements: Iterable[str] = REQUIREMENTS,
                         version_of: VersionLookup = installed_version) -> list[str]:
    """The requirements (as written) that are not installed or too old, in the given order."""
    return [text for text in requirements if not is_satisfied(text, version_of)]


def torch_status(version_of: VersionLookup = installed_version) -> str:
    """``"ok"``, ``"missing"`` or ``"too old"`` for torch against TORCH_REQUIREMENT."""
    req = parse_requirement(TORCH_REQUIREMENT)
    version = version_of(req.name)
    if version is None:
        return "missing"
    return "ok" if _at_least(version, req.minimum) else "too old"


def torch_importable() -> bool:
    """Whether ``import torch`` can find a torch package (without importing it: that is slow)."""
    return importlib.util.find_spec("torch") is not None


def torch_pin(version_of: VersionLookup = installed_version) -> str:
    """Constraints-file text that pins the installed torch (``torch==2.13.0+cpu``)."""
    version = version_of("torch")
    if version is None:
        raise RuntimeError("PyTorch is not installed: install it first (PyTorch extension), then the "
                           "other requirements, so that pip does not pick a torch build by itself.")
    return f"torch=={version}\n"


def pip_install_arguments(requirements: Iterable[str], constraints_file: str) -> list[str]:
    """Arguments for ``slicer.util.pip_install``: the requirements and ``-c constraints_file``.

    Refuses torch: torch is only ever installed through the PyTorch extension's installer.
    """
    requirements = list(requirements)
    if not requirements:
        raise ValueError("Nothing to install.")
    for text in requirements:
        if parse_requirement(text).name.lower() == "torch":
            raise ValueError("torch is not installed with pip here: use the PyTorch extension's installer.")
    return [*requirements, "-c", str(constraints_file)]


def describe_missing(missing: list[str], torch: str) -> str:
    """One paragraph for the confirmation dialog: what is missing and what will be done."""
    lines = []
    if torch == "missing":
        lines.append("PyTorch (torch) is not installed in Slicer's Python. It is installed with the "
                     "PyTorch extension (PyTorchUtils), which picks the CPU or GPU build for this computer.")
    elif torch == "too old":
        lines.append(f"The installed PyTorch {installed_version('torch')} is older than BoneMetSeg needs "
                     f"({TORCH_REQUIREMENT}). BoneMetSeg does not change an existing PyTorch: update it with "
                     "the PyTorch module (Utilities > PyTorch Utils) and restart Slicer.")
    if missing:
        lines.append("These Python packages will be installed with pip into Slicer's Python "
                     f"(the installed PyTorch is kept as it is): {', '.join(missing)}.")
    return "\n\n".join(lines)

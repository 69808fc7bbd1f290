"""Check every output path of a run before any work starts.

Each output must have a known suffix, a name the file system can hold (with the temporary
prefix), a writable folder, must not exist without ``--overwrite``, and must land neither on an
input file nor on another output of the same run - compared as resolved paths (symlinks) and,
for existing files, by device and inode (hard links).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..errors import BoneMetSegOutputError
from .atomic import TEMP_PREFIX_MAX, check_output_path, temp_path
from .write_labelmap import check_labelmap_path

SUFFIXES = {"seg": ".seg.nrrd", "report": ".json", "overlay": ".png", "dicom_seg": ".dcm", "dicom_sr": ".dcm"}
OPTION = {"seg": "-o", "report": "--report", "overlay": "--overlay", "labelmap": "--labelmap",
          "dicom_seg": "--dicom-seg", "dicom_sr": "--dicom-sr"}


def input_files(sources) -> list[Path]:
    """The files a run reads: each file given, and the files directly inside each folder given."""
    files = []
    for src in sources:
        src = Path(src)
        if src.is_dir():
            with contextlib.suppress(OSError):
                files += [p for p in src.iterdir() if p.is_file()]
        elif src.exists():
            files.append(src)
    return files


def _identity(path: Path):
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _check_suffix(key: str, path: Path) -> None:
    if key == "labelmap":
        check_labelmap_path(path)
    elif not path.name.lower().endswith(SUFFIXES[key]):
        raise BoneMetSegOutputError(f"The {OPTION[key]} output {path} must end in {SUFFIXES[key]}.")


def _check_name_length(path: Path) -> None:
    parent = path.parent if path.parent.exists() else Path(".")
    try:
        name_max = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        name_max = 255
    if len(path.name.encode("utf-8", "surrogateescape")) + TEMP_PREFIX_MAX > name_max:
        raise BoneMetSegOutputError(
            f"The output name {path.name[:40]}... is {len(path.name)} characters long; the file system allows "
            f"{name_max - TEMP_PREFIX_MAX} here (room is kept for the temporary name). Choose a shorter name."
        )


def _probe_writable(path: Path) -> None:
    """Create and remove a temporary file beside ``path`` (read-only file systems, permissions)."""
    probe = temp_path(path)
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        raise BoneMetSegOutputError(
            f"Cannot write in {path.parent} ({exc.strerror or exc}); choose another output folder."
        ) from None
    try:
        os.close(fd)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(probe)


def check_outputs(outputs: dict, inputs, overwrite: bool, taken: dict | None = None) -> dict:
    """Check ``{kind: path}`` (kinds: seg, report, overlay, labelmap) against ``inputs`` (paths read)
    and each other; ``taken`` ({resolved path: description}) holds outputs of earlier cases of the
    same run and is extended. Returns the outputs as Paths; raises :class:`BoneMetSegOutputError`."""
    taken = {} if taken is None else taken
    read = [(p, p.resolve(), _identity(p)) for p in map(Path, input_files(inputs))]
    checked = {}
    for key, path in outputs.items():
        path = Path(path)
        _check_suffix(key, path)
        _check_name_length(path)
        resolved, ident = path.resolve(), _identity(path)
        for src, src_resolved, src_ident in read:
            if resolved == src_resolved or (ident is not None and ident == src_ident):
                raise BoneMetSegOutputError(
                    f"The {OPTION[key]} output {path} is the input file {src}; an input is never overwritten. "
                    "Choose another output path."
                )
        if resolved in taken:
            raise BoneMetSegOutputError(
                f"The {OPTION[key]} output {path} is also the {taken[resolved]} of this run; give each "
                "output its own path."
            )
        for other_resolved, what in list(taken.items()):
            if ident is not None and _identity(other_resolved) == ident:
                raise BoneMetSegOutputError(
                    f"The {OPTION[key]} output {path} is the same file as the {what} of this run; give each "
                    "output its own path."
                )
        taken[resolved] = f"{OPTION[key]} output {path}"
        checked[key] = check_output_path(path, overwrite)
        _probe_writable(checked[key])
    return checked


__all__ = ["check_outputs", "input_files"]

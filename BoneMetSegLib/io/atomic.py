"""Atomic file output: write to a temporary file beside the target, rename on success."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Iterator

from ..errors import BoneMetSegOutputError


def check_output_path(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an existing target without ``overwrite``; create missing parent folders."""
    path = Path(path)
    if path.is_dir():
        raise BoneMetSegOutputError(f"Output path {path} is a folder; give a file name instead.")
    if path.exists() and not overwrite:
        raise BoneMetSegOutputError(f"Output file {path} exists; pass --overwrite to replace it.")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise BoneMetSegOutputError(
            f"Cannot create output folder {parent}: a file is in the way. Choose another output path."
        ) from None
    except OSError as exc:
        raise BoneMetSegOutputError(
            f"Cannot create output folder {parent} ({exc.strerror or exc}). Choose another output path."
        ) from None
    if not os.access(parent, os.W_OK):
        raise BoneMetSegOutputError(f"Output folder {parent} is not writable. Choose another output path.")
    return path


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def default_permissions(path: str | os.PathLike) -> None:
    """Give a file made by ``tempfile.mkstemp`` (mode 0600) the mode a plain ``open`` would give."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    The temporary name ends with the target's full file name (``.~<random>-report.seg.nrrd``), so
    writers that pick the format from the extension (``.seg.nrrd``, ``.nii.gz``...) still work.
    On any exception the temporary file is removed and the target is left untouched.
    Raises :class:`BoneMetSegOutputError` if ``path`` exists and ``overwrite`` is False, if it is a
    folder, or if its folder cannot be created or written.
    """
    path = check_output_path(path, overwrite)
    tmp = path.with_name(f".~{secrets.token_hex(4)}-{path.name}")
    try:
        yield tmp
        if not tmp.is_file():
            raise BoneMetSegOutputError(f"Writing {path} failed: the writer produced no file.")
        if path.exists() and not overwrite:  # appeared while we were writing
            raise BoneMetSegOutputError(f"Output file {path} exists; pass --overwrite to replace it.")
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise BoneMetSegOutputError(
                f"Cannot write {path} ({exc.strerror or exc}). Check the folder's permissions."
            ) from None
    except BaseException:
        _remove_quietly(tmp)
        raise


__all__ = ["atomic_write", "check_output_path"]

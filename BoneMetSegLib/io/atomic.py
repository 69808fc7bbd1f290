"""Atomic output: write to a temporary file (or folder) beside the target, rename on success.

The one file writer is :func:`atomic_group` (several files, all or none; :func:`atomic_write`
for one); the one folder writer is :func:`atomic_folder`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
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


# ``.~<pid>.<random>-<target name>``: the pid lets a later run remove what a killed run left behind
TEMP_PATTERN = re.compile(r"^\.~(\d+)\.[0-9a-f]{8}-.")
TEMP_PREFIX_MAX = len(".~") + 10 + len(".") + 8 + len("-")  # longest prefix a temporary name adds


def temp_path(path: Path) -> Path:
    """The hidden temporary file beside ``path`` that is renamed onto it when writing succeeded."""
    return path.with_name(f".~{os.getpid()}.{secrets.token_hex(4)}-{path.name}")


def clean_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove temporary files in ``folder`` left by runs whose process no longer exists (kill -9)."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = TEMP_PATTERN.match(entry.name)
        if match is None or int(match.group(1)) == os.getpid() or _process_alive(int(match.group(1))):
            continue
        with contextlib.suppress(OSError):
            entry.unlink()
            removed.append(entry)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's process (or unknown): leave its files alone
    return True


def write_error(path: Path, exc: OSError) -> BoneMetSegOutputError:
    """One sentence for a failed write: full disk, file size limit, read-only file system..."""
    hints = {errno.ENOSPC: "the disk is full; free some space", errno.EFBIG: "the file size limit was reached",
             errno.EROFS: "the file system is read-only; choose another folder",
             errno.EDQUOT: "the disk quota is exceeded; free some space"}
    hint = hints.get(exc.errno, "check the folder's permissions and free space")
    return BoneMetSegOutputError(f"Cannot write {path} ({exc.strerror or exc}): {hint}; nothing was written.")


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    The temporary name ends with the target's full file name (``.~<random>-report.seg.nrrd``), so
    writers that pick the format from the extension (``.seg.nrrd``, ``.nii.gz``...) still work.
    On any exception the temporary file is removed and the target is left untouched.
    Raises :class:`BoneMetSegOutputError` if ``path`` exists and ``overwrite`` is False, if it is a
    folder, or if its folder cannot be created or written.
    """
    with atomic_group({"file": path}, overwrite) as temps:
        yield temps["file"]


@contextlib.contextmanager
def atomic_group(paths: dict, overwrite: bool, commit_guard=None) -> Iterator[dict]:
    """Yield ``{key: temporary path}`` for every target in ``paths``; rename them all onto their
    targets only if the block succeeds and every temporary file was written, else remove them all.

    ``commit_guard`` (optional): a context manager held while the files are renamed (the CLI
    defers signals there). An ``OSError`` inside the block (full disk...) becomes a
    :class:`BoneMetSegOutputError`. Either every target is written or none is changed.
    """
    targets = {key: check_output_path(p, overwrite) for key, p in paths.items()}
    temps = {key: temp_path(p) for key, p in targets.items()}
    try:
        try:
            yield temps
        except OSError as exc:
            raise write_error(targets[_failed_key(temps)], exc) from None
        for key, target in targets.items():
            if not temps[key].is_file():
                raise BoneMetSegOutputError(f"Writing {target} failed: the writer produced no file.")
            if target.exists() and not overwrite:  # appeared while we were writing
                raise BoneMetSegOutputError(f"Output file {target} exists; pass --overwrite to replace it.")
        done = []
        try:
            with commit_guard or contextlib.nullcontext():
                for key, target in targets.items():
                    os.replace(temps[key], target)
                    done.append(target)
        except BaseException as exc:  # not all renamed, or stopped meanwhile: none stays
            for target in done:
                _remove_quietly(target)
            if isinstance(exc, OSError):
                raise write_error(targets[key], exc) from None
            raise
    except BaseException:
        for tmp in temps.values():
            _remove_quietly(tmp)
        raise


def _failed_key(temps: dict):
    """The last temporary file that was started (the one being written when the error came)."""
    started = [key for key, tmp in temps.items() if tmp.exists()]
    return started[-1] if started else next(iter(temps))


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a new hidden folder beside ``path``; rename it onto ``path`` only if the block succeeds.

    On any exception the temporary folder is removed and ``path`` is left untouched. When ``path``
    exists at the end (made before or meanwhile) it raises :class:`FileExistsError`, unless
    ``overwrite``: then the old folder is swapped out and removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    tmp.mkdir()
    try:
        yield tmp
        _rename_folder(tmp, path, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _rename_folder(tmp: Path, path: Path, overwrite: bool) -> None:
    if overwrite and path.exists():
        old = temp_path(path)
        os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.replace(old, path)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    if path.exists():
        raise FileExistsError(errno.EEXIST, "exists", str(path))
    try:
        os.rename(tmp, path)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):  # made between the check and the rename
            raise FileExistsError(errno.EEXIST, "exists", str(path)) from None
        raise


__all__ = ["atomic_write", "atomic_group", "atomic_folder", "check_output_path", "clean_stale_temps", "temp_path",
           "write_error"]

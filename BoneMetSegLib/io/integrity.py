"""Verify an image file's bytes before ITK reads it: ITK does not check them.

ITK reads a NIfTI file whose gzip stream is truncated (missing voxels become 0) or whose
uncompressed data is short, turns NaN/inf NIfTI voxels into 0, and reads gzip-encoded NRRD and
zlib-compressed MetaImage data with corrupted bytes without complaint. Here the whole stream is
decoded once: the gzip CRC-32 / zlib Adler-32 and the length are checked, and floating-point
NIfTI voxels must be finite (NRRD/MHA keep NaN, which ``validate.check_values`` refuses).
Uncompressed NRRD/MHA data carries no checksum; ITK itself refuses it when it is short.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import BoneMetSegInputError

CHUNK = 1 << 22
HEADER_LIMIT = 1 << 16  # a text header (NRRD, MetaImage) longer than this is not an image header
# NIfTI datatype code -> numpy dtype of the floating-point types whose voxels must be finite
_NIFTI_FLOATS = {16: "f4", 64: "f8"}
_NRRD_TYPE_BYTES = {
    **dict.fromkeys(("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"), 1),
    **dict.fromkeys(("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort",
                     "unsigned short", "unsigned short int", "uint16", "uint16_t"), 2),
    **dict.fromkeys(("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t",
                     "float"), 4),
    **dict.fromkeys(("longlong", "long long", "long long int", "signed long long", "signed long long int",
                     "int64", "int64_t", "ulonglong", "unsigned long long", "unsigned long long int", "uint64",
                     "uint64_t", "double"), 8),
}
_MET_TYPE_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
                   "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
                   "MET_DOUBLE": 8}


def _corrupt(path: Path, what: str) -> BoneMetSegInputError:
    return BoneMetSegInputError(f"{path}: {what}; the file is corrupt, copy or export it again.")


# ----------------------------------------------------------------------------- NIfTI
def nifti_header(raw: bytes) -> dict | None:
    """Dimensions, datatype, bitpix, data offset and byte order of a NIfTI-1/2 header; None if not NIfTI."""
    for endian in "<>":
        if len(raw) >= 348 and struct.unpack(endian + "i", raw[:4])[0] == 348:
            dims = struct.unpack(endian + "8h", raw[40:56])
            datatype, bitpix = struct.unpack(endian + "2h", raw[70:74])
            offset = int(struct.unpack(endian + "f", raw[108:112])[0])
            break
        if len(raw) >= 540 and struct.unpack(endian + "i", raw[:4])[0] == 540:
            datatype, bitpix = struct.unpack(endian + "2h", raw[12:16])
            dims = struct.unpack(endian + "8q", raw[16:80])
            offset = struct.unpack(endian + "q", raw[168:176])[0]
            break
    else:
        return None
    n_dims = dims[0]
    if not 1 <= n_dims <= 7 or bitpix <= 0:
        return None
    shape = [max(int(d), 1) for d in dims[1 : n_dims + 1]]
    return {"shape": shape, "datatype": int(datatype), "bitpix": int(bitpix),
            "offset": max(int(offset), 348), "endian": endian}


def _open_stream(path: Path, compressed: bool):
    return gzip.open(path, "rb") if compressed else open(path, "rb")


def verify_nifti(path: Path) -> None:
    """Decode the whole file: gzip CRC and length, the voxel bytes the header announces, finite floats."""
    compressed = path.name.lower().endswith(".gz")
    try:
        with _open_stream(path, compressed) as f:
            head = f.read(540)
            info = nifti_header(head)
            if info is None:
                return  # not NIfTI-1/2: ITK judges it
            n_voxels = int(np.prod(info["shape"], dtype=np.int64))
            expected = info["offset"] + n_voxels * info["bitpix"] // 8
            float_dtype = _NIFTI_FLOATS.get(info["datatype"])
            checker = _FiniteChecker(np.dtype(info["endian"] + float_dtype)) if float_dtype else None
            total = len(head)
            if checker is not None:
                checker.feed(head[info["offset"]:] if total > info["offset"] else b"")
            while chunk := f.read(CHUNK):
                if checker is not None:
                    skip = max(0, info["offset"] - total)
                    checker.feed(chunk[skip:])
                total += len(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise _corrupt(path, f"its compressed data cannot be decoded ({exc})") from None
    if total < expected:
        raise _corrupt(path, f"it is truncated (holds {total} of the {expected} bytes its header announces)")
    if checker is not None and checker.bad:
        raise BoneMetSegInputError(
            f"{path}: {checker.bad} voxels are NaN or infinite; re-export the CT without invalid values."
        )


class _FiniteChecker:
    """Counts non-finite values in a byte stream of one float dtype (chunks may split a value)."""

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype
        self.rest = b""
        self.bad = 0

    def feed(self, data: bytes) -> None:
        data = self.rest + data
        usable = len(data) - len(data) % self.dtype.itemsize
        values = np.frombuffer(data[:usable], dtype=self.dtype)
        self.bad += int(values.size - np.count_nonzero(np.isfinite(values)))
        self.rest = data[usable:]


# ----------------------------------------------------------------------------- NRRD, MetaImage
def _text_header(path: Path, end_marker) -> tuple[list[str], int] | None:
    """The header lines of a text-header file and the byte offset of its data; None if not found."""
    with open(path, "rb") as f:
        head = f.read(HEADER_LIMIT)
    lines, pos = [], 0
    while pos < len(head):
        nl = head.find(b"\n", pos)
        if nl < 0:
            return None
        line = head[pos:nl].decode("latin-1").rstrip("\r")
        pos = nl + 1
        done = end_marker(line)
        if done is None:
            return lines, pos
        lines.append(line)
        if done:
            return lines, pos
    return (lines, pos) if len(head) < HEADER_LIMIT else None  # a header-only file (.nhdr)


def _fields(lines: list[str], sep: str) -> dict:
    out = {}
    for line in lines:
        if sep in line and not line.startswith("#"):
            key, value = line.split(sep, 1)
            out[key.strip().lower()] = value.strip()
    return out


def _decoded_length(path: Path, offset: int, decompressor) -> int:
    total = 0
    with open(path, "rb") as f:
        f.seek(offset)
        while chunk := f.read(CHUNK):
            total += len(decompressor.decompress(chunk))
            if decompressor.eof:
                break
    total += len(decompressor.flush())
    if not decompressor.eof:
        raise EOFError("the compressed stream ends early")
    return total


def _product(text: str) -> int:
    return int(np.prod([int(v) for v in text.split()], dtype=np.int64))


def _data_location(path: Path, offset: int, detached: str | None) -> tuple[Path, int] | None:
    """Where the voxel data lies: after the header, or in one detached file beside it (None: a list
    or pattern of files, which ITK judges)."""
    if detached is None or detached.upper() == "LOCAL":
        return path, offset
    if detached.upper().startswith("LIST") or " " in detached or "%" in detached:
        return None
    return path.parent / detached, 0


def _verify_stream(path: Path, where: tuple[Path, int] | None, expected: int, decompressor) -> None:
    if where is None:
        return
    data_file, offset = where
    try:
        total = _decoded_length(data_file, offset, decompressor)
    except (OSError, EOFError, zlib.error) as exc:
        raise _corrupt(path, f"its compressed data cannot be decoded ({exc})") from None
    if total < expected:
        raise _corrupt(path, f"it is truncated (holds {total} of the {expected} voxel bytes its header announces)")


def verify_nrrd(path: Path) -> None:
    """gzip-encoded NRRD data (after the header or in its detached data file): CRC and length."""
    parsed = _text_header(path, lambda line: None if line == "" else False)
    if parsed is None:
        return
    fields = _fields(parsed[0][1:], ":")
    if fields.get("encoding") not in ("gzip", "gz"):
        return
    try:
        expected = _product(fields["sizes"]) * _NRRD_TYPE_BYTES[fields["type"].lower()]
    except (KeyError, ValueError):
        return  # ITK judges headers it cannot parse
    detached = fields.get("data file", fields.get("datafile"))
    _verify_stream(path, _data_location(path, parsed[1], detached), expected,
                   zlib.decompressobj(16 + zlib.MAX_WBITS))


def verify_metaimage(path: Path) -> None:
    """zlib-compressed MetaImage data (.mha, or the .zraw of a .mhd): Adler-32 and length."""
    parsed = _text_header(path, lambda line: line.replace(" ", "").lower().startswith("elementdatafile="))
    if parsed is None:
        return
    fields = _fields(parsed[0], "=")
    if fields.get("compresseddata", "").lower() != "true":
        return
    try:
        channels = int(fields.get("elementnumberofchannels", "1"))
        expected = _product(fields["dimsize"]) * channels * _MET_TYPE_BYTES[fields["elementtype"].upper()]
    except (KeyError, ValueError):
        return
    where = _data_location(path, parsed[1], fields.get("elementdatafile", "LOCAL"))
    _verify_stream(path, where, expected, zlib.decompressobj())


VERIFIERS = {"nifti": verify_nifti, "nrrd": verify_nrrd, "metaimage": verify_metaimage}


def verify_file(path: Path, fmt: str) -> None:
    """Run the verifier of ``fmt`` (see :data:`VERIFIERS`) on ``path``."""
    verifier = VERIFIERS.get(fmt)
    if verifier is not None:
        verifier(Path(path))


__all__ = ["verify_file", "verify_nifti", "verify_nrrd", "verify_metaimage", "nifti_header"]

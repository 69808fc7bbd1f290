"""Hostile input (issue 12): every refusal is exit code 2, exactly one line ``bonemetseg: error: ...``
naming the problem, no traceback, no output file, and every file that was there is unchanged.

One table of bad inputs, run through the real CLI's ``main()`` in this process (stderr captured at
the file-descriptor level, so ITK's own console lines would show). Almost every refusal happens
before the model loads, so the table runs in seconds; the wrong-shape weights case loads weights.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch

from BoneMetSegLib.cli import main
from BoneMetSegLib.inference.weights import default_weights_path, sha256_of_file
from lib.test_read_ct import phantom, write_dicom_slices


# ----------------------------------------------------------------------------- builders
def ct(path: Path, **kw) -> Path:
    """A tiny valid CT (air, soft tissue, a bone rod) written with SimpleITK."""
    image = phantom(**kw)
    sitk.WriteImage(image, str(path), useCompression=str(path).endswith((".gz", ".mha", ".nrrd", ".nhdr", ".mhd")))
    return path


def float_ct(path: Path, bad: float) -> Path:
    a = sitk.GetArrayFromImage(phantom()).astype(np.float32)
    a[3, 4, 5] = bad
    image = sitk.GetImageFromArray(a)
    image.SetSpacing((1.0, 1.0, 1.0))
    sitk.WriteImage(image, str(path), useCompression=str(path).endswith((".gz", ".nrrd", ".mha")))
    return path


def damage_middle(path: Path) -> Path:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 32] = bytes(b ^ 0x5A for b in data[mid : mid + 32])
    path.write_bytes(bytes(data))
    return path


def truncate_keep_trailer(path: Path) -> Path:
    """Cut a .gz file in the middle but keep its 8-byte trailer (CRC + size): the old fast check passed."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] + data[-8:])
    return path


def huge_header_nifti(path: Path, n: int = 1500) -> Path:
    """A small .nii.gz whose header claims n^3 int16 voxels (the data is only a few bytes)."""
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, n, n, n, 1, 1, 1, 1)
    struct.pack_into("<2h", header, 70, 4, 16)  # int16
    struct.pack_into("<8f", header, 76, 1, 1, 1, 1, 0, 0, 0, 0)
    struct.pack_into("<f", header, 108, 352.0)
    struct.pack_into("<f", header, 112, 1.0)
    header[344:348] = b"n+1\0"
    with gzip.open(path, "wb") as f:
        f.write(bytes(header) + b"\0" * 4 + b"\0" * 100_000)
    return path


def skewed_ct(path: Path) -> Path:
    image = phantom()
    image.SetDirection((1.0, 0.3, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(image, str(path))
    return path


def model_copy(tmp: Path, arch=None, pre=None, top=None, shape_bug=False) -> Path:
    """The embedded weights and card copied to ``tmp/m``, card fields changed (sha256 kept right)."""
    folder = tmp / "m"
    folder.mkdir(exist_ok=True)
    src = default_weights_path()
    card = json.loads(src.with_suffix(".json").read_text())
    pt = folder / "w.pt"
    if shape_bug:
        state = torch.load(src, map_location="cpu", weights_only=True)
        key = next(k for k, v in state.items() if v.ndim >= 2)
        state[key] = torch.zeros(state[key].shape[0] + 1, *state[key].shape[1:], dtype=state[key].dtype)
        torch.save(state, pt)
    else:
        shutil.copyfile(src, pt)
    card.update(weights_file="w.pt", sha256=sha256_of_file(pt), **(top or {}))
    card["architecture"].update(arch or {})
    card["preprocessing"].update(pre or {})
    pt.with_suffix(".json").write_text(json.dumps(card))
    return pt


def dicom_missing_slice(folder: Path) -> Path:
    write_dicom_slices(folder, "1.2.826.0.1.3680043.8.498.77", [float(z) for z in range(24)])
    files = sorted(folder.iterdir(), key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))
    files[10].unlink()
    return folder


def hard_link(src: Path, dst: Path) -> Path:
    os.link(src, dst)
    return dst


def symlink(target: Path, link: Path) -> Path:
    link.symlink_to(target)
    return link


def cases_dir(tmp: Path, *names: str) -> Path:
    folder = tmp / "cases"
    folder.mkdir()
    for name in names:
        ct(folder / name)
    return folder


# ----------------------------------------------------------------------------- the table
# (id, build(tmp) -> argv, words the error line must contain); every argv is run with --progress none
# where it is a predict command. "T" is the CT file tmp/ct.nii.gz, made before each case.
def P(*args):
    return ["predict", *map(str, args), "--progress", "none"]


CASES = [
    # 1. data loss: no output on an input or on another output
    ("batch-labelmap-onto-input", lambda t: P(cases_dir(t, "case.nii.gz"), "-o", t / "cases", "--labelmap", "--overwrite"),
     ["input file"]),
    ("labelmap-is-the-input", lambda t: P(t / "ct.nii.gz", "-o", t / "o.seg.nrrd", "--labelmap", t / "ct.nii.gz",
                                          "--overwrite"), ["input file"]),
    ("labelmap-hard-link-to-input", lambda t: P(t / "ct.nii.gz", "-o", t / "o.seg.nrrd", "--labelmap",
                                                hard_link(t / "ct.nii.gz", t / "hl.nii.gz"), "--overwrite"),
     ["input file"]),
    ("output-symlink-to-input", lambda t: P(t / "ct.nii.gz", "-o", symlink(t / "ct.nii.gz", t / "ln.seg.nrrd"),
                                            "--overwrite"), ["input file"]),
    ("labelmap-equals-seg-output", lambda t: P(t / "ct.nii.gz", "-o", t / "x.seg.nrrd", "--labelmap", t / "x.seg.nrrd",
                                               "--overwrite"), [".seg.nrrd"]),
    ("labelmap-symlink-to-seg-output", lambda t: P(t / "ct.nii.gz", "-o", t / "x.seg.nrrd", "--labelmap",
                                                   symlink(t / "x.seg.nrrd", t / "l.nii.gz"), "--overwrite"),
     ["also the -o output"]),
    ("batch-two-cases-one-output", lambda t: P(cases_dir(t, "a.nii.gz", "a.nrrd"), "-o", t / "out"),
     ["also the"]),
    ("rescore-report-onto-labels", lambda t: ["rescore", t / "ct.nii.gz", "--labels", ct(t / "lab.nii.gz"),
                                              "--report", symlink(t / "lab.nii.gz", t / "r.json"), "--overwrite"],
     ["input file"]),
    # 2. garbage: verify what is read
    ("nii-gz-bytes-overwritten", lambda t: P(damage_middle(ct(t / "d.nii.gz")), "-o", t / "o.seg.nrrd"),
     ["corrupt"]),
    ("nii-gz-truncated-trailer-kept", lambda t: P(truncate_keep_trailer(ct(t / "d.nii.gz")), "-o", t / "o.seg.nrrd"),
     ["corrupt"]),
    ("nii-truncated", lambda t: P(_cut(ct(t / "d.nii")), "-o", t / "o.seg.nrrd"), ["truncated"]),
    ("nifti-nan", lambda t: P(float_ct(t / "f.nii.gz", np.nan), "-o", t / "o.seg.nrrd"), ["NaN"]),
    ("nifti-inf", lambda t: P(float_ct(t / "f.nii", np.inf), "-o", t / "o.seg.nrrd"), ["infinite"]),
    ("nrrd-nan", lambda t: P(float_ct(t / "f.nrrd", np.nan), "-o", t / "o.seg.nrrd"), ["NaN"]),
    ("mha-inf", lambda t: P(float_ct(t / "f.mha", -np.inf), "-o", t / "o.seg.nrrd"), ["infinite"]),
    ("nrrd-gzip-bytes-overwritten", lambda t: P(damage_middle(ct(t / "d.nrrd")), "-o", t / "o.seg.nrrd"),
     ["corrupt"]),
    ("mha-zlib-bytes-overwritten", lambda t: P(damage_middle(ct(t / "d.mha")), "-o", t / "o.seg.nrrd"),
     ["corrupt"]),
    ("nhdr-detached-gzip-damaged", lambda t: P(_damage_beside(ct(t / "d.nhdr"), "d.raw.gz"), "-o", t / "o.seg.nrrd"),
     ["corrupt"]),
    ("mhd-detached-zraw-truncated", lambda t: P(_cut_beside(ct(t / "d.mhd"), "d.zraw"), "-o", t / "o.seg.nrrd"),
     ["corrupt"]),
    ("rescore-truncated-labelmap", lambda t: ["rescore", t / "ct.nii.gz", "--labels",
                                              truncate_keep_trailer(ct(t / "lab.nii.gz")), "--report", t / "r.json"],
     ["corrupt"]),
    ("random-bytes-nrrd", lambda t: P(_bytes(t / "r.nrrd", os.urandom(3000)), "-o", t / "o.seg.nrrd"), ["corrupt"]),
    ("empty-file", lambda t: P(_bytes(t / "e.nii.gz", b""), "-o", t / "o.seg.nrrd"), ["empty"]),
    # 3. memory: claimed sizes checked before allocating
    ("header-claims-1500-cubed", lambda t: P(huge_header_nifti(t / "h.nii.gz"), "-o", t / "o.seg.nrrd"),
     ["memory", "BONEMETSEG_MEMORY_LIMIT_GB"]),
    ("card-spacing-0.1", lambda t: P(ct(t / "big.nii.gz", shape=(24, 40, 40), spacing=(4.0, 4.0, 4.0)), "-o",
                                     t / "o.seg.nrrd", "--model", model_copy(t, pre={"spacing_mm": 0.1})),
     ["memory", "0.1 mm grid"]),
    ("budget-from-env", lambda t: _env("BONEMETSEG_MEMORY_LIMIT_GB", "0.0001",
                                       P(t / "ct.nii.gz", "-o", t / "o.seg.nrrd")), ["budget"]),
    ("budget-env-not-a-number", lambda t: _env("BONEMETSEG_MEMORY_LIMIT_GB", "lots",
                                               P(t / "ct.nii.gz", "-o", t / "o.seg.nrrd")), ["BONEMETSEG_MEMORY_LIMIT_GB"]),
    # 4. geometry
    ("skewed-direction", lambda t: P(skewed_ct(t / "s.nrrd"), "-o", t / "o.seg.nrrd"), ["not orthonormal"]),
    # 5. model card, arguments, input and output paths
    ("weights-wrong-tensor-shape", lambda t: P(t / "ct.nii.gz", "-o", t / "o.seg.nrrd", "--model",
                                               model_copy(t, shape_bug=True)), ["do not fit", "--model"]),
    ("card-unknown-backbone", lambda t: P(t / "ct.nii.gz", "-o", t / "o.seg.nrrd", "--model",
                                          model_copy(t, arch={"backbone": "vgg"})), ["backbone"]),
    ("card-fpn-channels-text", lambda t: P(t / "ct.nii.gz", "-o", t / "o.seg.nrrd", "--model",
                                           model_copy(t, arch={"fpn_channels": "sixteen"})), ["fpn_channels"]),
    ("card-no-anchor-sizes", lambda t: P(t / "ct.nii.gz", "-o", t / "o.seg.nrrd", "--model",
                                         model_copy(t, arch={"anchor_sizes": []})), ["anchor_sizes"]),
    ("card-spacing-0", lambda t: P(t / "ct.nii.gz", "-o", t / "o.seg.nrrd", "--model",
                                   model_copy(t, pre={"spacing_mm": 0})), ["spacing_mm"]),
    ("card-threshold-text", lambda t: P(t / "ct.nii.gz", "-o", t / "o.seg.nrrd", "--model",
                                        model_copy(t, top={"detection_threshold": "high"})), ["detection_threshold"]),
    ("model-missing", lambda t: P(t / "ct.nii.gz", "-o", t / "o.seg.nrrd", "--model", t / "none.pt"), ["--model"]),
    ("tile-negative", lambda t: P(t / "ct.nii.gz", "-o", t / "o.seg.nrrd", "--tile", "-5"), ["--tile"]),
    ("threshold-5", lambda t: P(t / "ct.nii.gz", "-o", t / "o.seg.nrrd", "--threshold", "5"), ["--threshold"]),
    ("threshold-nan", lambda t: P(t / "ct.nii.gz", "-o", t / "o.seg.nrrd", "--threshold", "nan"), ["--threshold"]),
    ("origin-threshold-2", lambda t: P(t / "ct.nii.gz", "-o", t / "o.seg.nrrd", "--origin-threshold", "2"),
     ["--origin-threshold"]),
    ("unknown-option", lambda t: P(t / "ct.nii.gz", "-o", t / "o.seg.nrrd", "--colour", "red"), ["--colour"]),
    ("input-dev-null", lambda t: P("/dev/null", "-o", t / "o.seg.nrrd"), ["not a regular file"]),
    ("input-fifo", lambda t: P(_fifo(t / "pipe.nii.gz"), "-o", t / "o.seg.nrrd"), ["not a regular file"]),
    ("output-read-only-fs", lambda t: P(t / "ct.nii.gz", "-o", t / "ro" / "o.seg.nrrd"), ["Read-only file system"]),
    ("output-name-250-chars", lambda t: P(t / "ct.nii.gz", "-o", t / ("n" * 241 + ".seg.nrrd")), ["shorter name"]),
    ("output-parent-is-a-file", lambda t: P(t / "ct.nii.gz", "-o", t / "ct.nii.gz" / "o.seg.nrrd"), ["in the way"]),
    ("output-not-seg-nrrd", lambda t: P(t / "ct.nii.gz", "-o", t / "o.nrrd"), [".seg.nrrd"]),
    ("labelmap-two-file-mhd", lambda t: P(t / "ct.nii.gz", "-o", t / "o.seg.nrrd", "--labelmap", t / "x.mhd"),
     ["two files"]),
    ("labelmap-unknown-suffix", lambda t: P(t / "ct.nii.gz", "-o", t / "o.seg.nrrd", "--labelmap", t / "x.tiff"),
     ["Unknown labelmap"]),
    ("report-not-json", lambda t: P(t / "ct.nii.gz", "-o", t / "o.seg.nrrd", "--report", t / "r.txt"), [".json"]),
    ("overlay-not-png", lambda t: P(t / "ct.nii.gz", "-o", t / "o.seg.nrrd", "--overlay", t / "o.jpg"), [".png"]),
    ("output-exists", lambda t: P(t / "ct.nii.gz", "-o", _bytes(t / "mine.seg.nrrd", b"edited"),
                                  "--report", t / "r.json"), ["--overwrite"]),
    # 8. messages: one line, without ITK's warnings
    ("dicom-missing-slice", lambda t: P(dicom_missing_slice(t / "dcm"), "-o", t / "o.seg.nrrd"), ["missing slice"]),
]


def _cut(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def _damage_beside(header: Path, data_name: str) -> Path:
    damage_middle(header.parent / data_name)
    return header


def _cut_beside(header: Path, data_name: str) -> Path:
    _cut(header.parent / data_name)
    return header


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


_ENV: dict = {}


def _env(name: str, value: str, argv: list) -> list:
    _ENV[name] = value
    return argv


def snapshot(folder: Path) -> dict:
    """Every regular file below ``folder`` (links as their target text) with its content hash."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            out[str(p)] = "link->" + os.readlink(p)
        elif p.is_file():
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def read_only_dir(tmp_path, monkeypatch):
    """``tmp/ro``: a folder where creating a file fails with EROFS, as on a read-only mount."""
    folder = tmp_path / "ro"
    folder.mkdir()
    real_open = os.open

    def fake_open(path, flags, *args, **kwargs):
        if Path(os.fspath(path)).parent == folder and flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    return folder


def test_the_table_covers_every_class():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name,build,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_on_one_line(name, build, words, tmp_path, capfd, monkeypatch, read_only_dir):
    ct(tmp_path / "ct.nii.gz")
    _ENV.clear()
    argv = [str(a) for a in build(tmp_path)]
    for key, value in _ENV.items():
        monkeypatch.setenv(key, value)
    before = snapshot(tmp_path)
    capfd.readouterr()
    code = main(argv)
    out, err = capfd.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("bonemetseg: error: "), err
    assert "Traceback" not in err and "WARNING" not in err
    for word in words:
        assert word.lower() in lines[0].lower(), lines[0]
    assert snapshot(tmp_path) == before, "a file was written, changed or removed"

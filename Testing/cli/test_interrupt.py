"""Interrupted runs (issue 12): a signal at any stage, a failed write half way, kill -9.

A real ``bonemetseg predict`` subprocess gets SIGINT/SIGTERM during start-up, during inference and
while its outputs are written: exit 3, one line, no output under a final name, no temporary file
left. The write stage is slowed down by a ``sitecustomize`` that this test puts on PYTHONPATH (it
sleeps after the .seg.nrrd temporary file is written), so the signal lands there every time.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from BoneMetSegLib.cli import main
from slow_write_hook import SEG_WRITTEN, hook_environment

CLI = [sys.executable, "-m", "BoneMetSegLib.cli"]
def start(args, tmp_path: Path, slow_write: bool = False) -> subprocess.Popen:
    env = dict(os.environ)
    if slow_write:
        env.update(hook_environment(tmp_path / "hook"))
    return subprocess.Popen(CLI + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def wait_for_message(proc: subprocess.Popen, text: str, timeout: float = 240) -> None:
    """Read progress lines until one whose message contains ``text``."""
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        if line.startswith("{") and text in json.loads(line).get("message", ""):
            return
        assert time.monotonic() < deadline, f"no progress message {text!r} within {timeout} s"
    pytest.fail(f"the run ended before the progress message {text!r}: {proc.wait()} {proc.stderr.read()}")


def predict_args(case, out: Path) -> list:
    return ["predict", case, "-o", out / "case.seg.nrrd", "--report", "--labelmap", "--overlay",
            "--device", "cpu", "--progress", "lines"]


def assert_stopped_cleanly(proc: subprocess.Popen, out: Path) -> None:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bonemetseg: cancelled: stopped by SIG"), err
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert left == [], f"files left in the output folder: {left}"


@pytest.mark.parametrize("sig,stage", [(signal.SIGINT, "Detecting lesions"), (signal.SIGTERM, "Detecting lesions"),
                                       (signal.SIGTERM, SEG_WRITTEN)],
                         ids=["SIGINT-inference", "SIGTERM-inference", "SIGTERM-writing"])
def test_signal_during_inference_or_writing_exits_3_and_leaves_nothing(lesion_case, tmp_path, sig, stage):
    out = tmp_path / "out"
    proc = start(predict_args(lesion_case["path"], out), tmp_path, slow_write=stage == SEG_WRITTEN)
    try:
        wait_for_message(proc, stage)
        if stage == SEG_WRITTEN:
            assert [p.name for p in out.iterdir() if p.name.startswith(".~")], "no temporary file while writing"
        proc.send_signal(sig)
        assert_stopped_cleanly(proc, out)
    finally:
        proc.kill()


@pytest.mark.parametrize("command", ["predict", "rescore"])
def test_signal_during_start_up_exits_3(lesion_case, tmp_path, command):
    out = tmp_path / "out"
    args = predict_args(lesion_case["path"], out) if command == "predict" else [
        "rescore", lesion_case["path"], "--labels", lesion_case["path"], "--report", out / "r.json"]
    proc = start(args, tmp_path)
    try:
        time.sleep(0.8)  # the interpreter is importing torch
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert_stopped_cleanly(proc, out)
    finally:
        proc.kill()


def test_temporary_files_of_a_killed_run_are_removed_by_the_next_run(lesion_case, tmp_path):
    out = tmp_path / "out"
    proc = start(predict_args(lesion_case["path"], out), tmp_path, slow_write=True)
    try:
        wait_for_message(proc, SEG_WRITTEN)
        proc.kill()  # kill -9: no handler runs
        proc.wait(timeout=30)
    finally:
        proc.kill()
    stale = [p.name for p in out.iterdir()]
    assert stale and all(name.startswith(f".~{proc.pid}.") for name in stale)
    mine = out / ".~1.0123abcd-not-a-bonemetseg-temp.txt"  # a live process's name (pid 1): kept
    mine.write_text("x")
    flat = tmp_path / "flat.nii.gz"
    import numpy as np
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((20, 20, 20), np.int16)), str(flat))
    assert main(["predict", str(flat), "-o", str(out / "next.seg.nrrd"), "--progress", "none"]) == 2
    assert sorted(p.name for p in out.iterdir()) == [mine.name]


def test_disk_full_half_way_leaves_no_output_and_no_temporary_file(lesion_case, tmp_path, monkeypatch, capfd):
    """The labelmap write fails with ENOSPC after the .seg.nrrd was written: none of the four outputs appears."""
    from BoneMetSegLib.io import write_labelmap as labelmap_module

    def disk_full(result, path, shown_as=None):
        Path(path).write_bytes(b"\x1f\x8b half a labelmap")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(labelmap_module, "save_labelmap", disk_full)
    out = tmp_path / "out"
    out.mkdir()
    (out / "case.json").write_text("the user's report")  # replaced only if everything is written
    code = main(["predict", str(lesion_case["path"]), "-o", str(out / "case.seg.nrrd"), "--report", "--labelmap",
                 "--overlay", "--device", "cpu", "--progress", "none", "--overwrite"])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("bonemetseg: error: Cannot write") and "No space left" in err[0], err
    assert sorted(p.name for p in out.iterdir()) == ["case.json"]
    assert (out / "case.json").read_text() == "the user's report"

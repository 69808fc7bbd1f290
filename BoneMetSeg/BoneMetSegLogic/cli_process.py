"""The ``bonemetseg`` command line run as a child process (torch never loads into Slicer's process).

Protocol: ``python -m BoneMetSegLib.cli predict ... --progress lines`` prints one JSON object per
line on stdout, ``{"progress": 0.42, "message": "..."}``, and last ``{"progress": 1.0, "message":
"done", "n_lesions": N}``; errors are one line ``bonemetseg: error: ...`` on stderr. Exit codes: 0
done, 1 internal error, 2 bad input/model/output, 3 cancelled (``docs/outputs.md``). Two reader threads drain stdout and stderr (no Qt), so
``poll()`` never blocks and a full pipe never stalls the child.

The child runs in its own process group (POSIX: new session; Windows: new process group), so
``cancel()`` ends it and anything it started at once: ``killpg(SIGKILL)`` / ``taskkill /T /F``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from importlib.util import find_spec
from pathlib import Path

from .types import BoneMetSegRunError, RunStatus

MODULE_DIR = Path(__file__).resolve().parents[1]  # BoneMetSeg/ (the scripted module folder)


def library_root() -> Path:
    """The folder holding the ``BoneMetSegLib`` package (packaged beside the module, or the repo)."""
    for candidate in (MODULE_DIR, MODULE_DIR.parent):
        if (candidate / "BoneMetSegLib" / "__init__.py").is_file():
            return candidate
    spec = find_spec("BoneMetSegLib")  # installed with pip: finding it does not import it
    if spec is not None and spec.origin:
        return Path(spec.origin).resolve().parents[1]
    raise BoneMetSegRunError(
        "BoneMetSegLib was not found beside the module nor installed; reinstall the BoneMetSeg extension."
    )


def python_executable() -> str:
    """Slicer's own Python launcher inside Slicer (sys.executable is the application there)."""
    try:
        import slicer

        if hasattr(slicer, "app"):
            return shutil.which("PythonSlicer") or sys.executable
    except ImportError:
        pass
    return sys.executable


def cli_command(args: list) -> list:
    return [python_executable(), "-m", "BoneMetSegLib.cli", *[str(a) for a in args]]


def child_environment() -> dict:
    env = dict(os.environ)
    root = str(library_root())
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _popen_kwargs() -> dict:
    if os.name == "nt":
        flags = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        return {"creationflags": flags}
    return {"start_new_session": True}


def kill_process_tree(process: subprocess.Popen) -> None:
    """End ``process`` and its children now (no-op if it has exited)."""
    if process.poll() is not None:
        return
    if os.name == "nt":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True, check=False)
    else:
        try:
            os.killpg(os.getpgid(process.pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_cli(args: list, timeout: float | None = None, rename: dict | None = None) -> str:
    """Run the CLI to completion (short jobs: rescore, one point); stdout, or BoneMetSegRunError
    whose message has each ``rename`` key (e.g. a temporary file) replaced by its value."""
    process = subprocess.Popen(
        cli_command(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=child_environment(), **_popen_kwargs(),
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except BaseException:  # timeout, KeyboardInterrupt: never leave the child running
        kill_process_tree(process)
        process.communicate()
        raise
    if process.returncode != 0:
        message = _error_line(err) or f"bonemetseg exited with code {process.returncode}"
        for old, new in (rename or {}).items():
            message = message.replace(str(old), new)
        raise BoneMetSegRunError(message)
    return out


def _error_line(stderr_text: str) -> str:
    lines = [ln.strip() for ln in (stderr_text or "").splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("bonemetseg:"):
            return ln
    return lines[-1] if lines else ""


class SegmentationRun:
    """One ``bonemetseg predict`` child process and its output files (in a private temp folder)."""

    def __init__(self, volume_node_id: str | None, workdir: Path, input_path: Path | None = None,
                 input_label: str | None = None):
        self.volume_node_id = volume_node_id
        self.input_label = input_label  # how messages name the input instead of the temporary file
        self.workdir = Path(workdir)
        self.input_path = input_path
        self.seg_path = self.workdir / "result.seg.nrrd"
        self.report_path = self.workdir / "result.json"
        self.labelmap_path = self.workdir / "result.nii.gz"
        self.process: subprocess.Popen | None = None
        self._status = RunStatus("running", 0.0, "Starting")
        self._stderr: list = []
        self._lock = threading.Lock()
        self._threads: list = []

    # ------------------------------------------------------------------ construction
    @classmethod
    def start(cls, volume_node_id: str, input_path: Path, workdir: Path, cli_args: list,
              input_label: str | None = None) -> "SegmentationRun":
        run = cls(volume_node_id, workdir, input_path, input_label)
        argv = ["predict", str(input_path), "-o", str(run.seg_path), "--report", str(run.report_path),
                "--labelmap", str(run.labelmap_path), "--progress", "lines", *cli_args]
        run.process = subprocess.Popen(
            cli_command(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
            env=child_environment(), **_popen_kwargs(),
        )
        run._threads = [
            threading.Thread(target=run._read_stdout, daemon=True),
            threading.Thread(target=run._read_stderr, daemon=True),
        ]
        for t in run._threads:
            t.start()
        return run

    @classmethod
    def from_files(cls, seg_path, report_path, volume_node_id: str | None = None) -> "SegmentationRun":
        """A finished run made of existing CLI outputs (tests, or results computed elsewhere)."""
        run = cls(volume_node_id, Path(seg_path).parent)
        run.seg_path, run.report_path = Path(seg_path), Path(report_path)
        run._status = RunStatus("done", 1.0, "Loaded from files")
        return run

    @staticmethod
    def new_workdir() -> Path:
        return Path(tempfile.mkdtemp(prefix="BoneMetSeg-"))

    # ------------------------------------------------------------------ child output
    def _read_stdout(self) -> None:
        for line in self.process.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg, dict) and "progress" in msg:
                with self._lock:
                    if self._status.state == "running":
                        self._status = RunStatus("running", float(msg["progress"]), str(msg.get("message", "")))

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            with self._lock:
                self._stderr.append(line.rstrip("\n"))

    # ------------------------------------------------------------------ API
    def poll(self) -> RunStatus:
        """The current state; never blocks."""
        if self.process is not None and self._status.state == "running":
            code = self.process.poll()
            if code is not None:
                self._finish(code)
        with self._lock:
            return RunStatus(self._status.state, self._status.fraction, self._status.message)

    def _finish(self, code: int) -> None:
        for t in self._threads:
            t.join(timeout=5)
        with self._lock:
            if self._status.state != "running":
                return
            if code == 0 and self.report_path.is_file():
                self._status = RunStatus("done", 1.0, self._status.message or "Done")
            elif code == 3:
                self._status = RunStatus("cancelled", self._status.fraction, "Cancelled")
            else:
                message = _error_line("\n".join(self._stderr)) or f"bonemetseg exited with code {code}"
                if self.input_label and self.input_path:
                    message = message.replace(str(self.input_path), self.input_label)
                self._status = RunStatus("failed", self._status.fraction, message)

    def cancel(self) -> None:
        """Kill the child process tree at once; the state becomes "cancelled"."""
        with self._lock:
            if self._status.state == "running":
                self._status = RunStatus("cancelled", self._status.fraction, "Cancelled")
        if self.process is not None:
            kill_process_tree(self.process)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def wait(self, timeout: float | None = None) -> RunStatus:
        """Block until the run ends (or ``timeout`` seconds; then the state is still "running")."""
        if self.process is not None:
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        return self.poll()

    @property
    def stderr(self) -> str:
        with self._lock:
            return "\n".join(self._stderr)

    def cleanup(self) -> None:
        """Delete the temporary folder (ends the child first if it still runs)."""
        if self.process is not None and self.process.poll() is None:
            self.cancel()
        if self.workdir.name.startswith("BoneMetSeg-"):
            shutil.rmtree(self.workdir, ignore_errors=True)

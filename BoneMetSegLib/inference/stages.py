"""The bookkeeping of one prediction: progress per stage, seconds per stage, warnings, settings applied."""

from __future__ import annotations

import time
from typing import Callable, Optional

from .progress import CancelLike, ProgressFn, ProgressReporter


class PredictionRun:
    """Runs the named stages of one prediction, timing each and reporting its progress."""

    def __init__(self, progress: Optional[ProgressFn] = None, cancel: CancelLike = None,
                 warn: Optional[Callable[[str], None]] = None) -> None:
        self.reporter = ProgressReporter(progress, cancel)
        self.cancel = cancel
        self.timing: dict = {}
        self.warnings: list = []
        self.settings: dict = {}  # what the run applied (the report's "settings")
        self._warn = warn
        self._start = time.perf_counter()

    def warn(self, message: str) -> None:
        """Keep ``message`` for the result and pass it to the caller's ``warn``."""
        self.warnings.append(message)
        if self._warn is not None:
            self._warn(message)

    def stage(self, name: str, message: str, fn: Callable, *args, **kwargs):
        """``fn(*args, **kwargs)`` as stage ``name``: progress reported at its start, seconds in ``timing``."""
        t0 = time.perf_counter()
        self.reporter.report(name, 0.0, message)
        out = fn(*args, **kwargs)
        self.timing[name] = time.perf_counter() - t0
        return out

    def progress(self, name: str) -> ProgressFn:
        """A progress callback for work inside stage ``name``."""
        return self.reporter.stage_callback(name)

    def done(self, message: str) -> None:
        """Total time (``write`` 0: nothing written yet) and 100 %."""
        self.timing["write"] = 0.0
        self.timing["total"] = time.perf_counter() - self._start
        self.reporter.done(message)


__all__ = ["PredictionRun"]

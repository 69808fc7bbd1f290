"""Progress reporting and cancellation for long-running inference.

``progress`` callbacks have the signature ``progress(fraction: float, message: str)`` with
``fraction`` the overall completion in [0, 1]. ``cancel`` is either a callable returning
``True`` when the caller wants to stop, or an object with ``is_set()`` (``threading.Event``).
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable, Optional, Union

from ..errors import BoneMetSegCancelled

ProgressFn = Callable[[float, str], None]
CancelLike = Union[None, Callable[[], bool], threading.Event]

# Default relative durations of the stages of one prediction (normalised by ProgressReporter).
DEFAULT_STAGES = (
    ("read", 0.05),
    ("preprocess", 0.15),
    ("inference", 0.65),
    ("postprocess", 0.10),
    ("write", 0.05),
)


def is_cancelled(cancel: CancelLike) -> bool:
    """True when ``cancel`` (None, a callable or an Event-like object) asks to stop."""
    if cancel is None:
        return False
    is_set = getattr(cancel, "is_set", None)
    if callable(is_set):
        return bool(is_set())
    if callable(cancel):
        return bool(cancel())
    raise TypeError(f"cancel must be None, a callable or a threading.Event, not {type(cancel)!r}")


def check_cancel(cancel: CancelLike) -> None:
    """Raise :class:`BoneMetSegCancelled` when ``cancel`` asks to stop."""
    if is_cancelled(cancel):
        raise BoneMetSegCancelled("Inference was cancelled by the user; no output was written.")


class ProgressReporter:
    """Maps per-stage fractions to one overall, never-decreasing fraction in [0, 1].

    ``stages`` is a sequence of ``(name, weight)``; weights are normalised to sum to 1.
    """

    def __init__(
        self,
        progress: Optional[ProgressFn] = None,
        cancel: CancelLike = None,
        stages: Iterable[tuple[str, float]] = DEFAULT_STAGES,
    ) -> None:
        stages = [(str(n), float(w)) for n, w in stages]
        if not stages or any(w < 0 for _, w in stages) or sum(w for _, w in stages) <= 0:
            raise ValueError("stages need at least one stage and non-negative weights with a positive sum")
        if len({n for n, _ in stages}) != len(stages):
            raise ValueError("stage names must be unique")
        total = sum(w for _, w in stages)
        self._span: dict[str, tuple[float, float]] = {}
        start = 0.0
        for name, w in stages:
            self._span[name] = (start, w / total)
            start += w / total
        self.progress = progress
        self.cancel = cancel
        self.fraction = 0.0

    @property
    def stages(self) -> tuple[str, ...]:
        return tuple(self._span)

    def overall(self, stage: str, fraction: float = 0.0) -> float:
        """Overall fraction for ``fraction`` (0..1, clipped) of ``stage``."""
        if stage not in self._span:
            raise KeyError(f"unknown progress stage {stage!r}; known: {list(self._span)}")
        start, width = self._span[stage]
        return min(1.0, start + width * min(1.0, max(0.0, float(fraction))))

    def report(self, stage: str, fraction: float = 0.0, message: str = "") -> float:
        """Report progress inside ``stage``; checks for cancellation first. Returns the overall fraction."""
        self.check_cancel()
        self.fraction = max(self.fraction, self.overall(stage, fraction))
        if self.progress is not None:
            self.progress(self.fraction, message or stage)
        return self.fraction

    def stage_callback(self, stage: str) -> ProgressFn:
        """A ``progress(fraction, message)`` callback for a sub-task running inside ``stage``."""

        def callback(fraction: float, message: str = "") -> None:
            self.report(stage, fraction, message)

        return callback

    def done(self, message: str = "Done") -> None:
        """Report 100 %."""
        self.fraction = 1.0
        if self.progress is not None:
            self.progress(1.0, message)

    def check_cancel(self) -> None:
        check_cancel(self.cancel)


__all__ = ["ProgressReporter", "check_cancel", "is_cancelled", "DEFAULT_STAGES", "ProgressFn"]

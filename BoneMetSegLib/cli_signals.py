"""SIGINT/SIGTERM for the command line: any stage ends with exit 3 and no output under a final name.

The first signal sets the cancel flag (inference polls it) and raises
:class:`BoneMetSegCancelled` in the main thread at once, so reading, preprocessing and writing
stop too; the temporary files are removed by the writers' cleanup. Later signals are ignored
so that the cleanup runs to its end. While the outputs are renamed onto their final names the
signal is held back (:meth:`SignalGuard.held`) and handled right after.
"""

from __future__ import annotations

import contextlib
import signal
import threading

from .errors import BoneMetSegCancelled

SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM") if hasattr(signal, name))


class SignalGuard:
    def __init__(self):
        self.cancel = threading.Event()
        self.received = None
        self._holding = False
        self._previous = {}

    def install(self) -> "SignalGuard":
        for sig in SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handler)
            except (ValueError, OSError):  # not the main thread: the cancel flag is set by the caller
                pass
        return self

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(sig, previous)
        self._previous = {}

    def _handler(self, signum, frame):
        if self.received is not None:
            return  # already stopping: let the cleanup finish
        self.received = signum
        self.cancel.set()
        if not self._holding:
            raise self.error()

    def error(self) -> BoneMetSegCancelled:
        name = signal.Signals(self.received).name if self.received is not None else "a signal"
        return BoneMetSegCancelled(f"stopped by {name}; no output was written.")

    @contextlib.contextmanager
    def held(self):
        """Hold a signal back during the block (the renames); raise it after the block."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
        if self.received is not None:
            raise self.error()


__all__ = ["SignalGuard"]

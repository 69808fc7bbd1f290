"""Where a training run stands: position, best figures, early stopping; saved in every checkpoint.

The checkpoint keeps it as the plain dict of :meth:`TrainState.to_dict` (the same keys as ever),
so runs resume across versions; keys this version does not know are carried along in ``extra``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

ALL_EPOCHS_DONE = "all epochs done"  # a run finished this way goes on when its config asks for more epochs


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    step: int = 0  # optimiser steps so far
    step_in_epoch: int = 0
    best_val_loss: float = math.inf
    best_epoch: int | None = None
    best_val_froc: float = -math.inf
    epochs_without_improvement: int = 0
    finished: str | None = None  # why the run ended (None: it goes on)
    data: dict | None = None  # the split record of the data source
    val_fingerprint: str | None = None  # what the validation patches depend on (train.validation_fingerprint)
    extra: dict = field(default_factory=dict)  # keys of a checkpoint that this version does not know

    @classmethod
    def from_dict(cls, values: dict) -> "TrainState":
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in values.items() if k in names},
                   extra={k: v for k, v in values.items() if k not in names})

    def to_dict(self) -> dict:
        """The checkpoint's ``state``: the fields (``data`` and ``val_fingerprint`` once set) and ``extra``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        for key in ("data", "val_fingerprint"):
            if out[key] is None:
                del out[key]
        return {**out, **self.extra}

    def summary(self, stopped: str | None) -> dict:
        """``summary.json``: the state without the split record, infinities as null."""
        out = {k: v for k, v in self.to_dict().items() if k != "data"}
        for key in ("best_val_loss", "best_val_froc"):
            out[key] = None if math.isinf(out.get(key, math.inf)) else out[key]
        return {**out, "stopped": stopped}

    def extended_by(self, epochs: int) -> bool:
        """Whether a run that had finished all its epochs goes on because the config now asks for more."""
        return bool(self.finished and self.finished.startswith(ALL_EPOCHS_DONE) and self.epoch < epochs)

    def reset_best(self) -> None:
        """Forget the best validation figures (the validation patches changed)."""
        self.best_val_loss, self.best_val_froc = math.inf, -math.inf
        self.best_epoch, self.epochs_without_improvement = None, 0


__all__ = ["TrainState", "ALL_EPOCHS_DONE"]

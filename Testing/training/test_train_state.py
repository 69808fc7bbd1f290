"""TrainState keeps the checkpoint's state dict as it was (old checkpoints resume, unknown keys stay)."""

import math

from training.train_state import TrainState


def test_state_dict_round_trip_keeps_every_key():
    saved = {"epoch": 3, "step": 600, "step_in_epoch": 0, "best_val_loss": 1.5, "best_epoch": 2,
             "best_val_froc": 0.25, "epochs_without_improvement": 1, "finished": None,
             "data": {"train": ["a"]}, "val_fingerprint": "abc", "from_a_later_version": [1, 2]}
    state = TrainState.from_dict(saved)
    assert (state.epoch, state.best_epoch, state.extra) == (3, 2, {"from_a_later_version": [1, 2]})
    assert state.to_dict() == saved


def test_new_run_and_old_checkpoint_defaults():
    fresh = TrainState().to_dict()
    assert fresh == {"epoch": 0, "step": 0, "step_in_epoch": 0, "best_val_loss": math.inf, "best_epoch": None,
                     "best_val_froc": -math.inf, "epochs_without_improvement": 0, "finished": None}
    old = TrainState.from_dict({"epoch": 1, "step": 5, "step_in_epoch": 0, "best_val_loss": 2.0})
    assert old.best_val_froc == -math.inf and old.summary("cap")["best_val_froc"] is None
    assert old.summary("cap")["stopped"] == "cap" and "data" not in old.summary(None)

"""Resumable training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint (``RUN/last.pt``, ``RUN/best.pt``) is a ``torch.save`` of a dict: the model's
``state_dict`` (unwrapped from DDP), optimiser, LR scheduler, AMP grad scaler, the Python /
NumPy / torch (CPU and CUDA) RNG states, the position (``epoch``, ``step`` = optimiser steps so
far, ``step_in_epoch``), the early-stopping state and the config. It is written to a temporary
file and renamed (``BoneMetSegLib.io.atomic.atomic_write``), so a crash never leaves half a file.
This is a *training* file (pickled, trusted); ``training.export`` turns one into the plain
float16 weights + model card that the library loads. ``slim_checkpoint`` keeps only what export
reads (weights in float16, config, position): 9 MB instead of 55, small enough to bring back from
a lent GPU machine (``python -m training.checkpoint slim RUN/best.pt best_slim.pt``); it cannot be
resumed.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np
import torch

from BoneMetSegLib.io.atomic import atomic_write

FORMAT = "bonemetseg-train-checkpoint-1"


class CheckpointError(ValueError):
    """A file that is not a readable training checkpoint."""


def rng_states() -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: str | Path, *, model, optimizer, scheduler, scaler, state: dict,
                    config: dict) -> Path:
    """Write a checkpoint atomically. ``state``: epoch, step, step_in_epoch, best_val_loss,
    epochs_without_improvement (any JSON-able extras are kept)."""
    payload = {
        "format": FORMAT,
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng_states(),
        "state": dict(state),
        "config": config,
    }
    with atomic_write(path, overwrite=True) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (clear error otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found; give --resume a RUN/last.pt or RUN/best.pt")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # truncated or not a torch file
        raise CheckpointError(f"checkpoint {path} cannot be read ({exc}); use another checkpoint") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a training checkpoint of training.train (format {FORMAT}); "
                         "exported weights (.pt + .json) cannot be resumed")
    return ckpt


def slim_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Write ``src``'s weights (float16), config and position to ``dst``, without the optimiser,
    scheduler, scaler and RNG states: what ``training.export`` reads, not enough to resume."""
    ckpt = load_checkpoint(src)
    return write_slim(dst, ckpt["config"], ckpt["state"], ckpt["model"], overwrite=True)


def write_slim(dst: str | Path, config: dict, state: dict, weights: dict, overwrite: bool) -> Path:
    """Write a slim checkpoint (weights in float16, config, position) atomically."""
    slim = {"format": FORMAT, "slim": True, "config": config, "state": dict(state),
            "model": {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}}
    with atomic_write(dst, overwrite=overwrite) as tmp:
        torch.save(slim, tmp)
    return Path(dst)


def restore(ckpt: dict, *, model, optimizer=None, scheduler=None, scaler=None, rng: bool = True) -> dict:
    """Load a checkpoint's states into the given objects; returns its ``state`` dict."""
    if ckpt.get("slim") and (optimizer is not None or rng):
        raise CheckpointError("a slim checkpoint (weights only, from slim_checkpoint) cannot be resumed; "
                              "resume from the run's full last.pt, or export the slim one")
    unwrap(model).load_state_dict(ckpt["model"])
    if optimizer is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None:
        scaler.load_state_dict(ckpt["scaler"])
    if rng:
        set_rng_states(ckpt["rng"])
    return dict(ckpt["state"])


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model inside a DistributedDataParallel wrapper."""
    return model.module if hasattr(model, "module") else model


__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "slim_checkpoint", "write_slim", "restore",
           "rng_states", "set_rng_states", "unwrap", "FORMAT"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Training checkpoints: 'slim SRC DST' keeps what export reads.")
    parser.add_argument("command", choices=["slim"])
    parser.add_argument("src")
    parser.add_argument("dst")
    args = parser.parse_args(argv)
    try:
        out = slim_checkpoint(args.src, args.dst)
    except (FileNotFoundError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

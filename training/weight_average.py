"""Blend a fine-tuned checkpoint with the weights it started from (weight-space ensembling).

    python -m training.weight_average --checkpoint runs/X/last.pt --base BoneMetSegLib/weights/default.pt \
                                      --alpha 0.5 --out runs/X/blend_05.pt

A fine-tune on a new data mix (harder synthetic lesions, hard negatives) often gains on the new data
and loses what the start weights did well; the straight line between the two sets of weights, taken
at ``alpha`` (0: the base, 1: the fine-tune), often keeps both (Wortsman et al., "Robust fine-tuning
of zero-shot models", CVPR 2022: WiSE-FT). It costs nothing at inference: one network, the same
architecture. Both must be the same architecture (the fine-tune began ``--init`` from the base).
Writes a slim checkpoint (``training.checkpoint.write_slim``: float16 weights, the fine-tune's config
and position, and ``state["blend"]`` saying what was blended) for ``training.export``. Choose
``alpha`` on validation data, like any checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from BoneMetSegLib.errors import BoneMetSegModelError, BoneMetSegOutputError
from BoneMetSegLib.inference.weights import load_weights

from .checkpoint import CheckpointError, load_checkpoint, write_slim


class BlendError(ValueError):
    """The two sets of weights cannot be blended (other architecture, bad alpha)."""


def blend_state_dicts(base: dict, tuned: dict, alpha: float) -> dict:
    """``(1 - alpha) * base + alpha * tuned`` for every floating-point tensor (float32); integer
    buffers (counters) are the fine-tune's. The two must have the same keys and shapes."""
    if not 0.0 <= alpha <= 1.0:
        raise BlendError(f"alpha must be in [0, 1] (0: the base weights, 1: the fine-tune), not {alpha}")
    missing, extra = sorted(set(tuned) - set(base)), sorted(set(base) - set(tuned))
    shapes = [k for k in tuned if k in base and tuple(base[k].shape) != tuple(tuned[k].shape)]
    if missing or extra or shapes:
        raise BlendError("the checkpoint and the base weights are not the same architecture "
                         f"(only in the checkpoint: {missing[:3]}, only in the base: {extra[:3]}, other shape: "
                         f"{shapes[:3]}); blend a fine-tune with the weights it was started from (--init)")
    out = {}
    for key, value in tuned.items():
        if value.is_floating_point():
            out[key] = torch.lerp(base[key].float(), value.float(), float(alpha))
        else:
            out[key] = value.clone()
    return out


def blend(checkpoint: str | Path, base: str | Path, alpha: float, out: str | Path) -> Path:
    """Write the slim checkpoint of ``checkpoint`` blended with the exported weights ``base``."""
    ckpt = load_checkpoint(checkpoint)
    base_state, base_card = load_weights(base)
    state = dict(ckpt["state"])
    state["blend"] = {"alpha": float(alpha), "checkpoint": str(checkpoint), "base": str(base),
                      "base_version": str(base_card.get("version")), "base_sha256": str(base_card.get("sha256"))}
    return write_slim(out, ckpt["config"], state, blend_state_dicts(base_state, ckpt["model"], alpha),
                      overwrite=False)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="the fine-tune (RUN/last.pt or best.pt)")
    parser.add_argument("--base", required=True, help="exported weights it started from (.pt with its card)")
    parser.add_argument("--alpha", type=float, required=True, help="0: the base, 1: the fine-tune")
    parser.add_argument("--out", required=True, help="the blended slim checkpoint (not overwritten)")
    args = parser.parse_args(argv)
    try:
        out = blend(args.checkpoint, args.base, args.alpha, args.out)
    except (FileNotFoundError, CheckpointError, BlendError, BoneMetSegModelError, BoneMetSegOutputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}: {1 - args.alpha:g} x {args.base} + {args.alpha:g} x {args.checkpoint}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Does a recipe's model train and predict on a device? Seconds, no data: before a long run on a
lent GPU (``scripts/device_train.sh stage`` runs it), so a device bug costs one short call.

    python -m training.device_check --config training/configs/gpu_dense.yaml --device cuda

Two training steps on a batch of two random patches of the recipe's size, one with a box lesion
and one without (a lesion-free patch broke the first CUDA run), then a prediction in eval mode.
"""

from __future__ import annotations

import argparse
import time

import torch

from BoneMetSegLib.model import MaskRCNN3D

from .config import ConfigError, TrainConfig, load_config
from .engine import train_steps


def check(cfg: TrainConfig, device: str, steps: int = 2) -> dict:
    """Train ``steps`` steps of ``cfg``'s model and predict once on ``device``; returns the last
    loss, the detections per patch and the seconds."""
    dev = torch.device(device)
    torch.manual_seed(0)
    model = MaskRCNN3D(cfg.model).to(dev)
    size = list(cfg.data.patch_size)
    images = torch.randn(2, 1, *size)
    mask = torch.zeros(1, *size, dtype=torch.bool)
    lo = [s // 4 for s in size]
    hi = [s // 4 + 12 for s in size]
    mask[0, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    targets = [{"boxes": torch.tensor([lo + hi], dtype=torch.float32), "labels": torch.tensor([1]), "masks": mask},
               {"boxes": torch.zeros(0, 6), "labels": torch.zeros(0, dtype=torch.int64),
                "masks": torch.zeros(0, *size, dtype=torch.bool)}]
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr)
    t0 = time.perf_counter()
    history = train_steps(model, lambda: (images, targets), steps, optimizer, dev)  # ends in eval mode
    with torch.no_grad():
        detections = model(images.to(dev))
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return {"loss": history[-1]["loss"], "detections": [len(d["boxes"]) for d in detections],
            "seconds": round(time.perf_counter() - t0, 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="training recipe (its model and patch size)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        parser.exit(2, f"error: {exc}\n")
    print(f"device check on {args.device}: {check(cfg, args.device)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

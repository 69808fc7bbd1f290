"""A small model trained for a minute or two on CPU: large obvious synthetic lesions in real CT.

Used by the test suite (a real model, trained inside the test, instead of random weights) and to
check the whole pipeline before long training runs.

    python -m training.smoke --out /tmp/smoke/smoke.pt [--seconds 90]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from BoneMetSegLib.inference.weights import load_weights, save_weights
from BoneMetSegLib.model import MaskRCNN3D, ModelConfig
from BoneMetSegLib.preprocessing.types import PreprocessConfig

from .engine import TrainingCase, make_batch, synthetic_cases, train_steps
from .hosts import Host, load_host
from .synthetic import SyntheticConfig

SMOKE_CONFIG = dict(
    kernel_size=5, fpn_channels=16, drop_path_rate=0.0, box_head_hidden=128, mask_head_channels=16, mask_head_convs=2,
    box_fg_iou_thresh=0.4, box_bg_iou_thresh=0.4, box_positive_fraction=0.5, box_batch_size_per_image=64,
    head_norm="none",  # plain heads memorise a few cases faster; training.train's runs use the norm (docs/model.md)
)


def smoke_model_config() -> ModelConfig:
    return ModelConfig(**SMOKE_CONFIG)


def train_smoke_model(
    host: Host | list, out: Path, steps: int = 400, max_seconds: float = 120.0, seed: int = 0, n_cases: int = 8,
    lr: float = 1e-3, log=None, name: str = "bonemetseg-smoke", version: str = "0.0.0-smoke",
    init: Path | None = None, case_seed: int | None = None, flips: bool = False,
    patch_size: int = 64, batch_size: int = 2, save_every: int = 0,
) -> tuple[Path, list[dict]]:
    """Train the smoke model on easy synthetic lesions in ``host`` (one or a list) and export it to ``out``."""
    torch.manual_seed(seed)
    hosts = host if isinstance(host, list) else [host]
    cases = synthetic_cases(hosts, n_cases, seed=seed + 1 if case_seed is None else case_seed,
                            synth=SyntheticConfig.easy())
    config = smoke_model_config()
    model = MaskRCNN3D(config)
    if init is not None:  # continue from an exported model (same architecture)
        model.load_state_dict(load_weights(init)[0])
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)

    def card(n_steps: int) -> dict:
        return {
            "name": name,
            "version": version,
            "architecture": config.to_dict(),
            "preprocessing": PreprocessConfig().to_dict(),
            "class_names": list(config.class_names),
            "training_data": (
                f"{n_cases} synthetic patients with large, high-contrast lesions (SyntheticConfig.easy) planted in "
                f"real CT bone of host(s) {', '.join(h.name for h in hosts)}; {n_steps} AdamW steps on "
                f"{patch_size}^3 patches, batch {batch_size}, CPU. Origin labels are synthetic (lung: lytic, other: blastic): they say "
                "nothing about real primaries."
            ),
            "intended_use": "pipeline checks and tests; research use only, not a medical device",
            "detection_threshold": 0.5,
        }

    def log_and_save(step: int, record: dict) -> None:
        if log is not None:
            log(step, record)
        if save_every and (step + 1) % save_every == 0:  # a usable model while a long run goes on
            save_weights(model.state_dict(), card(step + 1), out)

    history = train_steps(
        model, lambda: make_batch(cases, batch_size, patch_size, rng, p_foreground=0.8, flips=flips), steps, opt,
        max_seconds=max_seconds, log=log_and_save,
    )
    save_weights(model.state_dict(), card(len(history)), out)
    return Path(out), history


def write_case_crop(case: TrainingCase, host: Host, center_zyx, size: int, path: Path) -> sitk.Image:
    """Write a ``size``^3 HU crop of ``case`` around ``center_zyx`` as an image file with true geometry."""
    start = [int(np.clip(c - size // 2, 0, s - size)) for c, s in zip(center_zyx, case.image_hu.shape)]
    sl = tuple(slice(a, a + size) for a in start)
    image = sitk.GetImageFromArray(np.ascontiguousarray(case.image_hu[sl]).astype(np.int16))
    image.SetSpacing(host.grid.GetSpacing())
    image.SetDirection(host.grid.GetDirection())
    image.SetOrigin(host.grid.TransformIndexToPhysicalPoint([int(start[2]), int(start[1]), int(start[0])]))
    sitk.WriteImage(image, str(path))
    return image


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--shared-data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--hosts", default="abdomen", help="comma-separated host names (training.hosts.load_host)")
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--name", default="bonemetseg-smoke")
    parser.add_argument("--version", default="0.0.0-smoke")
    parser.add_argument("--init", help="start from this exported model (.pt)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flips", action="store_true", help="random flips along each axis")
    parser.add_argument("--patch", type=int, default=64, help="patch edge (voxels at 1 mm)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--save-every", type=int, default=0, help="export the model every N steps too")
    args = parser.parse_args(argv)
    hosts = [load_host(h, shared_data=Path(args.shared_data)) for h in args.hosts.split(",")]
    path, history = train_smoke_model(
        hosts, Path(args.out), args.steps, args.seconds, n_cases=args.cases, name=args.name, version=args.version,
        init=Path(args.init) if args.init else None, lr=args.lr, seed=args.seed, flips=args.flips,
        patch_size=args.patch, batch_size=args.batch, save_every=args.save_every,
        log=lambda s, r: print(json.dumps({"step": s, **{k: round(v, 4) for k, v in r.items()}})) if s % 20 == 0 else None,
    )
    print(f"wrote {path} after {len(history)} steps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

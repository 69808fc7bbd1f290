"""The training core shared by tests and training scripts: synthetic cases -> batches -> steps.

Normalisation is inference's own (``BoneMetSegLib.preprocessing.network_input``): each case's
z-score statistics are those inference would use, and its patches are clipped and z-scored with them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from BoneMetSegLib.preprocessing.network_input import network_input, zscore_stats
from BoneMetSegLib.preprocessing.types import PreprocessConfig

from .hosts import Host
from .patches import sample_patch
from .synthetic import SyntheticConfig, plant_lesions


@dataclass
class TrainingCase:
    """One case on the 1 mm LPS grid: HU image, instance labels, lesion list, z-score stats."""

    name: str
    image_hu: np.ndarray
    labels: np.ndarray
    lesions: list
    bone: Optional[np.ndarray]
    mean: float
    std: float
    hard_negatives: Optional[np.ndarray] = None  # (N, 3) z, y, x voxel centres of mined false positives


def case_stats(image_hu: np.ndarray, config: PreprocessConfig) -> tuple[float, float]:
    """The mean/std that inference would use (``zscore_stats``); a training case always holds
    bone, so no minimum amount is asked for."""
    return zscore_stats(image_hu, config, min_bone_ml=0.0)


def synthetic_cases(
    hosts: Sequence[Host], n_cases: int, seed: int, synth: SyntheticConfig | None = None,
    preprocess: PreprocessConfig | None = None,
) -> list[TrainingCase]:
    """``n_cases`` synthetic patients, drawn round-robin over ``hosts`` (deterministic in ``seed``)."""
    rng = np.random.default_rng(seed)
    preprocess = preprocess or PreprocessConfig()
    cases = []
    for i in range(n_cases):
        host = hosts[i % len(hosts)]
        image, labels, lesions = plant_lesions(host, rng=rng, config=synth)
        mean, std = case_stats(image, preprocess)
        cases.append(TrainingCase(f"{host.name}-{i:04d}", image, labels, lesions, host.bone, mean, std))
    return cases


def random_flips(patch: np.ndarray, boxes: np.ndarray, masks: np.ndarray, rng: np.random.Generator):
    """Flip a (z, y, x) patch, its boxes ``[K, 6]`` and masks ``[K, z, y, x]`` along each axis with p = 0.5."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 6).copy()
    for axis in range(3):
        if rng.random() < 0.5:
            patch = np.flip(patch, axis)
            masks = np.flip(masks, axis + 1)
            size = patch.shape[axis]
            lo, hi = boxes[:, axis].copy(), boxes[:, axis + 3].copy()
            boxes[:, axis], boxes[:, axis + 3] = size - hi, size - lo
    return np.ascontiguousarray(patch), boxes, np.ascontiguousarray(masks)


def make_batch(
    cases: Sequence[TrainingCase], batch_size: int, patch_size: int | Sequence[int],
    rng: np.random.Generator, preprocess: PreprocessConfig | None = None, p_foreground: float = 0.67,
    flips: bool = False,
) -> tuple[torch.Tensor, list[dict]]:
    """Random patches from random cases: ``images [B,1,*patch]`` (``preprocess``: the recipe the
    cases' stats came from, default ``PreprocessConfig()``) and torchvision-style targets."""
    preprocess = preprocess or PreprocessConfig()
    images, targets = [], []
    for _ in range(batch_size):
        case = cases[int(rng.integers(len(cases)))]
        cut = sample_patch(case.image_hu, case.labels, case.lesions, patch_size, rng, p_foreground, bone=case.bone)
        patch, boxes, masks = cut.hu, cut.boxes, cut.masks
        if flips:
            patch, boxes, masks = random_flips(patch, boxes, np.asarray(masks, dtype=bool), rng)
        images.append(torch.from_numpy(network_input(patch, preprocess, case.mean, case.std)))
        targets.append(
            {
                "boxes": torch.from_numpy(np.asarray(boxes, dtype=np.float32)).reshape(-1, 6),
                "labels": torch.from_numpy(np.asarray(cut.classes, dtype=np.int64)).reshape(-1),
                "masks": torch.from_numpy(np.asarray(masks, dtype=bool)),
            }
        )
    return torch.stack(images)[:, None], targets


def targets_to(targets: list[dict], device: torch.device) -> list[dict]:
    return [{k: v.to(device) for k, v in t.items()} for t in targets]


def train_steps(
    model: torch.nn.Module,
    next_batch: Callable[[], tuple[torch.Tensor, list[dict]]],
    steps: int,
    optimizer: torch.optim.Optimizer,
    device: torch.device | str = "cpu",
    max_seconds: float | None = None,
    log: Optional[Callable[[int, dict], None]] = None,
    clip_grad_norm: float = 10.0,
) -> list[dict]:
    """Run up to ``steps`` optimiser steps (or until ``max_seconds``); returns the loss history."""
    device = torch.device(device)
    model.train().to(device)
    history = []
    t0 = time.perf_counter()
    for step in range(steps):
        images, targets = next_batch()
        losses = model(images.to(device), targets_to(targets, device))
        total = sum(losses.values())
        if not math.isfinite(total.item()):
            raise FloatingPointError(f"non-finite loss at step {step}: { {k: float(v) for k, v in losses.items()} }")
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        optimizer.step()
        record = {k: v.item() for k, v in losses.items()}
        record["loss"] = total.item()
        history.append(record)
        if log is not None:
            log(step, record)
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            break
    model.eval()
    return history

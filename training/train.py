"""Train the 3D Mask R-CNN with a YAML recipe (``training/configs/``); see ``docs/training.md``.

    python -m training.train --config training/configs/paper.yaml [--run-dir runs/paper]
                             [--resume RUN/last.pt] [--device auto|cpu|cuda] [--max-steps N]
                             [--max-minutes M] [--set optim.lr=3e-4 ...] [--no-progress]
    torchrun --nproc_per_node 4 -m training.train --config training/configs/paper.yaml

An epoch is ``schedule.steps_per_epoch`` optimiser steps on random patches (``training.
data_source``); after each epoch: validation loss on fixed validation batches, LR schedule,
``last.pt`` (and ``best.pt`` when the validation loss improved), early stopping. A run dir that
already holds ``last.pt`` is resumed from it. Only rank 0 writes: ``config.yaml``,
``split.json``, ``log.jsonl`` (one JSON object per step / validation), ``loss_curve.png``,
``summary.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml

from BoneMetSegLib.inference.weights import load_weights
from BoneMetSegLib.io.atomic import atomic_write
from BoneMetSegLib.model import MaskRCNN3D

from . import distributed
from .checkpoint import CheckpointError, load_checkpoint, restore, save_checkpoint, set_rng_states, unwrap
from .config import ConfigError, OptimConfig, TrainConfig, load_config, parse_overrides
from .data_source import CaseSource, DataSourceError, PatchStream, train_loader, validation_batches
from .engine import targets_to
from .train_state import ALL_EPOCHS_DONE, TrainState
from .val_detection import ScoreHistogram, add_detections


@dataclass
class _Run:
    """One run's parts: what the steps, the validation and the checkpoints need."""

    cfg: TrainConfig
    info: distributed.DistInfo
    run_dir: Path
    model: torch.nn.Module
    ddp: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.MultiStepLR
    scaler: torch.amp.GradScaler
    amp: bool
    echo: Callable
    state: TrainState = field(default_factory=TrainState)

    def save(self, name: str) -> None:
        """``RUN/name`` (rank 0), then every rank waits for it."""
        if self.info.is_main:
            save_checkpoint(self.run_dir / name, model=self.model, optimizer=self.optimizer,
                            scheduler=self.scheduler, scaler=self.scaler, state=self.state.to_dict(),
                            config=self.cfg.to_dict())
        distributed.barrier(self.info)

    def result(self, history: list) -> dict:
        return {"model": self.model.eval(), "history": history, "state": self.state.to_dict(),
                "run_dir": self.run_dir}


def run(cfg: TrainConfig, resume: str | Path | None = None, device: str = "auto",
        progress: bool = True, echo=print) -> dict:
    """Train (or resume) one run. Returns ``{"model", "history", "state", "run_dir"}``;
    ``history`` holds this process's step records (global mean losses), ``state`` the
    checkpoint's state dict (``TrainState.to_dict``)."""
    info = distributed.setup(device)
    try:
        return _run(cfg, info, resume, progress, echo if info.is_main else (lambda *a, **k: None))
    finally:
        distributed.cleanup(info)


def _run(cfg: TrainConfig, info: distributed.DistInfo, resume, progress: bool, echo) -> dict:
    if cfg.optim.batch_size % info.world_size:
        raise ConfigError(f"optim.batch_size {cfg.optim.batch_size} is the global batch and must divide evenly "
                          f"over the {info.world_size} ranks")
    per_rank = cfg.optim.batch_size // info.world_size
    r = _build(cfg, info, echo)
    ckpt = _resume(r, resume)
    if r.state.finished:
        echo(f"run {r.run_dir} already finished ({r.state.finished}); nothing to do")
        return r.result([])
    source = _prepare_data(r, per_rank)
    batches = _train_batches(r, source, per_rank, ckpt)
    log = _Log(r.run_dir / "log.jsonl", info.is_main)
    history: list[dict] = []
    t0 = time.perf_counter()
    stop = None
    r.ddp.train()
    while r.state.epoch < cfg.schedule.epochs and stop is None:
        stop = train_one_epoch(r, batches, log, history, t0, progress)
        if stop:
            break
        _end_epoch(r, validate(r.model, source, cfg, info, per_rank), log)
        if r.state.finished:
            echo(r.state.finished)
            break
    if stop:
        r.save("last.pt")
        echo(f"stopped at step {r.state.step} ({stop}); run again to resume from {r.run_dir / 'last.pt'}")
    if info.is_main:
        plot_losses(r.run_dir / "log.jsonl", r.run_dir / "loss_curve.png")
        (r.run_dir / "summary.json").write_text(json.dumps(r.state.summary(stop), indent=1))
    return r.result(history)


def _build(cfg: TrainConfig, info: distributed.DistInfo, echo) -> _Run:
    """The model (the same initial weights on every rank), its DDP wrapper, optimiser, LR
    schedule and grad scaler; then the per-rank seed for the sampling inside the model."""
    o, s = cfg.optim, cfg.schedule
    device = info.device
    torch.manual_seed(cfg.seed)
    model = MaskRCNN3D(cfg.model)
    if cfg.init_weights:
        init_from_weights(model, cfg.init_weights)
    model = model.to(device)
    ddp = distributed.wrap(model, info, o.find_unused_parameters)
    optimizer = torch.optim.AdamW(param_groups(model, o), lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(s.lr_milestones), s.lr_gamma)
    amp = bool(o.amp and device.type == "cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    torch.manual_seed(cfg.seed * 1000 + 17 + info.rank)  # sampling inside the model: per rank
    return _Run(cfg, info, cfg.resolved_run_dir(), model, ddp, optimizer, scheduler, scaler, amp, echo)


def _resume(r: _Run, resume) -> dict | None:
    """Restore ``resume`` (else ``RUN/last.pt`` when there is one) into the run; returns the
    checkpoint (its RNG states are set later) or None."""
    s = r.cfg.schedule
    ckpt_path = Path(resume) if resume else r.run_dir / "last.pt"
    ckpt = None
    if resume or ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path)
        try:
            restored = restore(ckpt, model=r.model, optimizer=r.optimizer, scheduler=r.scheduler,
                               scaler=r.scaler, rng=False)
        except RuntimeError as exc:
            raise ConfigError(f"checkpoint {ckpt_path} does not fit this config's model ({str(exc)[:200]}); "
                              "use the config it was trained with or another --run-dir") from None
        r.state = TrainState.from_dict(restored)
        # the config's milestones, not the checkpoint's: a run is extended by raising epochs and milestones
        r.scheduler.milestones = Counter(s.lr_milestones)
        r.echo(f"resumed from {ckpt_path}: epoch {r.state.epoch}, step {r.state.step}")
    if r.state.extended_by(s.epochs):
        r.echo(f"run {r.run_dir} had finished ({r.state.finished}); the config asks for {s.epochs} epochs: going on")
        r.state.finished = None
    return ckpt


def _prepare_data(r: _Run, per_rank: int) -> CaseSource:
    """Load the cases, record the split and the validation fingerprint (a changed one restarts
    the best figures), write ``config.yaml`` and ``split.json``."""
    cfg, info, state = r.cfg, r.info, r.state
    source = CaseSource(cfg)
    source.preload()
    state.data = source.split_record()
    fingerprint = validation_fingerprint(cfg)
    if state.val_fingerprint not in (None, fingerprint):
        r.echo("the validation patches changed with the data settings: the best validation figures so far are "
               "not comparable and start again (the previous best.pt is kept as best_before_epoch_"
               f"{state.epoch}.pt)")
        if info.is_main and (r.run_dir / "best.pt").is_file():
            (r.run_dir / "best.pt").replace(r.run_dir / f"best_before_epoch_{state.epoch}.pt")
        state.reset_best()
    state.val_fingerprint = fingerprint
    if info.is_main:
        r.run_dir.mkdir(parents=True, exist_ok=True)
        (r.run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        (r.run_dir / "split.json").write_text(json.dumps(state.data, indent=1))
    o = cfg.optim
    r.echo(f"run {r.run_dir}: {source.description}; split (patients) train {len(source.split.train)}, "
           f"val {len(source.split.val)}, test {len(source.split.test)}; {info.world_size} process(es) on "
           f"{info.device.type}, batch {o.batch_size} ({per_rank} per rank), mixed precision "
           f"{'on' if r.amp else 'off'}")
    return source


def _train_batches(r: _Run, source: CaseSource, per_rank: int, ckpt: dict | None):
    """The training batches from the run's position; a checkpoint's RNG states are restored only
    now, so the next step is the one that was due."""
    stream = PatchStream(source, r.cfg, r.info.rank, per_rank, start_batch=r.state.step)
    batches = iter(train_loader(stream, r.cfg.data.num_workers))  # draws a seed from the torch RNG
    if ckpt is not None:
        if r.info.is_main:
            set_rng_states(ckpt["rng"])
        else:
            torch.manual_seed(r.cfg.seed * 1000 + 17 + r.info.rank + 7919 * r.state.step)
    return batches


def train_one_epoch(r: _Run, batches, log: "_Log", history: list, t0: float, progress: bool) -> str | None:
    """The rest of the current epoch's steps; returns why it stopped early (a cap), else None."""
    s, state, info = r.cfg.schedule, r.state, r.info
    stop = None
    bar = _bar(progress and info.is_main, s.steps_per_epoch, state)
    while state.step_in_epoch < s.steps_per_epoch:
        stop = _cap_reached(s, state, t0, info)
        if stop:
            break
        images, targets = next(batches)
        record = _train_step(r.ddp, r.optimizer, r.scaler, images, targets, info.device, r.amp,
                             r.cfg.optim.grad_clip, info)
        state.step += 1
        state.step_in_epoch += 1
        record.update(epoch=state.epoch, step=state.step, lr=r.optimizer.param_groups[0]["lr"],
                      seconds=round(time.perf_counter() - t0, 2))
        history.append(record)
        log.write({"type": "train", **record})
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.3f}")
        if s.checkpoint_every_steps and state.step % s.checkpoint_every_steps == 0:
            r.save("last.pt")
    bar.close()
    return stop


def _end_epoch(r: _Run, val: dict, log: "_Log") -> None:
    """After an epoch's validation: LR schedule, best figures, early stopping, log, checkpoints."""
    s, state = r.cfg.schedule, r.state
    state.epoch += 1
    state.step_in_epoch = 0
    r.scheduler.step()
    improved = _improved(val, state, s)
    if "val_froc" in val:
        state.best_val_froc = max(state.best_val_froc, val["val_froc"])
    state.best_val_loss = min(state.best_val_loss, val["loss"])
    if improved:
        state.best_epoch, state.epochs_without_improvement = state.epoch, 0
    else:
        state.epochs_without_improvement += 1
    log.write({"type": "val", "epoch": state.epoch, "step": state.step, **val, "improved": improved})
    froc = (f", FROC {val['val_froc']:.3f} (sens {val['val_sens_at_1fp']:.2f} at 1 FP/patch, "
            f"{val['val_lesions']} lesions)") if "val_froc" in val else ""
    r.echo(f"epoch {state.epoch}/{s.epochs}: val loss {val['loss']:.4f}{froc}"
           f"{' (best)' if improved else ''}, lr {r.optimizer.param_groups[0]['lr']:.2e}")
    if s.early_stopping_patience and state.epochs_without_improvement >= s.early_stopping_patience:
        state.finished = f"early stopping after epoch {state.epoch}"
    elif state.epoch >= s.epochs:
        state.finished = f"{ALL_EPOCHS_DONE} ({s.epochs})"
    if improved:
        r.save("best.pt")
    r.save("last.pt")


_NOT_IN_VALIDATION = ("shared_data", "hard_negatives", "pool_size", "refresh_every", "num_workers")  # paths, stream


def validation_fingerprint(cfg: TrainConfig) -> str:
    """SHA-256 of everything the validation patches depend on (data, preprocessing, seed, the
    validation schedule and the mined negatives' content)."""
    d = cfg.to_dict()
    data = {k: v for k, v in d["data"].items() if k not in _NOT_IN_VALIDATION}
    keys = {"seed": d["seed"], "data": data, "preprocess": d["preprocess"],
            "val": [d["schedule"]["val_batches"], d["optim"]["batch_size"]]}
    if cfg.data.hard_negatives:
        keys["hard_negatives"] = hashlib.sha256(Path(cfg.data.hard_negatives).read_bytes()).hexdigest()
    return hashlib.sha256(json.dumps(keys, sort_keys=True, default=str).encode()).hexdigest()


def param_groups(model: MaskRCNN3D, optim: OptimConfig) -> list[dict]:
    """One AdamW group, or two when the lesion map learns at ``seg_head_lr_mult`` x the LR."""
    head = [p for n, p in model.named_parameters() if n.startswith("seg_head.")]
    if not head or optim.seg_head_lr_mult == 1.0:
        return [{"params": list(model.parameters())}]
    rest = [p for n, p in model.named_parameters() if not n.startswith("seg_head.")]
    return [{"params": rest}, {"params": head, "lr": optim.lr * optim.seg_head_lr_mult}]


def init_from_weights(model: MaskRCNN3D, path: str | Path) -> None:
    """Start from exported weights (``BoneMetSegLib`` format, sha256 checked); the architecture must
    match, except that a lesion segmentation head (``model.seg_head``) the weights lack starts new
    and input channels the weights lack (``model.bone_contrast_mm``) start with zero weights."""
    state, _ = load_weights(Path(path))
    state = {k: v.float() for k, v in state.items()}
    own = model.state_dict()
    for key, value in state.items():  # a stem that gains input channels (bone contrast) starts them at 0
        if (key in own and value.dim() == 5 and own[key].dim() == 5 and value.shape[1] < own[key].shape[1]
                and value.shape[0] == own[key].shape[0] and value.shape[2:] == own[key].shape[2:]):
            wider = torch.zeros_like(own[key])
            wider[:, :value.shape[1]] = value
            state[key] = wider
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not (model.seg_head is not None and k.startswith("seg_head."))]
        if missing or unexpected:
            raise RuntimeError(f"{len(missing)} missing, {len(unexpected)} unexpected tensors, "
                               f"e.g. {(missing or unexpected)[:3]}")
    except RuntimeError as exc:
        raise ConfigError(f"init_weights {path} do not fit this config's model ({str(exc)[:200]}); "
                          "use the model section they were trained with") from None


def _train_step(ddp, optimizer, scaler, images, targets, device, amp: bool, grad_clip: float,
                info: distributed.DistInfo) -> dict:
    """One optimiser step (mixed precision on CUDA); the losses averaged over the ranks."""
    autocast = torch.autocast(device_type="cuda", dtype=torch.float16) if amp else nullcontext()
    with autocast:
        losses = ddp(images.to(device, non_blocking=True), targets_to(targets, device))
    total = sum(losses.values())
    names = list(losses)
    values = distributed.all_reduce_sum([float(losses[k].detach()) for k in names] + [float(total.detach())], info)
    record = {k: v / info.world_size for k, v in zip(names + ["loss"], values)}
    record["rank_loss"] = float(total.detach())  # this rank's own batch
    if not math.isfinite(record["loss"]):  # every rank sees the same sum: all stop, weights untouched
        raise FloatingPointError(f"non-finite training loss: {record}; lower optim.lr or check the data")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(total).backward()
    if grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(ddp.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return record


def _improved(val: dict, state: TrainState, s) -> bool:
    """Whether this validation beats the best so far on ``schedule.monitor``."""
    if s.monitor == "detection":
        return val["val_froc"] > state.best_val_froc + s.early_stopping_min_delta
    return val["loss"] < state.best_val_loss - s.early_stopping_min_delta


def validate(model, source: CaseSource, cfg: TrainConfig, info: distributed.DistInfo, batch_size: int) -> dict:
    """Mean losses over the fixed validation batches (training-mode heads, no drop-path, no
    gradient, a fixed sampling seed so the same weights always give the same value), then, when
    ``schedule.val_detection``, the detection FROC on the same patches (``training.val_detection``)."""
    net = unwrap(model)
    net.train()
    net.backbone.eval()  # drop-path (and batch-norm statistics) off
    device = info.device
    amp = bool(cfg.optim.amp and device.type == "cuda")
    sums: dict[str, float] = {}
    n = 0
    hist = ScoreHistogram() if cfg.schedule.val_detection else None
    with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed + 99)
        for images, targets in validation_batches(source, cfg, batch_size, info.rank, info.world_size):
            images = images.to(device)
            with torch.autocast(device_type="cuda", dtype=torch.float16) if amp else nullcontext():
                losses = net(images, targets_to(targets, device))
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            sums["loss"] = sums.get("loss", 0.0) + float(sum(losses.values()))
            n += 1
            if hist is not None:  # the same patches in inference mode (draws no random numbers)
                add_detections(hist, net, images, targets, amp)
                net.train()
                net.backbone.eval()
    net.train()
    keys = sorted(sums) if sums else ["loss"]
    totals = distributed.all_reduce_sum([sums.get(k, 0.0) for k in keys] + [float(n)], info)
    count = max(totals[-1], 1.0)
    out = {f"val_{k}" if k != "loss" else "loss": v / count for k, v in zip(keys, totals[:-1])}
    if hist is not None:
        out.update(ScoreHistogram.from_list(distributed.all_reduce_sum(hist.to_list(), info)).summary())
    return out


def _cap_reached(s, state, t0, info) -> str | None:
    reason = None
    if s.max_steps is not None and state.step >= s.max_steps:
        reason = f"schedule.max_steps {s.max_steps} reached"
    elif s.max_minutes is not None and time.perf_counter() - t0 > 60 * s.max_minutes:
        reason = f"schedule.max_minutes {s.max_minutes} reached"
    # every rank must stop at the same step (rank 0's clock decides)
    return reason if distributed.broadcast_flag(reason is not None, info) else None


class _Log:
    """Append-only JSON lines (rank 0 only)."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")


def _bar(enabled: bool, total: int, state: TrainState):
    from tqdm import tqdm

    return tqdm(total=total, initial=state.step_in_epoch, desc=f"epoch {state.epoch + 1}",
                disable=not enabled, dynamic_ncols=True, file=sys.stderr)


def plot_losses(log_path: Path, png_path: Path) -> Path | None:
    """Training loss (per step and its per-epoch mean), validation loss and (when logged) the
    validation detection FROC per epoch, as a PNG."""
    if not Path(log_path).is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, val, froc = {}, {}, {}
    for line in Path(log_path).read_text().splitlines():
        r = json.loads(line)
        if r["type"] == "train":
            train[r["step"]] = (r["loss"], r["epoch"])  # a resumed run overwrites repeated steps
        elif r["type"] == "val":
            val[r["epoch"]] = (r["step"], r["loss"])
            if r.get("val_froc") is not None:
                froc[r["epoch"]] = (r["step"], r["val_froc"])
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        steps = np.array(sorted(train))
        ax.plot(steps, [train[k][0] for k in steps], lw=0.5, alpha=0.4, color="tab:blue", label="train (step)")
        epochs = sorted({train[k][1] for k in steps})
        means = [(max(k for k in steps if train[k][1] == e), np.mean([train[k][0] for k in steps if train[k][1] == e]))
                 for e in epochs]
        ax.plot(*zip(*means), "o-", color="tab:blue", label="train (epoch mean)")
    if val:
        ax.plot(*zip(*[val[e] for e in sorted(val)]), "s-", color="tab:orange", label="validation")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss (sum of the five Mask R-CNN losses)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    if froc:
        ax2 = ax.twinx()
        ax2.plot(*zip(*[froc[e] for e in sorted(froc)]), "^-", color="tab:green", label="validation detection FROC")
        ax2.set_ylabel("FROC (mean sensitivity at 0.5-4 FP per patch)")
        ax2.set_ylim(0, 1)
        h2, n2 = ax2.get_legend_handles_labels()
        handles, names = handles + h2, names + n2
    ax.legend(handles, names, fontsize=8)
    fig.tight_layout()
    with atomic_write(png_path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return png_path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML recipe, e.g. training/configs/paper.yaml")
    parser.add_argument("--run-dir", help="output folder (default: the config's run_dir or runs/<name>)")
    parser.add_argument("--resume", help="checkpoint to continue from (default: RUN_DIR/last.pt if present)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda (torchrun: one GPU per process)")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimiser steps in total (resumable)")
    parser.add_argument("--max-minutes", type=float, help="stop after this much wall time (resumable)")
    parser.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE", help="override config values")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--init", help="start from exported weights (.pt with its model card)")
    args = parser.parse_args(argv)
    try:
        overrides = parse_overrides(args.set)
        if args.run_dir:
            overrides["run_dir"] = args.run_dir
        if args.max_steps is not None:
            overrides["schedule.max_steps"] = args.max_steps
        if args.max_minutes is not None:
            overrides["schedule.max_minutes"] = args.max_minutes
        if args.init:
            overrides["init_weights"] = args.init
        cfg = load_config(args.config, overrides)
        run(cfg, resume=args.resume, device=args.device, progress=not args.no_progress)
    except (ConfigError, CheckpointError, DataSourceError, FileNotFoundError) as exc:
        print(f"training.train: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

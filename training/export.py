"""Export a training checkpoint as library weights: float16 ``.pt`` + JSON model card.

    python -m training.export --checkpoint runs/paper/best.pt --out exported/bonemetseg.pt
                              [--eval-report report.json] [--into-package] [--name N] [--version V]
                              [--detection-threshold 0.5 | --threshold-from VAL_REPORT.json [--max-fp-per-case 1]]
                              [--inference rpn_post_nms_top_n_test=1000 ...] [--postprocess test_time_flips=true ...]

The card (``docs/model_card_format.md``) carries the architecture and preprocessing of the run,
the class names, the weights' version, a description of the training data with the synthetic-
origin caveat, the intended use (research only, not a medical device), the detection threshold,
evaluation figures copied from ``training.evaluate``'s JSON report, and the SHA-256 of the weights
(``BoneMetSegLib.inference.weights.save_weights``). Files over 30 MB are refused. The export is
loaded back (SHA-256 checked, weights fitted into the network) before it is put in place.
``--into-package`` also writes ``BoneMetSegLib/weights/default.pt`` + ``default.json``, the
embedded default model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
from dataclasses import fields
from pathlib import Path

from BoneMetSegLib.errors import BoneMetSegModelError, BoneMetSegOutputError
from BoneMetSegLib.io.atomic import atomic_group
from BoneMetSegLib.inference.model_card import card_path_for
from BoneMetSegLib.inference.weights import default_weights_path, load_weights, save_weights
from BoneMetSegLib.model import MaskRCNN3D, ModelConfig
from BoneMetSegLib.postprocess.config import PostprocessConfig
from BoneMetSegLib.preprocessing.types import PreprocessConfig

from .checkpoint import CheckpointError, load_checkpoint
from .metrics.detection import threshold_at

MAX_BYTES = 30 * 1024 * 1024
SYNTHETIC_CAVEAT = (
    "The lesions are synthetic: planted by training/synthetic.py in real CT bone, with synthetic "
    "origin labels that follow the published tendency (lung: mostly lytic; other primaries: mostly "
    "blastic or mixed). The lung-origin probability therefore says how lytic or blastic a lesion "
    "looks, not where a real tumour came from; no figure here is a clinical performance."
)
INTENDED_USE = (
    "Research use only; not a medical device. Detects bone metastases on CT and estimates whether "
    "their primary tumour is lung cancer. Not for diagnosis or any clinical decision."
)


class ExportError(ValueError):
    """The export cannot be done as asked (too large, no target, unreadable report...)."""


def package_weights_path() -> Path:
    """Where ``--into-package`` writes: the library's embedded ``default.pt``."""
    return default_weights_path()


def build_card(ckpt: dict, name: str | None = None, version: str | None = None,
               detection_threshold: float = 0.5, eval_report: Path | None = None,
               inference: dict | None = None, note: str | None = None,
               postprocess: dict | None = None) -> tuple[dict, ModelConfig]:
    """The model card of a training checkpoint (without the file fields that saving adds);
    ``inference`` overrides :data:`INFERENCE_KEYS` of the architecture; ``note``: free text on how
    the run went (restarts, changed settings), kept in ``training_data``; ``postprocess``: card
    settings of :data:`POSTPROCESS_KEYS`."""
    config, state = ckpt["config"], ckpt["state"]
    model_cfg = ModelConfig.from_dict({**config["model"], **(inference or {})})
    pre = PreprocessConfig.from_dict(config["preprocess"])
    data = state.get("data", {})
    synthetic = data.get("source", config["data"]["source"]) == "synthetic"
    split = data.get("patients", {})
    optim, sched, aug = config["optim"], config["schedule"], config["augment"]
    training_data = {
        "description": data.get("description", "not recorded"),
        "split_by_patient": {k: len(v) for k, v in split.items()},
        "held_out_hosts": data.get("held_out_hosts", []),
        "recipe": (
            f"AdamW lr {optim['lr']:g} (x{sched['lr_gamma']:g} after epoch(s) {sched['lr_milestones']}), "
            f"batch {optim['batch_size']}, {sched['steps_per_epoch']} steps per epoch, up to {sched['epochs']} "
            f"epochs with early stopping on validation {_monitored(sched)}; patches {config['data']['patch_size']}; "
            + (f"augmentation: rotation up to {aug['rotate_deg']:g} degrees, scaling {aug['scale']}, "
               f"flips on axes {aug['flip_axes']}" if aug["enabled"] else "no augmentation")
            + (f"; intensity (p {aug['p_intensity']:g}): blur sigma {aug['blur_sigma']} voxels, noise "
               f"{aug['noise_hu']} HU, contrast {aug['contrast']}, shift +-{aug['shift_hu']:g} HU"
               if aug["enabled"] and aug.get("p_intensity", 0) > 0 else "")
        ),
        "trained": {"epoch": state.get("epoch"), "steps": state.get("step"),
                    "best_val_loss": _finite(state.get("best_val_loss")),
                    "best_val_froc": _finite(state.get("best_val_froc")), "monitor": sched.get("monitor", "loss"),
                    "best_epoch": state.get("best_epoch"),
                    "finished": state.get("finished")},
        "config_name": config.get("name"),
        "synthetic_lesions": config["data"].get("synthetic") if synthetic else None,
    }
    if note:
        training_data["note"] = str(note)
    if synthetic:
        training_data["caveat"] = SYNTHETIC_CAVEAT
    card = {
        "name": name or f"bonemetseg-{config.get('name', 'model')}",
        "version": version or str(config.get("version", "0.0.0")),
        "architecture": model_cfg.to_dict(),
        "preprocessing": pre.to_dict(),
        "class_names": list(model_cfg.class_names),
        "training_data": training_data,
        "intended_use": INTENDED_USE,
        "detection_threshold": float(detection_threshold),
        **(postprocess or {}),
        "metrics": metrics_from_report(eval_report) if eval_report else {},
    }
    return card, model_cfg


# architecture fields that only change inference (no weight depends on them): settable at export
INFERENCE_KEYS = ("rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test", "rpn_nms_thresh", "box_score_thresh",
                  "box_nms_thresh", "detections_per_img", "seg_score_weight")


def _key_value(item, option: str, keys: tuple) -> tuple[str, str]:
    """``"KEY=VALUE"`` of an export option -> ``(KEY, VALUE)``, KEY one of ``keys``."""
    key, sep, value = str(item).partition("=")
    key = key.strip()
    if not sep or key not in keys:
        raise ExportError(f"{option} takes KEY=VALUE with KEY one of {', '.join(keys)}; got {item!r}")
    return key, value


def parse_inference_settings(items) -> dict:
    """``["rpn_post_nms_top_n_test=1000", ...]`` -> typed values of :data:`INFERENCE_KEYS` only."""
    out = {}
    defaults = ModelConfig()
    for item in items or []:
        key, value = _key_value(item, "--inference", INFERENCE_KEYS)
        kind = type(getattr(defaults, key))
        try:
            out[key] = kind(float(value)) if kind is int and float(value).is_integer() else kind(value)
        except ValueError:
            raise ExportError(f"--inference {key} needs a {kind.__name__}, got {value!r}") from None
    return out


# model-card settings of the postprocessing (BoneMetSegLib.postprocess.config): settable at export
POSTPROCESS_KEYS = tuple(f.name for f in fields(PostprocessConfig) if f.name != "detection_threshold")


def parse_postprocess_settings(items) -> dict:
    """``["test_time_flips=true", "border_context_mm=16", ...]`` -> JSON values of :data:`POSTPROCESS_KEYS`
    (``null`` turns a filter off); the card check refuses wrong types and ranges when the card is written."""
    out = {}
    for item in items or []:
        key, value = _key_value(item, "--postprocess", POSTPROCESS_KEYS)
        try:
            out[key] = json.loads(value)
        except ValueError:
            raise ExportError(f"--postprocess {key} needs a JSON value (a number, true, false or null), "
                              f"got {value!r}") from None
    return out


def threshold_from_report(path: Path, max_fp_per_case: float) -> float:
    """The lowest detection score at which a ``training.evaluate`` report's FROC curve stays at or
    under ``max_fp_per_case`` false positives per case (choose it on validation data, not the test set)."""
    try:
        curve = json.loads(Path(path).read_text(encoding="utf-8"))["detection"]["curve"]
        threshold = threshold_at(curve, max_fp_per_case)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExportError(f"{path} is not a training.evaluate report with a FROC curve ({exc})") from None
    if not math.isfinite(threshold):
        raise ExportError(f"no score threshold in {path} keeps false positives at or under {max_fp_per_case} per case")
    return threshold


def metrics_from_report(path: Path) -> dict:
    """The evaluation figures of a ``training.evaluate`` JSON report: its ``summary`` object if it
    has one, else everything but the per-case rows (lists longer than 20 items left out)."""
    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportError(f"evaluation report {path} cannot be read as JSON ({exc})") from None
    if not isinstance(report, dict):
        raise ExportError(f"evaluation report {path} is not a JSON object")
    if isinstance(report.get("summary"), dict):
        figures = report["summary"]
    else:  # training.evaluate's report: the aggregate sections, not the per-case rows
        figures = _small({k: v for k, v in report.items() if k != "cases"})
    return {"evaluation": figures, "evaluation_report": path.name,
            "evaluation_report_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def _monitored(sched: dict) -> str:
    return "detection FROC" if sched.get("monitor") == "detection" else "loss"


def _finite(value):
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def _small(value, limit: int = 20):
    if isinstance(value, dict):
        return {k: _small(v, limit) for k, v in value.items() if not (isinstance(v, list) and len(v) > limit)}
    if isinstance(value, list):
        return [_small(v, limit) for v in value]
    return value


def export(checkpoint: str | Path, out: str | Path | None = None, *, eval_report: str | Path | None = None,
           into_package: bool = False, name: str | None = None, version: str | None = None,
           detection_threshold: float = 0.5, inference: dict | None = None,
           note: str | None = None, postprocess: dict | None = None) -> list[Path]:
    """Export ``checkpoint`` to ``out`` and/or the package; returns the ``.pt`` paths written."""
    if out is None and not into_package:
        raise ExportError("give --out DIR/name.pt, --into-package, or both")
    ckpt = load_checkpoint(checkpoint)
    card, model_cfg = build_card(ckpt, name, version, detection_threshold,
                                 Path(eval_report) if eval_report else None, inference, note, postprocess)
    net = MaskRCNN3D(model_cfg)
    try:
        net.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise ExportError(f"checkpoint {checkpoint}: the weights do not fit its own model config ({str(exc)[:200]})") from None
    targets = ([Path(out)] if out else []) + ([package_weights_path()] if into_package else [])
    written = []
    for target in targets:
        target = target if target.suffix == ".pt" else target.with_suffix(".pt")
        written.append(_write_checked(net.state_dict(), card, target, model_cfg))
    return written


def _write_checked(state_dict, card: dict, target: Path, model_cfg: ModelConfig) -> Path:
    """Save into a temporary folder beside ``target``, check size and round trip, then move the
    ``.pt`` and its card into place together (nothing is replaced when a check fails)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    outputs = {"weights": target, "card": card_path_for(target)}
    with atomic_group(outputs, overwrite=True) as temps, \
            tempfile.TemporaryDirectory(prefix=".export-", dir=target.parent) as tmp:
        staged = Path(tmp) / target.name  # the card names the weights file: stage it under its own name
        save_weights(state_dict, card, staged, half=True)
        size = staged.stat().st_size
        if size > MAX_BYTES:
            raise ExportError(f"the exported weights are {size / 2**20:.1f} MB, over the 30 MB limit; "
                             "use a smaller model (model.backbone_size, fpn_channels) and retrain")
        state, _ = load_weights(staged)  # sha256 verified, plain tensors only
        MaskRCNN3D(model_cfg).load_state_dict(state)
        os.replace(staged, temps["weights"])
        os.replace(card_path_for(staged), temps["card"])
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="RUN/best.pt (or last.pt) of training.train")
    parser.add_argument("--out", help="weights file to write (.pt; the .json card goes beside it)")
    parser.add_argument("--eval-report", help="JSON report of training.evaluate: figures copied into the card")
    parser.add_argument("--into-package", action="store_true",
                        help="also write BoneMetSegLib/weights/default.pt + default.json (the embedded model)")
    parser.add_argument("--name", help="model name (default bonemetseg-<config name>)")
    parser.add_argument("--version", help="weights version (default: the config's version)")
    parser.add_argument("--detection-threshold", type=float, default=0.5)
    parser.add_argument("--threshold-from", metavar="VAL_REPORT",
                        help="training.evaluate JSON report on VALIDATION data: the detection threshold becomes the "
                             "lowest score with at most --max-fp-per-case false positives per case")
    parser.add_argument("--max-fp-per-case", type=float, default=1.0)
    parser.add_argument("--inference", nargs="*", default=[], metavar="KEY=VALUE",
                        help=f"inference-only architecture settings ({', '.join(INFERENCE_KEYS)})")
    parser.add_argument("--postprocess", nargs="*", default=[], metavar="KEY=VALUE",
                        help=f"model-card postprocessing settings ({', '.join(POSTPROCESS_KEYS)}; JSON values)")
    parser.add_argument("--note", help="free text for the card's training_data (how the run went)")
    args = parser.parse_args(argv)
    try:
        threshold = args.detection_threshold
        if args.threshold_from:
            threshold = threshold_from_report(Path(args.threshold_from), args.max_fp_per_case)
            print(f"detection threshold {threshold:.4f}: at most {args.max_fp_per_case:g} false positives per case "
                  f"in {args.threshold_from}")
        paths = export(args.checkpoint, args.out, eval_report=args.eval_report, into_package=args.into_package,
                       name=args.name, version=args.version, detection_threshold=threshold,
                       inference=parse_inference_settings(args.inference), note=args.note,
                       postprocess=parse_postprocess_settings(args.postprocess))
    except (ExportError, CheckpointError, FileNotFoundError, BoneMetSegModelError, BoneMetSegOutputError) as exc:
        print(f"training.export: error: {exc}", file=sys.stderr)
        return 2
    for p in paths:
        print(f"wrote {p} ({p.stat().st_size / 2**20:.1f} MB) and {card_path_for(p).name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

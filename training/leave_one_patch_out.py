"""Leave-one-patch-out: judge a recipe that trains on real box-labelled patches (issue 11.5).

    python -m training.leave_one_patch_out --config training/configs/cpu_blds.yaml \\
        --init BoneMetSegLib/weights/default.pt --out runs/lopo [--all]

For each patch of the config's ``data.real_patches`` folder, train the recipe with that patch (and
its pasted lesions, ``data.p_paste_real``) left out (``data.real_patches_exclude``; ``python -m
training.train`` in a subprocess, run folder ``OUT/fold-<patch>``), export the fold's last
checkpoint (a fixed number of steps: nothing is chosen on the patch it is judged on) and predict
the left-out patch with it. The report (``OUT/lopo.md`` and ``.json``, the layout of
``training.evaluate``'s BLDS section) pools the left-out predictions: lesions found at <= 2 false
positives per patch, and each lesion's score and rank. These are the only BLDS figures a model trained on the patches may quote. ``--all`` then
trains the recipe on every patch (``OUT/all``): the model to export, whose BLDS figures are
the leave-one-patch-out ones. A fold whose ``model.pt`` exists is not trained again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from BoneMetSegLib.errors import BoneMetSegError
from BoneMetSegLib.inference.predictor import load_model
from BoneMetSegLib.io.atomic import atomic_group

from .config import ConfigError, load_config, parse_overrides
from .evaluate import EVAL_THRESHOLD, evaluate_blds, json_ready, read_blds
from .evaluation_report import blds_lesion_lines
from .export import export


def train_fold(config: str, run_dir: Path, exclude: list, init: str | None, extra_sets: list) -> Path:
    """Train the recipe with ``exclude`` left out and export its last checkpoint; returns the model path."""
    model_path = run_dir / "model.pt"
    if model_path.is_file():
        return model_path
    cmd = [sys.executable, "-m", "training.train", "--config", config, "--run-dir", str(run_dir), "--no-progress",
           "--set", f"data.real_patches_exclude={json.dumps(exclude)}", *extra_sets]
    if init:
        cmd += ["--init", init]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    export(run_dir / "last.pt", model_path, detection_threshold=0.5,
           note=f"leave-one-patch-out fold: trained without {', '.join(exclude) or 'no patch'}")
    return model_path


def markdown(report: dict) -> str:
    """The report as Markdown."""
    lines = [f"# Leave-one-patch-out on {report['path']}", "",
             f"Recipe `{report['config']}`"
             + "".join(f" `--set {item}`" for item in report.get("sets") or [])
             + f" from `{report['init']}`; each patch predicted by the model trained "
             f"without it (its last checkpoint), at threshold {report['eval_threshold']:g}.", "",
             f"**{report['summary']}.**", ""] + blds_lesion_lines(report["patches"])
    return "\n".join(lines) + "\n"


def run(config: str, out: Path, init: str | None, extra_sets: list, train_all: bool) -> dict:
    cfg = load_config(config, parse_overrides(extra_sets))  # the folds train with these sets too
    folder = cfg.data.real_patches_dir(cfg.shared_data_dir())
    if folder is None or (cfg.data.p_real_patch <= 0 and cfg.data.p_paste_real <= 0):
        raise ConfigError(f"{config}: set data.real_patches and data.p_real_patch > 0 (train on the patches) "
                          "or data.p_paste_real > 0 (paste their lesions into synthetic patients)")
    names = sorted(read_blds(folder))
    models = {name: train_fold(config, out / f"fold-{name.split('.')[0]}", [name], init, extra_sets)
              for name in names}
    loaded = {name: load_model(str(path), device="cpu") for name, path in models.items()}
    report = {"config": config, "init": init, "sets": extra_sets, "eval_threshold": EVAL_THRESHOLD,
              "models": {k: str(v) for k, v in models.items()},
              **evaluate_blds(loaded[names[0]], folder, model_of=loaded.__getitem__)}
    out.mkdir(parents=True, exist_ok=True)
    with atomic_group({"json": out / "lopo.json", "md": out / "lopo.md"}, overwrite=True) as tmp:
        tmp["json"].write_text(json.dumps(json_ready(report), indent=1), encoding="utf-8")
        tmp["md"].write_text(markdown(report), encoding="utf-8")
    print(f"leave-one-patch-out: {report['summary']} (wrote {out / 'lopo.md'})", flush=True)
    if train_all:
        train_fold(config, out / "all", [], init, extra_sets)
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True,
                        help="a training recipe with data.real_patches and p_real_patch or p_paste_real > 0")
    parser.add_argument("--out", required=True, help="folder for the folds and lopo.md/json")
    parser.add_argument("--init", help="weights to start each fold from (as training.train --init)")
    parser.add_argument("--set", action="append", default=[], help="section.key=value for every fold")
    parser.add_argument("--all", action="store_true", help="then train on every patch (OUT/all/model.pt)")
    args = parser.parse_args(argv)
    try:
        run(args.config, Path(args.out), args.init, args.set, args.all)
    except (BoneMetSegError, ConfigError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"error: a fold's training failed (exit {exc.returncode}); its log is above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Mine false positives of a trained model, so that the next training round sees them as background.

    python -m training.mine_negatives --config C.yaml --model W.pt --out runs/X/hard_negatives.json
                                      [--min-score 0.3] [--device cpu]

Synthetic data (``data.source: synthetic``): every training host CT is predicted as it is,
without planted lesions, so every detection scoring at least ``--min-score`` is a false positive
(intervertebral discs, bone islands, implants, contrast-filled vessels...); since every
synthetic patient of a host shares its anatomy, the same structures come back in each of them.
Annotated data (``data.source: dataset``): each *training* case is predicted and the detections
that hit no true lesion (the evaluation's hit rule) are kept; validation and test cases are never
looked at. The JSON lists, per host name or case id, the centres ``zyx`` (voxel indices on the
canonical 1 mm grid that training uses), scores and LPS centres. Give it to the next run as
``data.hard_negatives``; ``data.p_hard_negative`` of the non-lesion patches then hold one of them
(``training.patches.choose_patch_start``). This is the classic bootstrapping round of detector
training (hard-negative mining), done offline so that a run stays deterministic and resumable.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from BoneMetSegLib.errors import BoneMetSegError
from BoneMetSegLib.inference.predictor import load_model
from BoneMetSegLib.io.atomic import atomic_write

from .config import ConfigError, load_config, parse_overrides
from .data_source import CaseSource, DataSourceError
from .evaluate import record_boxes, true_lesions
from .hosts import canonical_1mm
from .metrics import detection

DEFAULT_MIN_SCORE = 0.3


def _entry(lesion, grid: sitk.Image) -> dict:
    xyz = grid.TransformPhysicalPointToContinuousIndex([float(v) for v in lesion.centroid_lps_mm])
    return {"zyx": [round(float(v), 1) for v in xyz[::-1]], "score": round(float(lesion.detection_score), 4),
            "lps": [round(float(v), 1) for v in lesion.centroid_lps_mm], "volume_ml": round(float(lesion.volume_ml), 3)}


def host_negatives(model, host, min_score: float) -> list[dict]:
    """Detections on a host CT without lesions (all false positives), on the host's grid."""
    image = sitk.GetImageFromArray(np.asarray(host.image_hu, np.float32))
    image.CopyInformation(host.grid)
    result = model.predict(image, threshold=min_score)
    return [_entry(les, host.grid) for les in result.lesions]


def case_negatives(model, case, min_score: float) -> list[dict]:
    """Detections of an annotated case that hit none of its true lesions, on its 1 mm grid."""
    result = model.predict(case.image, threshold=min_score)
    match = detection.match_lesions(*record_boxes(result.lesions), record_boxes(true_lesions(case))[0])
    grid = canonical_1mm(case.image)
    return [_entry(les, grid) for les, t in zip(result.lesions, match.truth_of) if t < 0]


def mine(cfg, model, min_score: float = DEFAULT_MIN_SCORE, log=None) -> dict:
    """``{"negatives": {key: [entries]}, ...}`` for the training part of ``cfg``'s data."""
    source = CaseSource(cfg)
    negatives = {}
    if source.kind == "synthetic":
        for name in source.host_names:
            negatives[str(name)] = host_negatives(model, source.host(name), min_score)
            if log:
                log(f"host {name}: {len(negatives[str(name)])} false positive(s) >= {min_score}")
    else:
        from BoneMetSegLib.dataset import load_case

        for key in source.cases_of(source.split.train):
            negatives[key] = case_negatives(model, load_case(source.case_dirs[key]), min_score)
            if log:
                log(f"case {key}: {len(negatives[key])} false positive(s) >= {min_score}")
    return {"model": {k: model.model_info.get(k) for k in ("name", "version", "sha256")},
            "min_score": min_score, "source": source.kind, "negatives": negatives}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the training config whose data to mine")
    parser.add_argument("--model", required=True, help="exported weights .pt (with card), or 'default'")
    parser.add_argument("--out", required=True, help="JSON to write (data.hard_negatives of the next run)")
    parser.add_argument("--min-score", type=float, default=DEFAULT_MIN_SCORE)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE", help="override config values")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        # the config's own data.hard_negatives plays no part in mining (it may be the file this
        # run writes, for a config that trains on what its starting weights got wrong)
        cfg = load_config(args.config, {**parse_overrides(args.set), "data.hard_negatives": None})
        if Path(args.out).exists() and not args.overwrite:
            raise FileExistsError(f"{args.out} exists; pass --overwrite or choose another --out")
        model = load_model(None if args.model == "default" else args.model, args.device)
        report = mine(cfg, model, args.min_score, log=lambda m: print(m, file=sys.stderr))
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(out, args.overwrite) as tmp:
            tmp.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    except (ConfigError, DataSourceError, BoneMetSegError, FileNotFoundError, FileExistsError) as exc:
        print(f"mine_negatives: error: {exc}", file=sys.stderr)
        return 2
    n = sum(len(v) for v in report["negatives"].values())
    print(f"wrote {args.out}: {n} false positive(s) in {len(report['negatives'])} host(s)/case(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

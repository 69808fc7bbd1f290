"""The ``bonemetseg`` command line: predict (whole CT or ``--point``), rescore, info, fetch-sample.

Exit codes: 0 success; 1 some cases of a batch failed, or an internal error (a bug: one line, please
report it); 2 bad input, bad model, bad argument or bad output path (one line on stderr, no
traceback, nothing written); 3 interrupted (SIGINT/SIGTERM at any stage: no output under a final
name, temporary files removed).

Order of a run: arguments, input path, model card, every output path, then the CT is read and
its size checked against the memory budget, and only then the model loads. A case's outputs are
written to temporary files and renamed together at the end (all or none).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from .cli_args import build_parser
from .cli_signals import SignalGuard
from .errors import BoneMetSegCancelled, BoneMetSegError
from .io.formats import FILE_FORMATS, has_dicom_preamble
from .vocabulary import ALGORITHM_SEMIAUTOMATIC, segment_id

IMAGE_SUFFIXES = tuple(FILE_FORMATS)  # .nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd
OUTPUT_SUFFIX = ".seg.nrrd"
BATCH_SUMMARY = "batch_summary.json"
OPTION_NAMES = {"dicom_seg": "--dicom-seg", "dicom_sr": "--dicom-sr"}


def main(argv=None) -> int:
    guard = SignalGuard().install()
    try:
        return _dispatch(argv, guard)
    except SystemExit as exc:  # argparse: --help, --version, or a bad argument (already one line)
        return exc.code if isinstance(exc.code, int) else 2
    except BoneMetSegCancelled as exc:
        return _say("cancelled", exc, 3)
    except BoneMetSegError as exc:
        return _say("error", exc, 2)
    except KeyboardInterrupt:
        return _say("cancelled", "interrupted; no output was written.", 3)
    except MemoryError:
        return _say("error", "out of memory; crop the CT to the region of interest or lower "
                    "BONEMETSEG_MEMORY_LIMIT_GB to refuse such inputs up front.", 2)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return _say("error", f"{where}{exc.strerror or exc}; check the path and its permissions.", 2)
    except Exception as exc:  # a bug: still one line, exit 1
        text = " ".join(str(exc).split())[:300]
        return _say("internal error", f"{type(exc).__name__}: {text} (please report this)", 1)
    finally:
        guard.restore()


def _say(kind: str, message, code: int) -> int:
    print(f"bonemetseg: {kind}: {' '.join(str(message).split())}", file=sys.stderr)
    return code


def _dispatch(argv, guard: SignalGuard) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "info":
        return _info(args)
    if args.command == "fetch-sample":
        from .sample_data import fetch_sample

        print(fetch_sample(args.name, Path(args.cache_dir) if args.cache_dir else None))
        return 0
    _import_torch(guard)
    if args.command == "rescore":
        return _rescore(args, guard)
    return _predict(args, guard)


def _import_torch(guard: SignalGuard) -> None:
    """Import torch with signals held back: its C++ start-up runs Python code, and the handler's
    exception raised there aborts the process (SIGABRT) instead of reaching ``main``; a signal that
    came during the import is raised right after it."""
    with guard.held():
        import torch  # noqa: F401


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


def _predict(args, guard: SignalGuard) -> int:
    from .inference.predictor import load_model
    from .io.output_plan import check_outputs

    src = _check_input(Path(args.input))
    cases = _batch_cases(src)
    if args.point is not None and cases is not None:
        raise _input_error("--point needs one CT (a file or a DICOM series folder), not a folder of cases.")
    if args.point is not None:
        from .inference.point import parse_point

        parse_point(args.point)  # a typo fails before the model loads
    spacing_mm = _model_spacing(args.model)
    if cases is None:
        outputs = check_outputs(_single_outputs(args, Path(args.output)), [src], args.overwrite)
        source = _dicom_source(src, outputs)
        _clean_stale(outputs)
        ct = _read_checked(src, spacing_mm)
        source = _match_source(source, ct)
        model = load_model(args.model, args.device)
        _run_case(model, ct, src, outputs, args, guard, source)
        return 0
    out_dir = Path(args.output)
    for opt in ("report", "labelmap", "overlay", "dicom_seg", "dicom_sr"):
        if getattr(args, opt) not in (None, "auto"):
            raise _input_error(f"With a folder of cases, give --{opt.replace('_', '-')} without a path: files are named "
                               f"after each case in {out_dir}.")
    taken: dict = {}
    summary_path = check_outputs({"report": out_dir / BATCH_SUMMARY}, cases, True, taken)["report"]
    plans = [(case, check_outputs(_single_outputs(args, out_dir / f"{_case_name(case)}{OUTPUT_SUFFIX}", batch=True),
                                  cases, args.overwrite, taken)) for case in cases]
    sources = {case: _dicom_source(case, outputs) for case, outputs in plans}
    _clean_stale({"summary": summary_path})
    model = load_model(args.model, args.device)
    failures, summary = 0, []
    for case, outputs in plans:
        name = _case_name(case)
        try:
            ct = _read_checked(case, spacing_mm)
            result = _run_case(model, ct, case, outputs, args, guard, _match_source(sources[case], ct))
            summary.append({"case": name, "status": "ok", "n_lesions": len(result.lesions)})
        except BoneMetSegCancelled:
            raise
        except BoneMetSegError as exc:
            failures += 1
            print(f"bonemetseg: case {name} failed: {exc}", file=sys.stderr)
            summary.append({"case": name, "status": "failed", "error": str(exc)})
    print(f"bonemetseg: {len(cases) - failures} of {len(cases)} case(s) done, {failures} failed", file=sys.stderr)
    _write_json_atomic(summary_path, {"cases": summary}, overwrite=True, guard=guard)
    return 1 if failures else 0


def _check_input(src: Path) -> Path:
    if not src.exists():
        raise _input_error(f"Input not found: {src}. Give a CT file, a DICOM series folder or a folder of cases.")
    if not (src.is_file() or src.is_dir()):
        raise _input_error(f"{src} is not a regular file or folder (a device, pipe or socket); give a CT file, "
                           "a DICOM series folder or a folder of cases.")
    return src


def _model_spacing(model_path) -> float:
    """The card's grid spacing (the card is read and checked here, before any CT or weights)."""
    from .inference.model_card import preprocess_config_from_card
    from .inference.weights import resolve_weights_paths

    return preprocess_config_from_card(resolve_weights_paths(model_path)[2]).spacing_mm


def _read_checked(src: Path, spacing_mm: float):
    """Read the CT and check that the model's grid of it fits the memory budget."""
    from .io.read import read_ct
    from .preprocessing.resample import check_resampled_size

    t0 = time.perf_counter()
    ct = read_ct(src)
    ct.info["read_s"] = time.perf_counter() - t0
    check_resampled_size(ct.image.GetSize(), ct.image.GetSpacing(), spacing_mm, str(src))
    return ct


def _clean_stale(outputs: dict) -> None:
    """Remove temporary files that a killed run (kill -9) left in the output folders."""
    from .io.atomic import clean_stale_temps

    for folder in {Path(p).parent for p in outputs.values()}:
        clean_stale_temps(folder)


def _dicom_source(src: Path, outputs: dict):
    """The source series' headers when a DICOM SEG/SR is asked for (refused before inference when
    the input is not a DICOM series or lacks UIDs); else None."""
    wanted = [OPTION_NAMES[k] for k in ("dicom_seg", "dicom_sr") if k in outputs]
    if not wanted:
        return None
    if "dicom_sr" in outputs and "dicom_seg" not in outputs:
        raise _input_error("--dicom-sr needs --dicom-seg: the SR's lesion groups reference the SEG's segments.")
    from .io.dicom_source import dicom_source

    return dicom_source(src, "/".join(wanted))


def _match_source(source, ct):
    """``source`` ordered by the CT's slices (refused before inference when they do not match)."""
    if source is None:
        return None
    from .io.dicom_source import match_to_image

    return match_to_image(source, ct.image)


def _run_case(model, ct, src: Path, outputs: dict, args, guard: SignalGuard, source=None):
    progress = _Progress(args.progress, _case_name(src))
    try:
        tile = (args.tile,) * 3 if args.tile else None
        if args.progress != "lines":
            for w in ct.warnings:
                print(f"bonemetseg: warning: {w}", file=sys.stderr)
        if args.point is not None:
            from .inference.point import POINT_THRESHOLD, parse_point, predict_at_point

            result = predict_at_point(
                model, ct, parse_point(args.point), origin_threshold=args.origin_threshold,
                threshold=POINT_THRESHOLD if args.threshold is None else args.threshold,
                progress=progress, cancel=guard.cancel,
            )
        else:
            result = model.predict(
                ct, progress=progress, cancel=guard.cancel, threshold=args.threshold,
                origin_threshold=args.origin_threshold, tile=tile,
            )
        result.input["path"] = str(src)
        result.timing_s["read"] = ct.info.get("read_s", result.timing_s["read"])
        progress(1.0, "Writing outputs")
        outputs = _write_outputs(ct, result, outputs, args.overwrite, guard, source)
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


def _write_outputs(ct, result, outputs: dict, overwrite: bool, guard: SignalGuard, source=None) -> dict:
    """Every output of the case into temporary files, then all renamed together (or none); returns
    the outputs written (no DICOM SEG without lesions: a SEG needs a segment)."""
    from .io.atomic import atomic_group
    from .io.dicom_out import outputs_for, save_dicom_outputs
    from .io.write_labelmap import save_labelmap
    from .io.write_seg import save_seg_nrrd
    from .overlay import save_overlay_png
    from .io.write_report import save_report
    from .report import build_report

    if source is not None:
        outputs = outputs_for(result, outputs)
        if "dicom_seg" not in outputs:
            print("bonemetseg: warning: no lesion found; no DICOM SEG written (a SEG needs a segment), "
                  "the DICOM SR records the verdict 'none'.", file=sys.stderr)
    with atomic_group(outputs, overwrite, commit_guard=guard.held()) as tmp:
        t0 = time.perf_counter()
        save_seg_nrrd(result, tmp["seg"])
        if source is not None:  # same values as the JSON report (timings are not in the SR)
            save_dicom_outputs(result, source, tmp, build_report(result))
        if "labelmap" in outputs:
            save_labelmap(result, tmp["labelmap"], shown_as=outputs["labelmap"])
        if "overlay" in outputs:
            save_overlay_png(ct.image, result, tmp["overlay"])
        result.timing_s["write"] = time.perf_counter() - t0
        result.timing_s["total"] = sum(result.timing_s[k] for k in ("read", "preprocess", "inference", "postprocess", "write"))
        if "report" in outputs:
            save_report(result, tmp["report"])
    return outputs


def _rescore(args, guard: SignalGuard) -> int:
    """Score the labels of an (edited) instance labelmap; write the report (and DICOM) atomically."""
    from .inference.device import describe_device
    from .inference.predictor import load_model
    from .inference.rescore import score_labelmap
    from .io.output_plan import check_outputs
    from .io.read import read_image_file
    from .postprocess.lesions import patient_summary
    from .result import Result

    src = _check_input(Path(args.input))
    labels_path = Path(args.labels)
    if not labels_path.is_file():
        raise _input_error(f"Labelmap not found: {labels_path}. Give the instance labelmap file (.nii.gz, .nrrd).")
    only = None
    if args.only:
        try:
            only = [int(v) for v in args.only.split(",")]
        except ValueError:
            raise _input_error(f"--only must be comma-separated label values, got {args.only!r}.") from None
    spacing_mm = _model_spacing(args.model)
    wanted = {"report": Path(args.report)}
    wanted.update({k: Path(getattr(args, k)) for k in ("dicom_seg", "dicom_sr") if getattr(args, k)})
    outputs = check_outputs(wanted, [src, labels_path], args.overwrite)
    source = _dicom_source(src, outputs)
    _clean_stale(outputs)
    ct = _read_checked(src, spacing_mm)
    source = _match_source(source, ct)
    labelmap = read_image_file(labels_path)
    model = load_model(args.model, args.device)
    scores = score_labelmap(model, ct, labelmap, labels=only, origin_threshold=args.origin_threshold)
    # the report numbers the scored lesions 1..N (with --only, a subset of the labels present)
    lesions = [replace(rec, id=i, segment_id=segment_id(i)) for i, rec in enumerate(scores.values(), start=1)]
    result = Result(labelmap=labelmap, lesions=lesions, patient=patient_summary(lesions, args.origin_threshold),
                    device=describe_device(model.device), model=model.model_info,
                    input={"path": str(args.input), "labels": str(labels_path), "size": list(ct.image.GetSize()),
                           "spacing": [float(s) for s in ct.image.GetSpacing()]},
                    settings={"origin_threshold": float(args.origin_threshold)})
    _write_rescore(result, source, outputs, args.overwrite, guard)
    print(f"{labels_path.name}: scored {len(lesions)} label(s); wrote {outputs['report']}", file=sys.stderr)
    return 0


def _write_rescore(result, source, outputs: dict, overwrite: bool, guard: SignalGuard) -> None:
    """The report of the scored masks, with the DICOM SEG of the masks and the SR of their scores
    when the input is a DICOM series and they were asked for; all or none."""
    import SimpleITK as sitk

    from .io.atomic import atomic_group
    from .io.dicom_out import outputs_for, save_dicom_outputs
    from .io.write_report import save_report

    if source is not None:
        if result.labelmap.GetPixelID() != sitk.sitkUInt16:
            result.labelmap = sitk.Cast(result.labelmap, sitk.sitkUInt16)
        outputs = outputs_for(result, outputs)
    with atomic_group(outputs, overwrite, commit_guard=guard.held()) as tmp:
        report = save_report(result, tmp["report"])
        if source is not None:  # given (drawn/edited) masks, scored by the model
            save_dicom_outputs(result, source, tmp, report,
                               algorithm_types=dict.fromkeys((rec.id for rec in result.lesions), ALGORITHM_SEMIAUTOMATIC))


def _single_outputs(args, seg: Path, batch: bool = False) -> dict:
    if not str(seg).endswith(OUTPUT_SUFFIX):
        raise _input_error(f"The output must end in {OUTPUT_SUFFIX} (got {seg}).")
    stem = str(seg)[: -len(OUTPUT_SUFFIX)]
    auto = {"report": stem + ".json", "labelmap": stem + ".nii.gz", "overlay": stem + ".png",
            "dicom_seg": stem + "_seg.dcm", "dicom_sr": stem + "_sr.dcm"}
    out = {"seg": seg}
    for key, default in auto.items():
        value = getattr(args, key)
        if batch and key == "report" and value is None:
            value = "auto"  # a batch always writes a report per case
        if value is not None:
            out[key] = Path(default if value == "auto" else value)
    return out


def _batch_cases(src: Path):
    """None for a single case (file or DICOM folder), else the list of case paths in the folder."""
    if src.is_file():
        return None
    entries = sorted(src.iterdir())
    if any(e.is_file() and has_dicom_preamble(e) for e in entries):
        return None
    cases = [e for e in entries if (e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES)) or e.is_dir()]
    cases = [c for c in cases if not c.name.lower().endswith(".seg.nrrd")]
    if not cases:
        raise _input_error(f"{src} holds no DICOM files and no CT files ({', '.join(IMAGE_SUFFIXES)}).")
    return cases


def _case_name(path: Path) -> str:
    name = path.name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _write_json_atomic(path: Path, data: dict, overwrite: bool, guard: SignalGuard) -> None:
    from .io.atomic import atomic_group

    with atomic_group({"json": path}, overwrite, commit_guard=guard.held()) as tmp:
        tmp["json"].write_text(json.dumps(data, indent=2, allow_nan=False))


def _input_error(msg: str):
    from .errors import BoneMetSegInputError

    return BoneMetSegInputError(msg)


if __name__ == "__main__":
    sys.exit(main())

"""Human-readable parts of the evaluation report: ``report.md``, ``froc.png`` and ``roc.png``.

All three are drawn from the JSON report of ``training.evaluate`` (NaN already turned into
null), so what the pictures and the text say is exactly what the JSON holds.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


FROC_MAX_FP = 8.0  # right edge of the FROC plot (FP per case)


def _f(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ci(block: dict) -> str:
    ci = block.get("auc_ci95") or {}
    return f"{_f(block.get('auc'))} ({_f(ci.get('low'))} to {_f(ci.get('high'))})"


def write_markdown(report: dict, path: Path) -> None:
    """The report as Markdown tables."""
    m, seg, det = report["model"], report["segmentation"], report["detection"]
    cls, data, st = report["classification"], report["data"], report["settings"]
    lines = [
        f"# Evaluation of {m['name']} {m['version']}",
        "",
        f"Model `{m['path']}` (sha256 `{m.get('sha256', '')[:12]}`), detection threshold "
        f"{m['detection_threshold']:g}; data `{data['path']}`: {data['n_cases']} cases, {data['n_patients']} "
        f"patients, {data['n_lesions']} true lesions. Definitions: docs/evaluation.md.",
        "",
        "## Voxel segmentation (at the detection threshold)",
        "",
        "| | DSC | sensitivity | specificity |",
        "| --- | --- | --- | --- |",
        "| mean of cases | " + " | ".join(_f(seg["per_case_mean"][k]) for k in ("dsc", "sensitivity", "specificity"))
        + " |",
        "| pooled voxels | " + " | ".join(_f(seg["pooled"][k]) for k in ("dsc", "sensitivity", "specificity")) + " |",
        "",
        f"## Lesion detection (hit: {st['hit_rule']})",
        "",
        "| FP per case | " + " | ".join(det["sensitivity_at_fp"]) + " |",
        "| --- |" + " --- |" * len(det["sensitivity_at_fp"]),
        "| sensitivity | " + " | ".join(_f(v) for v in det["sensitivity_at_fp"].values()) + " |",
        "",
        f"At the detection threshold: {det['at_detection_threshold']['hits']} of "
        f"{det['at_detection_threshold']['n_truth']} lesions found, "
        f"{_f(det['at_detection_threshold']['fp_per_case'], 2)} false positives per case. FROC: `froc.png`.",
        "",
        *_group_lines(det.get("by_group")),
        "## Origin classification (lung = positive)",
        "",
        "| level | n (lung/other) | AUC (95% CI, patient bootstrap) | accuracy | sensitivity | specificity | F1 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for level in ("lesion", "patient"):
        b = cls[level]
        if b.get("n"):
            lines.append(f"| {level} | {b['n']} ({b['n_lung']}/{b['n_other']}) | {_ci(b)} | {_f(b['accuracy'])} | "
                         f"{_f(b['sensitivity'])} | {_f(b['specificity'])} | {_f(b['f1'])} |")
        else:
            lines.append(f"| {level} | 0 | n/a | n/a | n/a | n/a | n/a |")
    lines += ["", f"Lesions: only true lesions found at the detection threshold are classified "
              f"({cls['lesion']['n_true_lesions_not_found']} not found). Patients: "
              f"{cls['patient']['n_without_prediction']} without any predicted lesion and "
              f"{cls['patient']['n_mixed_truth']} with lesions of both origins are left out. ROC: `roc.png`.", ""]
    blds = report.get("blds")
    if blds:
        lines += ["## Real lesions: BLDS patches (boxes only)", "",
                  f"**{blds['summary']}.** At the detection threshold: "
                  f"{blds['at_detection_threshold']['hits']} of {blds['n_lesions']} found, "
                  f"{blds['at_detection_threshold']['false_positives']} false positives in all.", "",
                  "| patch | true lesions | hits | false positives |", "| --- | --- | --- | --- |"]
        lines += [f"| {p['patch']} | {p['n_true']} | {p['hits']} | {p['false_positives']} |" for p in blds["patches"]]
        rows = blds_lesion_lines(blds["patches"])
        if rows:
            lines += [""] + rows
        lines.append("")
    lines += ["## Cases", "", "| case | patient | true | predicted | hits | FP | DSC | seconds |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {c['case_id']} | {c['patient_id']} | {c['n_true']} | {c['n_predicted']} | {c['hits']} | "
              f"{c['false_positives']} | {_f(c['dsc'])} | {c['seconds']} |" for c in report["cases"]]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def blds_lesion_lines(patches: list) -> list[str]:
    """The BLDS per-lesion table (score, rank and false positives above it) of ``evaluate_blds``'s
    patches; no lines when they hold no lesion rows."""
    rows = [les for p in patches for les in p.get("lesions", [])]
    if not rows:
        return []
    return (["| lesion | best hit score | rank in its patch | false positives scoring as high |",
             "| --- | --- | --- | --- |"]
            + [f"| {r['lesion']} | {_f(r['score'])} | {r['rank'] or '-'} | "
               f"{'-' if r['false_positives_above'] is None else r['false_positives_above']} |" for r in rows])


def _group_lines(by_group: dict | None) -> list[str]:
    """Detection by lesion size and kind (older reports have none)."""
    if not by_group:
        return []
    t1 = by_group["threshold_1fp"]
    lines = ["### Found lesions by size (equivalent diameter), contrast to their bone, kind, site and form", "",
             f"At the detection threshold, and at the <= 1 FP/case operating point of this data set "
             f"(score >= {_f(t1) if t1 is not None else 'n/a'}).", "",
             "| lesions | n | found at detection threshold | found at <= 1 FP/case |", "| --- | --- | --- | --- |"]
    for name, b in by_group["groups"].items():
        if b["n"]:
            lines.append(f"| {name} | {b['n']} | {b['found_at_detection_threshold']} ({_f(b['sensitivity_at_detection_threshold'], 2)}) "
                         f"| {b['found_at_1fp']} ({_f(b['sensitivity_at_1fp'], 2)}) |")
    return lines + [""]


def _figure() -> tuple:
    fig = Figure(figsize=(6.0, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def write_froc_png(report: dict, path: Path) -> None:
    """FROC curves: the data set (FP per case) and the BLDS patches (FP per patch)."""
    fig, ax = _figure()
    curves = [("data set", report["detection"]["curve"])]
    if report.get("blds"):
        curves.append(("BLDS real lesions", report["blds"]["curve"]))
    for name, curve in curves:
        sens = [0.0 if s is None else s for s in curve["sensitivity"]]
        ax.step(curve["fp_per_case"], sens, where="post", label=f"{name} ({curve['n_truth']} lesions)")
    for rate in report["detection"]["sensitivity_at_fp"]:
        ax.axvline(float(rate), color="0.85", lw=0.8, zorder=0)
    ax.set_xlim(0.0, FROC_MAX_FP)
    ax.set_xlabel("false positives per case (per patch for BLDS)")
    ax.set_ylabel("lesion sensitivity")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="lower right")
    ax.set_title("FROC")
    fig.tight_layout()
    fig.savefig(str(path), format="png")


def write_roc_png(report: dict, path: Path) -> None:
    """ROC curves of the origin classification (lung positive), per lesion and per patient."""
    fig, ax = _figure()
    for level in ("lesion", "patient"):
        block = report["classification"][level]
        if block.get("auc") is not None:  # both origins present
            ax.plot(block["roc"]["fpr"], block["roc"]["tpr"], drawstyle="default", marker=".",
                    label=f"{level}: AUC {_ci(block)}, n={block['n']}")
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
    ax.set_xlabel("1 - specificity (other called lung)")
    ax.set_ylabel("sensitivity (lung called lung)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "AUC undefined: no classified lesions of both origins", ha="center")
    ax.set_title("Origin ROC (lung = positive)")
    fig.tight_layout()
    fig.savefig(str(path), format="png")


__all__ = ["write_markdown", "write_froc_png", "write_roc_png"]

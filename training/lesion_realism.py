"""Do the generator's lesions look like real bone metastases? A side-by-side measurement.

    python -m training.lesion_realism [--blds DIR] [--patients N] [--out-md docs/lesion_realism.md]
                                      [--out-png docs/images/lesion_realism.png] [--json F]

The same statistics (``training.lesion_measures``: contrast to the local cancellous bone, size,
edge sharpness, fine texture inside and around, the scan's noise level and correlation) are
measured on the real BLDS dev lesions (from their boxes; they have no masks) and on generated
lesions (from the box of their label) of every generator setting (``easy``, ``default``,
``realistic``) in the training hosts.

Shapes need masks: generated lesions give PCA axis ratios and voxel-face sphericity, shown
against the published ULS23 figures (697 radiologist masks of bone lesions) in ``ULS23``.
The report exits 1 when a real value lies outside the 5-95 % range of the ``realistic``
setting (the generator that the training mixes use to cover real lesions), 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from BoneMetSegLib.io.atomic import atomic_write

from .augment import augment_intensity
from .config import load_augment
from .evaluate import DEFAULT_BLDS, read_blds
from .hosts import load_host
from .lesion_measures import around_box, box_statistics, mask_shape, noise_statistics
from .real_patches import box_to_voxels
from .synthetic import SyntheticConfig, plant_lesions

REPO = Path(__file__).resolve().parents[1]
SETTINGS = ("easy", "default", "realistic")
CHECKED_SETTING = "realistic"
BOX_STATS = ("contrast_hu", "max_side_mm", "edge_sigma_mm", "core_texture_hu", "shell_texture_hu")
SCAN_STATS = ("noise_hu", "noise_corr_vox")
CHECKED_STATS = BOX_STATS + SCAN_STATS
# Published reference figures (issue 11): ULS23 Radboudumc bone set, 697 masks of 151 patients.
ULS23 = {
    "volume_mm3": {"p10": 213, "p50": 1688, "p90": 13169},
    "largest_extent_mm": {"p10": 9.9, "p50": 21.0, "p90": 45.5},
    "axis_ratio_2_1": {"p10": 0.53, "p50": 0.75},
    "axis_ratio_3_1": {"p10": 0.29, "p50": 0.55},
    "sphericity": {"p10": 0.40, "p50": 0.52, "p90": 0.61},
}
WINDOW = dict(cmap="gray", vmin=-450, vmax=1050, interpolation="nearest")  # L300 / W1500


# ----------------------------------------------------------------------------- lesions


def real_lesions(blds_dir: Path) -> list[dict]:
    """Box statistics and crops of the real BLDS dev lesions."""
    rows = []
    for name, boxes in sorted(read_blds(blds_dir).items()):
        img = sitk.ReadImage(str(Path(blds_dir) / name), sitk.sitkFloat32)
        arr = sitk.GetArrayFromImage(img)
        scan = noise_statistics(arr)
        for k, box in enumerate(boxes):
            zyx = box_to_voxels(img, box)
            lo, hi = zyx[:3], zyx[3:]
            rows.append({"name": f"{name.split('.')[0]}.{k + 1}", "setting": "real",
                         "kind": "real", "site": "", **box_statistics(arr, lo, hi), **scan,
                         "crop": crops(arr, (lo + hi) / 2, (lo, hi))})
    return rows


def generated_lesions(setting: str, hosts: list, n_patients: int, augment, seed: int = 0) -> list[dict]:
    """Box statistics, shapes and crops of generated lesions of one setting. The box statistics
    are measured on the lesion's crop and the noise on a 96^3 crop of the host, each after the
    training recipe's intensity augmentation (``augment``: an ``AugmentConfig``; its own draw),
    so they describe what the network sees."""
    cfg = SyntheticConfig.preset(setting)
    rows = []
    rng = np.random.default_rng(seed)
    for h, host in enumerate(hosts):
        c = [n // 2 for n in host.shape]
        scan = host.image_hu[tuple(slice(max(0, k - 48), k + 48) for k in c)]
        for p in range(n_patients):
            image, labels, lesions = plant_lesions(host, None, [seed, h, p], cfg)
            for les in lesions:
                box, box_lo, box_hi = around_box(les["bbox"], image.shape)
                lo, hi = np.array(les["bbox"][:3], float), np.array(les["bbox"][3:], float)
                rows.append({"name": f"{host.name}.{p}.{les['label']}", "setting": setting,
                             "kind": les["kind"], "site": les["site"],
                             "form": les.get("form", "plain"),
                             **box_statistics(augment_intensity(image[box], augment, rng), box_lo, box_hi),
                             **noise_statistics(augment_intensity(scan, augment, rng)),
                             **mask_shape(labels[box] == les["label"]),
                             "crop": crops(image, (lo + hi) / 2, (lo, hi))})
    return rows


def crops(image_hu: np.ndarray, centre, box, half: int = 24) -> dict:
    """Axial and coronal 48 mm crops through ``centre`` (padded with -1000), with the box. The
    crops are copies: a view would keep the whole image alive (one per lesion row)."""
    c = np.round(centre).astype(int)
    region = tuple(slice(max(0, k - half), min(n, k + half + 1)) for k, n in zip(c, image_hu.shape))
    before = [half - (k - r.start) for k, r in zip(c, region)]  # -1000 where the cube leaves the image
    after = [2 * half + 1 - (r.stop - r.start) - b for r, b in zip(region, before)]
    cube = np.pad(image_hu[region], list(zip(before, after)), constant_values=-1000)  # centre at half
    return {"axial": cube[half, :2 * half, :2 * half].copy(),
            "coronal": cube[:2 * half, half, :2 * half].copy(),
            "box": (np.asarray(box[0]) - c + half, np.asarray(box[1]) - c + half)}


# ----------------------------------------------------------------------------- report


def percentiles(values) -> dict:
    v = np.array([x for x in values if np.isfinite(x)], float)
    if not len(v):
        return {"n": 0}
    p = np.percentile(v, [5, 50, 95])
    return {"n": int(len(v)), "p5": float(p[0]), "p50": float(p[1]), "p95": float(p[2])}


def coverage(real: list, generated: list) -> list[str]:
    """Real values outside the 5-95 % range of the generated ones: one line each."""
    problems = []
    for stat in CHECKED_STATS:
        rng = percentiles(r[stat] for r in generated)
        for r in real:
            v = r[stat]
            if rng["n"] and np.isfinite(v) and not rng["p5"] <= v <= rng["p95"]:
                problems.append(f"{r['name']} {stat} {v:.1f} outside the generated 5-95 % range "
                                f"{rng['p5']:.1f}..{rng['p95']:.1f}")
    return problems


def markdown(real: list, generated: dict, problems: list, command: str) -> str:
    fmt = lambda v: "-" if not np.isfinite(v) else f"{v:.0f}" if abs(v) >= 10 else f"{v:.1f}"
    lines = ["# Lesion realism: real BLDS dev lesions beside generated ones", "",
             f"Made by `{command}` (`training/lesion_realism.py`; statistics defined in "
             "`training/lesion_measures.py`). "
             "Picture: `images/lesion_realism.png`.", "",
             "## Real lesions (BLDS dev, from their boxes)", "",
             "| lesion | " + " | ".join(CHECKED_STATS) + " |",
             "| --- |" + " --- |" * len(CHECKED_STATS)]
    for r in real:
        lines.append(f"| {r['name']} | " + " | ".join(fmt(r[s]) for s in CHECKED_STATS) + " |")
    lines += ["", "## Generated lesions: 5 / 50 / 95 % percentiles by setting and kind", "",
              "| setting | kind | n | " + " | ".join(CHECKED_STATS) + " |",
              "| --- | --- | --- |" + " --- |" * len(CHECKED_STATS)]
    for setting, rows in generated.items():
        for kind in ("all", "lytic", "blastic", "mixed"):
            sel = [r for r in rows if kind == "all" or r["kind"] == kind]
            if not sel:
                continue
            cells = []
            for s in CHECKED_STATS:
                p = percentiles(r[s] for r in sel)
                cells.append("-" if not p["n"] else
                             f"{fmt(p['p5'])} / {fmt(p['p50'])} / {fmt(p['p95'])}")
            lines.append(f"| {setting} | {kind} | {len(sel)} | " + " | ".join(cells) + " |")
    lines += ["", "## Shapes (generated masks) against ULS23 (697 radiologist masks)", "",
              "| setting | " + " | ".join(ULS23) + " |", "| --- |" + " --- |" * len(ULS23)]
    uls = " | ".join(" / ".join(f"{v:g}" for v in ULS23[k].values()) for k in ULS23)
    lines.append(f"| ULS23 (p10 / p50 / p90) | {uls} |")
    for setting, rows in generated.items():
        cells = []
        for k in ULS23:
            v = np.array([r[k] for r in rows])
            cells.append(" / ".join(f"{x:.3g}" for x in np.percentile(v, [10, 50, 90])))
        lines.append(f"| {setting} (p10 / p50 / p90) | " + " | ".join(cells) + " |")
    lines += ["", "## Sites and forms", ""]
    for setting, rows in generated.items():
        sites = {}
        for r in rows:
            key = r["site"] + ("" if r.get("form", "plain") == "plain" else f" ({r['form']})")
            sites[key] = sites.get(key, 0) + 1
        lines.append(f"- {setting}: " + ", ".join(f"{k} {v}" for k, v in sorted(sites.items())))
    lines += ["- real (BLDS dev): lumbar body under the endplate, thoracic pedicle / posterior "
              "body, posterior rib (expansile, rimmed), rib head (ring-like), iliac crest, ilium "
              "against the medial cortex", "", f"## Coverage of the real lesions by `{CHECKED_SETTING}`",
              ""]
    lines += ([f"- {p}" for p in problems] if problems else
              ["Every real value lies inside the generated 5-95 % range."])
    return "\n".join(lines) + "\n"


def picture(real: list, generated: list, path: Path, n_generated: int = 6, seed: int = 0) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    rng = np.random.default_rng(seed)
    pick = [generated[i] for i in sorted(rng.choice(len(generated), min(n_generated, len(generated)),
                                                    replace=False))]
    cols = max(len(real), len(pick))
    fig, axes = plt.subplots(4, cols, figsize=(2.2 * cols, 9.2))
    for row, (group, view) in enumerate([(real, "axial"), (real, "coronal"), (pick, "axial"),
                                         (pick, "coronal")]):
        for col in range(cols):
            ax = axes[row, col]
            ax.set_xticks([]), ax.set_yticks([])
            if col >= len(group):
                ax.axis("off")
                continue
            r = group[col]
            ax.imshow(r["crop"][view], **WINDOW)
            lo, hi = r["crop"]["box"]
            a, b = (1, 2) if view == "axial" else (0, 2)  # rows, columns of the view
            ax.add_patch(Rectangle((lo[b] - 0.5, lo[a] - 0.5), hi[b] - lo[b], hi[a] - lo[a],
                                   fill=False, ec="red", lw=1))
            if view == "axial":
                label = r["name"] if r["setting"] == "real" else f"{r['kind']} {r['site']}"
                ax.set_title(f"{label}\n{r['contrast_hu']:+.0f} HU, {r['max_side_mm']:.0f} mm",
                             fontsize=8)
        axes[row, 0].set_ylabel(("real " if row < 2 else f"{CHECKED_SETTING} ") + view)
    fig.suptitle("Real BLDS dev lesions (rows 1-2) and generated lesions (rows 3-4), 48 mm crops, "
                 "L300/W1500, red = box; contrast = core minus cancellous bone around", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blds", default=str(DEFAULT_BLDS))
    parser.add_argument("--shared-data", default=str(DEFAULT_BLDS.parent))
    parser.add_argument("--hosts", default="abdomen,chest,lumbar")
    parser.add_argument("--patients", type=int, default=16, help="per host and setting")
    parser.add_argument("--config", default=str(REPO / "training" / "configs" / "cpu_long.yaml"),
                        help="training recipe whose intensity augmentation the noise includes")
    parser.add_argument("--out-md", default=str(REPO / "docs" / "lesion_realism.md"))
    parser.add_argument("--out-png", default=str(REPO / "docs" / "images" / "lesion_realism.png"))
    parser.add_argument("--settings", default=",".join(SETTINGS),
                        help=f"generator settings to measure (the check needs {CHECKED_SETTING})")
    parser.add_argument("--json", default=None, help="also write every measured row here")
    args = parser.parse_args(argv)
    blds = Path(args.blds)
    if not (blds / "lesions.csv").is_file():
        print(f"lesion_realism: error: {blds}/lesions.csv not found; give --blds DIR",
              file=sys.stderr)
        return 2
    real = real_lesions(blds)
    hosts = [load_host(h, shared_data=Path(args.shared_data)) for h in args.hosts.split(",")]
    augment = load_augment(args.config)
    settings = args.settings.split(",")
    if CHECKED_SETTING not in settings:
        print(f"lesion_realism: error: --settings must include {CHECKED_SETTING}", file=sys.stderr)
        return 2
    generated = {s: generated_lesions(s, hosts, args.patients, augment) for s in settings}
    problems = coverage(real, generated[CHECKED_SETTING])
    command = "python -m training.lesion_realism" + (
        f" --patients {args.patients}" if args.patients != parser.get_default("patients") else "") + (
        f" --config {args.config}" if Path(args.config).name != Path(parser.get_default("config")).name else "")
    text = markdown(real, generated, problems, command)
    print(text)
    with atomic_write(Path(args.out_md), overwrite=True) as tmp:
        Path(tmp).write_text(text)
    picture(real, generated[CHECKED_SETTING], Path(args.out_png))
    if args.json:
        rows = [{k: v for k, v in r.items() if k != "crop"}
                for r in real + [r for rows in generated.values() for r in rows]]
        with atomic_write(Path(args.json), overwrite=True) as tmp:
            Path(tmp).write_text(json.dumps(rows, indent=1))
    if problems:
        print(f"lesion_realism: {len(problems)} real value(s) outside the generated range",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

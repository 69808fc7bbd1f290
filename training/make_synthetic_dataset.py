"""Write synthetic training/evaluation cases (format A) from one real host CT.

    python -m training.make_synthetic_dataset --host NAME --cases N --seed S --out DIR
                                              [--setting default|easy|realistic|faint] [--crop MM]

``NAME``: a host of ``training.hosts.load_host`` ("abdomen", "chest", "lumbar", a CT file or
DICOM folder), or "heldout": the TotalSegmentator DICOM series
(``shared/data/totalsegmentator-example/ct_dicom_series``), the real CT kept out of training
(with its TotalSegmentator bone labels: host "dicom" of ``training.hosts``).
Case ``i`` is one synthetic patient (``training.synthetic.plant_lesions``) drawn with the seed
``(S, i)``, so a case does not depend on how many others are made. ``--crop MM`` cuts each case
to a cube of that size around a random bone voxel (small cases for tests and quick checks).
``--setting`` chooses the generator's preset (``SyntheticConfig.preset``; ``--easy`` is
``--setting easy``). The generator's settings and each lesion's kind, site, form, size and
measured contrast to its bone (``training.lesion_measures``, the definition the realism report
uses on real lesions) go to ``dataset.json`` (with those of the cases that earlier runs wrote into
the same folder; ``training.evaluate`` reports detection by kind, site and contrast from them).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from BoneMetSegLib.dataset import write_case
from BoneMetSegLib.dataset.format import DATASET_JSON
from BoneMetSegLib.io.atomic import atomic_write

from . import hosts
from .hosts import Host
from .lesion_measures import around_box, box_statistics
from .synthetic import PRESETS, SyntheticConfig, plant_lesions

HELD_OUT = "heldout"
DEFAULT_SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MAX_DRAWS = 10  # a crop without room for a lesion is drawn again
LESION_DETAILS = ("label", "origin", "kind", "site", "form", "radius_mm", "n_voxels", "contrast_hu",
                  "max_side_mm")


def resolve_host(name: str, shared_data: Path) -> Host:
    """``load_host`` plus the "heldout" alias for the labelled DICOM host ("dicom")."""
    return hosts.load_host("dicom" if name == HELD_OUT else name, shared_data=Path(shared_data))


def make_case(host: Host, seed: int, index: int, config: SyntheticConfig, crop_mm: int | None = None):
    """``(image, labels, lesions)`` of synthetic patient ``index``: HU image (int16) and UInt16
    labels with the host's (or the crop's) 1 mm geometry, and the planted lesion dicts (with
    their measured ``contrast_hu`` and ``max_side_mm``)."""
    rng = np.random.default_rng((seed, index))
    for _ in range(MAX_DRAWS):
        where = host if crop_mm is None else _random_crop(host, int(crop_mm), config, rng)
        image_hu, labels, lesions = plant_lesions(where, rng=rng, config=config)
        if lesions:
            for les in lesions:
                les.update(_measures(image_hu, les["bbox"]))
            image = sitk.GetImageFromArray(np.clip(np.round(image_hu), -32768, 32767).astype(np.int16))
            image.CopyInformation(where.grid)
            label_image = sitk.GetImageFromArray(labels)
            label_image.CopyInformation(where.grid)
            return image, label_image, lesions
    raise RuntimeError(f"no room for a lesion in {MAX_DRAWS} draws on host '{host.name}' "
                       f"(crop {crop_mm} mm); use a larger --crop")


def make_dataset(host: Host, n_cases: int, seed: int, out: Path, config: SyntheticConfig,
                 crop_mm: int | None = None, config_name: str = "default") -> list[Path]:
    """Write ``n_cases`` cases ``<host>-<seed>-<i>`` and ``dataset.json`` into ``out``."""
    out = Path(out)
    written, details = [], {}
    for i in range(n_cases):
        case_id = f"{host.name}-{seed}-{i:04d}"
        image, labels, lesions = make_case(host, seed, i, config, crop_mm)
        written.append(write_case(out, case_id, image, labels, {les["label"]: les["origin"] for les in lesions}))
        details[case_id] = [{k: les[k] for k in LESION_DETAILS} for les in lesions]
    details = {**_earlier_cases(out / DATASET_JSON), **details}
    meta = {
        "name": f"synthetic-{host.name}-{seed}",
        "description": (f"{n_cases} synthetic patients: lesions planted in real bone of host '{host.name}' "
                        f"(training.synthetic, {config_name} settings, seed {seed}"
                        + (f", {crop_mm} mm crops" if crop_mm else "") + "). Origins are synthetic."),
        "generator": {"host": host.name, "seed": seed, "crop_mm": crop_mm, "config": config.to_dict(),
                      "cases": details},
    }
    with atomic_write(out / DATASET_JSON, overwrite=True) as tmp:
        tmp.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return written


def _measures(image_hu: np.ndarray, bbox) -> dict:
    """Contrast to the surrounding cancellous bone and largest side of a planted lesion's box,
    measured on a crop around it (``training.lesion_measures.box_statistics``)."""
    box, lo, hi = around_box(bbox, image_hu.shape)
    stats = box_statistics(image_hu[box], lo, hi)
    return {"contrast_hu": round(float(stats["contrast_hu"]), 1),
            "max_side_mm": round(float(stats["max_side_mm"]), 1)}


def _earlier_cases(path: Path) -> dict:
    """Lesion details of the cases an earlier run wrote into the same folder (kept with them)."""
    try:
        return dict(json.loads(path.read_text(encoding="utf-8"))["generator"]["cases"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _random_crop(host: Host, size: int, config: SyntheticConfig, rng: np.random.Generator) -> Host:
    """A ``size``^3 sub-host centred on a random voxel of a site the config plants lesions in."""
    sites = [s for s in host.sites_present() if config.site_weights.get(s, 0.0) > 0]
    if not sites:
        raise ValueError(f"host '{host.name}' has no bone in any site of the generator's site_weights")
    flat = np.concatenate([host.site_voxels(s) for s in sites])
    centre = np.unravel_index(flat[rng.integers(flat.size)], host.shape)
    start = [int(np.clip(c - size // 2, 0, max(0, n - size))) for c, n in zip(centre, host.shape)]
    return host.crop(tuple(start), (size, size, size))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True, help="abdomen, chest, lumbar, heldout, or a CT file/DICOM folder")
    parser.add_argument("--cases", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", required=True, help="data set folder (created; existing cases are kept)")
    parser.add_argument("--setting", choices=sorted(PRESETS), default="default",
                        help="generator preset (SyntheticConfig.preset)")
    parser.add_argument("--easy", action="store_true", help="the same as --setting easy")
    parser.add_argument("--crop", type=int, help="cut each case to a cube of this many mm around bone")
    parser.add_argument("--shared-data", default=str(DEFAULT_SHARED_DATA))
    args = parser.parse_args(argv)
    setting = "easy" if args.easy else args.setting
    host = resolve_host(args.host, Path(args.shared_data))
    paths = make_dataset(host, args.cases, args.seed, Path(args.out), SyntheticConfig.preset(setting),
                         args.crop, setting)
    print(f"wrote {len(paths)} case(s) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

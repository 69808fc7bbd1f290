"""Check a training data set folder (format A) and print every problem.

    python -m training.validate_dataset DATASET_DIR

Exit code: 0 valid, 1 problems found (listed), 2 the folder cannot be read.
"""

from __future__ import annotations

import argparse
import sys

from BoneMetSegLib.dataset import DatasetError, list_cases, validate_dataset


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset_dir")
    args = parser.parse_args(argv)
    notes: list = []
    try:
        problems = validate_dataset(args.dataset_dir, notes=notes)
        n_cases = len(list_cases(args.dataset_dir))
    except (DatasetError, OSError) as exc:
        print(f"validate_dataset: error: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"note: {note}")
    for problem in problems:
        print(f"problem: {problem}")
    if problems:
        print(f"{len(problems)} problem(s) in {n_cases} case(s): fix them before training.")
        return 1
    print(f"{args.dataset_dir}: {n_cases} valid case(s).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

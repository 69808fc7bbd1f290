"""Shared pytest fixtures: where the real CT data lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``../shared/data`` beside the repository (or $BONEMETSEG_SHARED_DATA)."""
    env = os.environ.get("BONEMETSEG_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not (path / "README.md").is_file():
        pytest.fail(
            f"Real CT test data not found at {path}. Put the project's shared/ folder beside the "
            "repository or set BONEMETSEG_SHARED_DATA to its data/ folder.",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def abdomen_host(shared_data):
    """The real TotalSegmentator example CT on the 1 mm grid, with its bone mask (training host)."""
    from training.hosts import load_abdomen_host

    return load_abdomen_host(shared_data)


@pytest.fixture(scope="session")
def lesion_case(abdomen_host, tmp_path_factory):
    """A held-out synthetic case (seed never used in training): a 128^3 real-CT crop holding one
    large lesion, written as NIfTI with its true geometry; plus the lesion's true LPS box."""
    import numpy as np

    from training.engine import synthetic_cases
    from training.smoke import write_case_crop
    from training.synthetic import SyntheticConfig

    case = synthetic_cases([abdomen_host], 1, seed=4242, synth=SyntheticConfig.easy())[0]
    lesion = case.lesions[0]
    path = tmp_path_factory.mktemp("lesion_case") / "case.nii.gz"
    image = write_case_crop(case, abdomen_host, lesion["center_zyx"], 128, path)
    z0, y0, x0, z1, y1, x1 = lesion["bbox"]
    grid = abdomen_host.grid
    corners = np.array([grid.TransformIndexToPhysicalPoint((int(x), int(y), int(z)))
                        for z in (z0, z1 - 1) for y in (y0, y1 - 1) for x in (x0, x1 - 1)])
    return {"path": path, "image": image, "lesion": lesion,
            "box_lps": (corners.min(axis=0), corners.max(axis=0))}

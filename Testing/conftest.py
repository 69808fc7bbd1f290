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

"""BoneMetSegLogic.dependencies: what the module asks to install on first use, and how."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from BoneMetSegLogic import dependencies as deps  # BoneMetSeg/ is on sys.path (conftest.py)

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_requirements_are_the_projects_dependencies():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch = [r for r in project if deps.parse_requirement(r).name == "torch"]
    assert torch == [deps.TORCH_REQUIREMENT]
    assert list(deps.REQUIREMENTS) == [r for r in project if r not in torch]


@pytest.mark.parametrize("text, name, minimum", [
    ("monai>=1.4", "monai", "1.4"), ("SimpleITK >= 2.3", "SimpleITK", "2.3"), ("tqdm", "tqdm", None),
])
def test_parse_requirement(text, name, minimum):
    req = deps.parse_requirement(text)
    assert (req.name, req.minimum) == (name, minimum)


@pytest.mark.parametrize("text", ["numpy<2", "torch==2.1", "", "monai>=", "a b"])
def test_parse_requirement_rejects_other_forms(text):
    with pytest.raises(ValueError, match="name>=version"):
        deps.parse_requirement(text)


@pytest.mark.parametrize("text, expected", [
    ("2.13.0+cpu", (2, 13, 0)), ("1.5rc1", (1, 5)), ("0.22.0", (0, 22, 0)), ("2.1.0.post2", (2, 1, 0)),
])
def test_version_tuple(text, expected):
    assert deps.version_tuple(text) == expected


def test_missing_requirements_reports_absent_and_too_old_in_order():
    installed = {"monai": None, "numpy": "1.23.5", "SimpleITK": "2.3", "slicerio": "1.4.0",
                 "highdicom": "0.28.2", "tqdm": "4.66.1", "matplotlib": "3.10.0rc1"}
    assert deps.missing_requirements(version_of=installed.get) == ["monai>=1.4", "numpy>=1.24"]
    installed.update(monai="1.4.0", numpy="2.1.3")
    assert deps.missing_requirements(version_of=installed.get) == []


def test_this_environment_has_everything():
    assert deps.missing_requirements() == []
    assert deps.torch_status() == "ok"
    assert deps.torch_importable()
    assert deps.missing_requirements(["bonemetseg-no-such-distribution>=1"]) == ["bonemetseg-no-such-distribution>=1"]


@pytest.mark.parametrize("version, status", [(None, "missing"), ("2.0.1", "too old"), ("2.1", "ok"),
                                             ("2.13.0+cpu", "ok")])
def test_torch_status(version, status):
    assert deps.torch_status(version_of=lambda name: version) == status


def test_torch_pin_pins_the_installed_torch():
    assert deps.torch_pin() == f"torch=={importlib.metadata.version('torch')}\n"
    with pytest.raises(RuntimeError, match="PyTorch extension"):
        deps.torch_pin(version_of=lambda name: None)


def test_pip_arguments_never_install_torch(tmp_path):
    constraints = tmp_path / "c.txt"
    assert deps.pip_install_arguments(["monai>=1.4"], constraints) == ["monai>=1.4", "-c", str(constraints)]
    for bad in (["monai>=1.4", "torch>=2.1"], ["Torch"]):
        with pytest.raises(ValueError, match="PyTorch extension"):
            deps.pip_install_arguments(bad, constraints)
    with pytest.raises(ValueError, match="Nothing"):
        deps.pip_install_arguments([], constraints)


def test_pip_accepts_the_arguments_and_keeps_torch(tmp_path):
    """What the widget hands to slicer.util.pip_install is valid pip syntax; the pin holds torch."""
    constraints = tmp_path / "torch-constraint.txt"
    constraints.write_text(deps.torch_pin())
    args = deps.pip_install_arguments(["numpy>=1.24", "SimpleITK>=2.3"], constraints)
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--disable-pip-version-check", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Would install" not in done.stdout  # all satisfied: nothing, torch included, is replaced
    constraints.write_text("torch==0.0.1\n")  # a pin that contradicts the installed torch is enforced
    cmd_torch = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--disable-pip-version-check",
                 "-c", str(constraints), "torch"]
    assert subprocess.run(cmd_torch, capture_output=True, text=True, timeout=120).returncode != 0


def test_describe_missing_says_what_happens():
    text = deps.describe_missing(["monai>=1.4"], "missing")
    assert "PyTorch extension" in text and "monai>=1.4" in text and "kept as it is" in text
    old = deps.describe_missing([], "too old")
    assert "does not change an existing PyTorch" in old and "monai" not in old
    assert deps.describe_missing([], "ok") == ""

"""training.device_check: the recipe's model trains and predicts on a device (here the CPU)."""

import math

import pytest

from training.config import REPO_ROOT, load_config
from training.device_check import check, main

TINY = REPO_ROOT / "training" / "configs" / "tiny.yaml"


def test_the_check_trains_on_a_patch_with_and_one_without_a_lesion_and_predicts_both(capsys):
    result = check(load_config(TINY), "cpu")
    assert math.isfinite(result["loss"]) and result["loss"] > 0
    assert len(result["detections"]) == 2  # one prediction per patch, the lesion-free one too
    assert main(["--config", str(TINY), "--device", "cpu"]) == 0
    assert "device check on cpu" in capsys.readouterr().out


def test_a_missing_recipe_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(tmp_path / "nope.yaml"), "--device", "cpu"])
    assert exit_info.value.code == 2 and "not found" in capsys.readouterr().err

"""Hard-negative mining (training.mine_negatives) and patches that hold the mined false positives."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from BoneMetSegLib.inference.predictor import load_model
from training.config import REPO_ROOT, ConfigError, load_config
from training.data_source import CaseSource, DataSourceError, read_hard_negatives
from training.hosts import Host, canonical_1mm
from training.mine_negatives import host_negatives
from training.patches import choose_patch_start

CONFIGS = REPO_ROOT / "training" / "configs"


def test_patches_hold_a_mined_false_positive():
    shape, size = (200, 220, 240), (64, 64, 64)
    labels = np.zeros(shape, np.uint16)
    bone = np.zeros(shape, bool)
    bone[100, 100, 100] = True
    centres = np.array([[30.0, 40.0, 50.0], [150.0, 160.0, 170.0]])
    rng = np.random.default_rng(0)
    held = [0, 0]
    for _ in range(200):
        start = np.array(choose_patch_start(shape, labels, [], size, rng, 0.0, bone, None, centres, 1.0))
        inside = [bool(np.all((c >= start + 15) & (c <= start + 49))) for c in centres]  # about the middle half
        assert any(inside)
        held = [h + i for h, i in zip(held, inside)]
    assert min(held) > 50  # both are used
    # without mined centres (or p_hard 0) the draws are the old ones: same random stream
    a = [choose_patch_start(shape, labels, [], size, np.random.default_rng(1), 0.0, bone) for _ in range(3)]
    b = [choose_patch_start(shape, labels, [], size, np.random.default_rng(1), 0.0, bone, None, centres, 0.0)
         for _ in range(3)]
    assert a == b and a[0] == (68, 68, 68)


def test_mined_centres_are_on_the_training_grid(lesion_case):
    """Treat the real CT crop with its planted lesion as a host without lesions: the lesion comes
    back as a 'false positive' whose voxel centre lies inside the lesion's box on that grid."""
    model = load_model(None, "cpu")
    grid = canonical_1mm(sitk.ReadImage(str(lesion_case["path"])))
    hu = sitk.GetArrayFromImage(grid).astype(np.float32)
    host = Host("crop", hu, hu > 200, grid)
    found = host_negatives(model, host, min_score=model.detection_threshold)
    assert found and all(f["score"] >= model.detection_threshold for f in found)
    lo, hi = (np.asarray(v, float) for v in lesion_case["box_lps"])
    idx = [np.array(grid.TransformPhysicalPointToContinuousIndex(list(p)))[::-1] for p in (lo, hi)]
    box_lo, box_hi = np.minimum(*idx) - 0.5, np.maximum(*idx) + 0.5
    best = max(found, key=lambda f: f["score"])
    assert np.all(np.array(best["zyx"]) >= box_lo) and np.all(np.array(best["zyx"]) <= box_hi)
    assert np.allclose(grid.TransformContinuousIndexToPhysicalPoint(best["zyx"][::-1]), best["lps"], atol=0.1)


def test_a_run_reads_the_mined_centres_of_its_hosts(tmp_path, shared_data):
    path = tmp_path / "neg.json"
    path.write_text(json.dumps({"negatives": {"abdomen": [{"zyx": [10, 20, 30], "score": 0.9}]}}))
    cfg = load_config(CONFIGS / "tiny.yaml", {"data.shared_data": str(shared_data), "data.hard_negatives": str(path)})
    case = CaseSource(cfg).case(0)
    assert case.hard_negatives.tolist() == [[10.0, 20.0, 30.0]]
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DataSourceError, match="mine_negatives"):
        read_hard_negatives(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="hard_negatives"):
        load_config(CONFIGS / "tiny.yaml", {"data.hard_negatives": str(tmp_path / "missing.json")})


def test_mining_a_config_that_names_its_own_output(tmp_path, lesion_case):
    """A config may list the file that mining its starting weights writes (cpu_mix.yaml does):
    mining ignores the config's data.hard_negatives, so the missing file is no error."""
    import yaml

    from training.mine_negatives import main

    out = tmp_path / "neg.json"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"hosts": [str(lesion_case["path"])], "n_patients": 3,
                                            "hard_negatives": str(out)}}))
    with pytest.raises(ConfigError, match="hard_negatives"):  # training still needs it
        load_config(cfg)
    assert main(["--config", str(cfg), "--model", "default", "--out", str(out), "--device", "cpu",
                 "--min-score", "0.5"]) == 0
    report = json.loads(out.read_text())
    (found,) = report["negatives"].values()
    assert found and report["min_score"] == 0.5  # the planted lesion, on a host "without lesions"
    assert load_config(cfg).data.hard_negatives == str(out)  # and now the run can start
    assert main(["--config", str(cfg), "--model", "default", "--out", str(out)]) == 2  # no overwrite

"""training.lesion_paste: real box-labelled lesions pasted into synthetic training patients."""

import json

import numpy as np
import pytest
from test_real_patches import write_patches

from training.config import REPO_ROOT, ConfigError, load_config
from training.data_source import CaseSource
from training.lesion_paste import Donor, bone_level, ellipsoid_weight, load_donors, paste_lesions, transformed

CONFIGS = REPO_ROOT / "training" / "configs"


def test_the_weight_is_one_in_the_ellipsoid_and_falls_to_zero_over_the_edge():
    w = ellipsoid_weight((30, 30, 30), (5, 5, 5), (25, 25, 25), edge_mm=3.0)  # a sphere of radius 10
    assert w[15, 15, 15] == 1.0 and w[15, 15, 5] == 1.0  # centre, and the voxel inside the surface
    assert 0.0 < w[15, 15, 3] < 1.0  # 1.5 mm outside: on the edge
    assert w[15, 15, 0] == 0.0 and w[0, 0, 0] == 0.0  # 4.5 mm outside, a corner


def test_the_bone_level_is_the_median_of_the_bone_voxels():
    hu = np.full((10, 10, 10), -50.0, np.float32)
    hu[:5] = 400.0
    assert bone_level(hu, np.ones(hu.shape, bool)) == 400.0  # soft tissue does not count
    assert bone_level(hu[5:], np.ones((5, 10, 10), bool)) == 250.0  # no bone: the fallback


def test_donors_are_the_boxes_of_the_patches_not_left_out(tmp_path):
    write_patches(tmp_path / "real", {"a.nii.gz": [((14.5, -10.5, 20.5), (12, 8, 10))],
                                      "b.nii.gz": [((12.5, -17.5, 8.5), (6, 6, 6)), ((30.5, 10.5, 30.5), (8, 8, 8))]})
    donors = load_donors(tmp_path / "real", margin_mm=4)
    assert [d.name for d in donors] == ["real-a#1", "real-b#1", "real-b#2"]
    a = donors[0]
    assert a.hu.shape == (10 + 8, 8 + 8, 12 + 8)  # the box (z, y, x) and 4 mm each side
    assert a.mask[4:-4, 4:-4, 4:-4].sum() == a.mask.sum() > 0  # the ellipsoid lies in the box
    assert (a.weight[a.mask] == 1).all() and (a.weight > 0).sum() > a.mask.sum()  # soft edge outside it
    assert 280 < a.bone_hu < 320  # the patches are bone of 300 +- 20 HU
    assert [d.name for d in load_donors(tmp_path / "real", exclude=["a.nii.gz"])] == ["real-b#1", "real-b#2"]


def _donor(bone_hu=300.0):
    hu = np.full((9, 9, 9), bone_hu, np.float32)
    hu[2:7, 2:7, 2:7] = bone_hu - 150  # a lytic core
    mask = np.zeros(hu.shape, bool)
    mask[2:7, 2:7, 2:7] = True
    weight = np.where(mask, 1.0, 0.0).astype(np.float32)
    weight[1:8, 1:8, 1:8] = np.maximum(weight[1:8, 1:8, 1:8], 0.5)  # a one-voxel edge
    return Donor("d#1", hu, weight, mask, bone_hu)


def test_a_pasted_lesion_keeps_its_contrast_to_the_bone_and_gets_the_next_label():
    image = np.full((30, 30, 30), 500.0, np.float32)  # denser bone than the donor's
    labels = np.zeros(image.shape, np.uint16)
    labels[0:3, 0:3, 0:3] = 1
    lesions = [{"label": 1, "origin": "lung", "bbox": [0, 0, 0, 3, 3, 3]}]
    out = paste_lesions(image, labels, lesions, lambda r: (15, 15, 15), [_donor()], 1, np.random.default_rng(0))
    assert lesions == [{"label": 1, "origin": "lung", "bbox": [0, 0, 0, 3, 3, 3]}]  # the input list untouched
    new = out[1]
    assert new["label"] == 2 and new["origin"] is None and new["kind"] == "real" and new["donor"] == "d#1"
    assert new["bbox"] == [13, 13, 13, 18, 18, 18] and new["n_voxels"] == 125 == int((labels == 2).sum())
    assert np.allclose(image[labels == 2], 500 - 150)  # shifted by the host's bone level: contrast -150 HU
    assert np.allclose(image[11, 15, 15], 500) and image[0, 0, 0] == 500  # the edge blends bone into bone
    assert (labels[0:3, 0:3, 0:3] == 1).all()


def test_placements_off_the_image_or_on_another_lesion_are_drawn_again_or_given_up():
    image = np.full((30, 30, 30), 300.0, np.float32)
    labels = np.zeros(image.shape, np.uint16)
    centres = iter([(1, 1, 1), (15, 15, 15), (19, 19, 19), (19, 19, 19)])  # off the image, free, on the first twice
    out = paste_lesions(image, labels, [], lambda r: next(centres), [_donor()], 2, np.random.default_rng(0),
                        max_tries=2)
    assert [les["label"] for les in out] == [1] and set(np.unique(labels)) == {0, 1}
    assert out[0]["center_zyx"] == (15, 15, 15)


def test_transforms_move_every_array_of_a_donor_together():
    d = _donor()
    hu = d.hu.copy()
    hu[2, 3, 4] = 999.0  # mark one lesion voxel
    d = Donor(d.name, hu, d.weight, d.mask, d.bone_hu)
    for seed in range(8):
        t = transformed(d, np.random.default_rng(seed))
        (mark,) = np.argwhere(t.hu == 999.0)
        assert t.mask[tuple(mark)] and t.weight[tuple(mark)] == 1.0
        assert sorted(np.ptp(np.argwhere(t.mask), axis=0)) == [4, 4, 4]


def test_paste_settings_are_checked(tmp_path):
    write_patches(tmp_path / "real", {"a.nii.gz": [((14.5, -10.5, 20.5), (12, 8, 10))]})
    real = str(tmp_path / "real")
    with pytest.raises(ConfigError, match="p_paste_real > 0 but data.real_patches is not set"):
        load_config(CONFIGS / "tiny.yaml", {"data.p_paste_real": 0.5})
    with pytest.raises(ConfigError, match="p_paste_real must be in"):
        load_config(CONFIGS / "tiny.yaml", {"data.real_patches": real, "data.p_paste_real": 2})
    with pytest.raises(ConfigError, match="n_paste_real must be"):
        load_config(CONFIGS / "tiny.yaml", {"data.real_patches": real, "data.p_paste_real": 0.5,
                                            "data.n_paste_real": [2, 1]})
    with pytest.raises(ConfigError, match="set data.source to synthetic"):
        load_config(CONFIGS / "tiny.yaml", {"data.real_patches": real, "data.p_paste_real": 0.5,
                                            "data.source": "dataset", "data.dataset_dir": str(tmp_path)})


def test_training_patients_get_real_lesions_and_validation_patients_do_not(tmp_path, shared_data):
    write_patches(tmp_path / "real", {"a.nii.gz": [((14.5, -10.5, 20.5), (12, 8, 10))],
                                      "b.nii.gz": [((12.5, -17.5, 8.5), (6, 6, 6))]})
    cfg = load_config(CONFIGS / "tiny.yaml", {"data.real_patches": str(tmp_path / "real"), "data.p_paste_real": 1.0,
                                              "data.n_paste_real": [2, 2], "data.real_patches_exclude": ["b.nii.gz"],
                                              "run_dir": str(tmp_path / "run")})
    source = CaseSource(cfg)
    assert [d.name for d in source.donors()] == ["real-a#1"] and source.real_cases() == []
    train = source.case(source.split.train[0])
    real = [les for les in train.lesions if les.get("kind") == "real"]
    assert len(real) == 2 and {les["donor"] for les in real} == {"real-a#1"}
    for les in real:
        assert (train.labels == les["label"]).sum() == les["n_voxels"] > 0
    assert sorted(les["label"] for les in train.lesions) == list(range(1, len(train.lesions) + 1))
    val = source.case(source.split.val[0])
    assert not [les for les in val.lesions if les.get("kind") == "real"]
    record = source.split_record()["pasted_real_lesions"]
    assert record["donors"] == ["real-a#1"] and record["excluded"] == ["b.nii.gz"]
    json.dumps(record)  # it goes into split.json

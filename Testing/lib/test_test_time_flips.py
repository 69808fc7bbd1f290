"""Test-time flips (inference.flips): mirrored passes, boxes brought back, scores averaged."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from BoneMetSegLib.errors import BoneMetSegModelError
from BoneMetSegLib.inference.card_checks import check_card_values
from BoneMetSegLib.inference.flips import fuse_passes
from BoneMetSegLib.inference.predictor import load_model
from BoneMetSegLib.model.box_ops import flip_boxes


def _det(boxes, probs):
    """Detections as the network gives them: score = 1 - p_background."""
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 6)
    n = len(boxes)
    probs = torch.as_tensor(probs, dtype=torch.float32).reshape(n, 3)
    return {"boxes": boxes, "scores": 1 - probs[:, 0],
            "labels": torch.ones(n, dtype=torch.long), "class_probs": probs,
            "masks": torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1, 1).expand(n, 1, 2, 2, 2)}


def test_flip_boxes_mirrors_one_axis_and_is_its_own_inverse():
    boxes = torch.tensor([[2.0, 10, 20, 6, 14, 30], [0.0, 0, 0, 50, 40, 32]])
    assert flip_boxes(boxes, 2, 32)[0].tolist() == [2.0, 10, 2, 6, 14, 12]  # x: [20, 30) -> [2, 12)
    assert flip_boxes(boxes, 0, 50)[1].tolist() == [0.0, 0, 0, 50, 40, 32]  # a box filling the axis stays
    for axis, size in ((0, 50), (1, 40), (2, 32)):
        np.testing.assert_array_equal(flip_boxes(flip_boxes(boxes, axis, size), axis, size), boxes)
    # voxel i spans [i, i + 1): voxel 0 of a 10-voxel axis mirrors to voxel 9
    assert flip_boxes(torch.tensor([[0.0, 0, 0, 1, 1, 1]]), 1, 10)[0].tolist() == [0.0, 9, 0, 1, 10, 1]


def test_fuse_keeps_what_every_pass_sees_and_lowers_what_one_pass_sees():
    first = _det([[10, 10, 10, 20, 20, 20], [40, 40, 40, 46, 46, 46]], [[0.4, 0.5, 0.1], [0.1, 0.1, 0.8]])
    seen = _det([[11, 10, 10, 21, 20, 20]], [[0.2, 0.2, 0.6]])  # overlaps the first box only
    elsewhere = _det([[70, 70, 70, 80, 80, 80]], [[0.01, 0.5, 0.49]])
    out = fuse_passes(first, [seen, seen, elsewhere])
    assert out["scores"].tolist() == pytest.approx([(0.6 + 0.8 + 0.8 + 0) / 4, 0.9 / 4])
    assert out["boxes"][0].tolist() == [10, 10, 10, 20, 20, 20]  # sorted by the fused score: the lesion first
    assert out["masks"][0].flatten()[0] == 0 and out["masks"][1].flatten()[0] == 1  # masks follow their box
    assert out["class_probs"][0].tolist() == pytest.approx([(0.4 + 0.2 + 0.2 + 1) / 4, 0.9 / 4, 1.3 / 4])
    assert out["class_probs"][1].tolist() == pytest.approx([(0.1 + 3) / 4, 0.1 / 4, 0.8 / 4])
    assert float(out["class_probs"].sum(1).sub(1).abs().max()) < 1e-6
    # a pass box that overlaps below the match IoU does not count
    far = _det([[18, 18, 18, 28, 28, 28]], [[0.0, 1.0, 0.0]])
    assert fuse_passes(first, [far])["scores"][1] == pytest.approx(0.3)
    assert fuse_passes(_det([], []), [seen])["boxes"].shape == (0, 6)


def _patch():
    rng = np.random.default_rng(0)
    hu = (40 + 20 * rng.standard_normal((64, 64, 64))).astype(np.float32)
    hu[:, :, :6] -= 140  # fat
    hu[8:56, 8:56, 8:56] += 300  # bone
    hu[20:30, 30:40, 36:46] += 1500  # a dense focus: the "lesion", wherever the mirror puts it
    return hu


def test_predict_runs_mirrored_passes_on_a_small_crop_and_one_pass_above_the_budget(monkeypatch):
    """The fake detector finds the dense focus wherever it is (a lesion) and always reports a box at
    the same array position (an artefact of orientation): with flips on, the lesion keeps its score,
    the artefact drops to a quarter, and the network saw the crop mirrored along each axis."""
    image = sitk.GetImageFromArray(_patch())
    model = load_model(None, "cpu")
    model.card["bone_enclosure_min_directions"] = None
    model.card["bone_filter_radius_mm"] = None
    seen, seeds_seen = [], []

    def fake_detect(self, array, progress, cancel, tile, warn, seeds):
        seen.append(np.array(array))
        seeds_seen.append(seeds)
        focus = np.argwhere(array >= array.max() - 0.1)  # the focus (above the HU window: saturated)
        lo, hi = focus.min(0).astype(float), focus.max(0).astype(float) + 1
        boxes = torch.tensor([[*lo, *hi], [2.0, 2, 2, 8, 8, 8]], dtype=torch.float32)
        return {**_det(boxes, [[0.1, 0.7, 0.2], [0.05, 0.5, 0.45]]), "masks": torch.ones(2, 1, 4, 4, 4)}

    monkeypatch.setattr(type(model), "detect", fake_detect)
    model.card["test_time_flips"] = False
    plain = model.predict(image, threshold=0.1)
    assert len(seen) == 1
    assert sorted(round(les.detection_score, 3) for les in plain.lesions) == [0.9, 0.95]
    assert plain.settings == {"detection_threshold": 0.1, "origin_threshold": 0.5, "test_time_flips": False}

    seen.clear()
    model.card["test_time_flips"] = True
    flipped = model.predict(image, threshold=0.1)
    assert len(seen) == 4
    assert flipped.settings["test_time_flips"] is True  # the report says the scores are four passes' mean
    for axis in range(3):
        np.testing.assert_array_equal(seen[axis + 1], np.flip(seen[0], axis))
    scores = sorted(round(les.detection_score, 4) for les in flipped.lesions)
    assert scores == [pytest.approx(0.95 / 4, abs=1e-3), pytest.approx(0.9, abs=1e-3)]
    best = max(flipped.lesions, key=lambda les: les.detection_score)
    mask = sitk.GetArrayFromImage(flipped.labelmap) == best.label_value
    assert mask[20:30, 30:40, 36:46].mean() > 0.9  # the lesion's own mask, in place

    seen.clear()
    seeds_seen.clear()
    point = image.TransformContinuousIndexToPhysicalPoint([40.5, 35.0, 25.0])  # x, y, z: the focus
    model.predict(image, threshold=0.1, seed_points_lps=[point])
    assert len(seeds_seen) == 4 and len(seeds_seen[0])
    for axis in range(3):  # each pass got the user's seed boxes mirrored with its volume
        np.testing.assert_allclose(seeds_seen[axis + 1], flip_boxes(seeds_seen[0], axis, seen[0].shape[axis]))

    seen.clear()
    model.card["test_time_flips_max_voxels"] = 1000  # the crop is larger: one pass
    assert model.predict(image, threshold=0.1).settings["test_time_flips"] is False
    assert len(seen) == 1


def test_card_flags_are_checked():
    model = load_model(None, "cpu")
    card = dict(model.card)
    check_card_values({**card, "test_time_flips": True}, "card")
    with pytest.raises(BoneMetSegModelError, match="test_time_flips = 'yes' must be true or false"):
        check_card_values({**card, "test_time_flips": "yes"}, "card")
    with pytest.raises(BoneMetSegModelError, match="test_time_flips_max_voxels"):
        check_card_values({**card, "test_time_flips_max_voxels": 0}, "card")

"""Mirrored context at the faces where the scan cuts the anatomy (inference.border)."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from BoneMetSegLib.inference.border import cut_faces, drop_mirrored, pad_cut_faces
from BoneMetSegLib.model.box_ops import shift_boxes
from BoneMetSegLib.inference.predictor import load_model
from BoneMetSegLib.preprocessing.types import Preprocessed


def _pre(full_zyx, start, size) -> Preprocessed:
    grid = sitk.Image([int(n) for n in full_zyx[::-1]], sitk.sitkUInt8)
    return Preprocessed(np.zeros(size, np.float32), grid, tuple(start), 0.0, 1.0)


def test_cut_faces_are_the_crop_faces_on_the_image_edge():
    assert cut_faces(_pre((100, 80, 60), (0, 10, 5), (100, 50, 55))) == \
        ((True, True), (False, False), (False, True))


def test_pad_mirrors_only_the_cut_faces():
    a = np.arange(10 * 12 * 14, dtype=np.float32).reshape(10, 12, 14)
    padded, offset = pad_cut_faces(a, ((True, False), (False, False), (True, True)), width=4)
    assert padded.shape == (14, 12, 22) and offset == (4, 0, 4)
    np.testing.assert_array_equal(padded[4:, :, 4:18], a)  # the volume itself is untouched
    np.testing.assert_array_equal(padded[3, :, 4:18], a[1])  # mirrored about the first slice
    np.testing.assert_array_equal(padded[4 - 2, :, 4:18], a[2])
    np.testing.assert_array_equal(padded[4:, :, 18 + 1], a[:, :, 14 - 3])
    same, none = pad_cut_faces(a, ((False, False),) * 3)
    assert same is a and none == (0, 0, 0)
    thin, _ = pad_cut_faces(a[:3], ((True, True), (False, False), (False, False)), width=16)
    assert thin.shape[0] == 3 + 2 * 2  # never more than the axis can mirror


def test_mirror_images_are_dropped_and_lesions_at_the_face_kept():
    # padded coordinates, offset 16 on every axis, crop 96^3
    boxes = torch.tensor([[40.0, 40, 40, 60, 60, 60],  # inside
                          [0.0, 40, 40, 10, 60, 60],  # centre 11 mm beyond the low z face: a mirror image
                          [10.0, 40, 40, 30, 60, 60],  # straddles the face: a lesion touching it
                          [100.0, 40, 40, 126, 60, 60]])  # centre 1 mm beyond the high face, 26 mm long
    det = {"boxes": boxes, "scores": torch.tensor([0.9, 0.8, 0.7, 0.6]), "labels": torch.ones(4, dtype=torch.long),
           "class_probs": torch.full((4, 3), 1 / 3), "masks": torch.zeros(4, 1, 4, 4, 4)}
    out = drop_mirrored(det, (16, 16, 16), (96, 96, 96))
    assert out["scores"].tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert out["boxes"][0].tolist() == [24.0, 24, 24, 44, 44, 44]
    assert len(out["masks"]) == len(out["class_probs"]) == 3
    np.testing.assert_array_equal(shift_boxes(shift_boxes(boxes, (16, 2, 3)), (-16, -2, -3)), boxes)


def test_predict_gives_the_network_mirrored_context_on_a_small_patch(monkeypatch):
    """A 96 mm patch of bone is cut on all six faces: the detector sees 128^3 with the patch in the
    middle (no air padding), and a detection in the mirrored part does not reach the result."""
    rng = np.random.default_rng(0)
    hu = (40 + 20 * rng.standard_normal((96, 96, 96))).astype(np.float32)  # soft tissue
    hu[:, :, :12] -= 140  # fat
    hu[12:84, 12:84, 14:84] += 300  # bone, within 16 mm (the crop margin) of every face
    image = sitk.GetImageFromArray(hu)
    model = load_model(None, "cpu")
    seen = {}

    def fake_detect(array, *args, **kwargs):
        seen["shape"] = array.shape
        seen["centre"] = array[16:112, 16:112, 16:112].copy()
        boxes = torch.tensor([[50.0, 50, 50, 62, 62, 62], [0.0, 50, 50, 8, 62, 62]])
        return {"boxes": boxes, "scores": torch.tensor([0.99, 0.99]), "labels": torch.ones(2, dtype=torch.long),
                "class_probs": torch.tensor([[0.01, 0.9, 0.09]] * 2), "masks": torch.ones(2, 1, 8, 8, 8)}

    monkeypatch.setattr(type(model), "detect", lambda self, array, *a, **k: fake_detect(array))
    model.card["bone_enclosure_min_directions"] = None
    model.card["test_time_flips"] = False  # one pass: this fake detector does not follow the image
    model.predict(image, threshold=0.5)
    assert seen["shape"] == (96, 96, 96)  # off unless the card asks for it
    model.card["border_context_mm"] = 16
    result = model.predict(image, threshold=0.5)
    assert seen["shape"] == (128, 128, 128)
    assert len(result.lesions) == 1
    idx = np.argwhere(sitk.GetArrayFromImage(result.labelmap) == 1)
    assert idx.min(0).tolist() == [34, 34, 34] and idx.max(0).tolist() == [45, 45, 45]
    model.card["border_context_mm"] = 0
    model.predict(image, threshold=0.5)
    assert seen["shape"] == (96, 96, 96)

"""False positives on lesion-free CT sorted by what they hit: the rules, on a toy CT whose answers are known."""

from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk

from BoneMetSegLib.postprocess.lesions import lesion_records
from training.false_positives import CATEGORIES, categorise, counts, describe_detections, markdown
from training.hosts import Host, NoiseModel, make_grid


@pytest.mark.parametrize("hu,in_bone,near,surface,expected", [
    (2500.0, 0.9, True, 0.1, "metal"),
    (300.0, 0.1, True, 0.0, "vessel"),
    (1300.0, 0.0, False, 0.0, "vessel"),  # undiluted contrast in the injection-side vein
    (40.0, 0.2, True, 0.0, "soft tissue against bone"),
    (40.0, 0.0, False, 0.0, "outside bone"),
    (400.0, 0.8, True, 0.7, "cortex / endplate"),
    (900.0, 0.9, True, 0.1, "cortex / endplate"),
    (350.0, 0.9, True, 0.2, "trabecular focus"),
])
def test_categorise_by_hand(hu, in_bone, near, surface, expected):
    assert categorise(np.full(10, hu), in_bone, near, surface) == expected


def test_toy_ct_detections_are_sorted_by_what_they_hit():
    shape = (60, 60, 60)
    image = np.full(shape, 40.0, np.float32)  # soft tissue
    bone = np.zeros(shape, bool)
    bone[10:50, 10:50, 10:30] = True  # a bone block: x 10..29
    image[bone] = 250.0
    image[20:26, 20:26, 45:51] = 300.0  # a contrast-filled vessel away from the bone
    labels = np.zeros(shape, np.uint16)
    labels[20:26, 20:26, 45:51] = 1  # on the vessel
    labels[20:26, 20:26, 31:35] = 2  # soft tissue just outside the bone (x 30 is the first soft voxel)
    labels[25:31, 25:31, 16:22] = 3  # deep in the bone
    labels[40:46, 40:46, 26:30] = 4  # the outer 4 mm of the bone: mostly within 2 mm of its surface
    grid = make_grid(shape, (0.0, 0.0, 0.0))
    host = Host("toy", image, bone, grid, None, NoiseModel(0.0))
    labelmap = sitk.GetImageFromArray(labels)
    labelmap.CopyInformation(grid)
    records = lesion_records(labelmap, [[0.6, 0.2, 0.2]] * 4)  # detection score 0.4
    rows = describe_detections(SimpleNamespace(labelmap=labelmap, lesions=records), host)
    assert [r["category"] for r in rows] == ["vessel", "soft tissue against bone", "trabecular focus",
                                             "cortex / endplate"]
    assert rows[0]["median_hu"] == 300.0 and rows[0]["in_bone"] == 0.0 and rows[2]["in_bone"] == 1.0
    assert counts(rows, 0.5) == {k: 0 for k in CATEGORIES}
    assert sum(counts(rows, 0.05).values()) == 4
    report = {"model": {"name": "m", "version": "v", "detection_threshold": 0.5}, "threshold": 0.05,
              "cts": [{"name": "toy", "path": "toy", "detections": rows, "at_threshold": counts(rows, 0.05),
                       "at_detection_threshold": counts(rows, 0.5)}]}
    assert "| toy | >= 0.05 | 0 | 1 | 1 | 1 | 1 | 0 | 4 |" in markdown(report)

"""Hit counting of the quick held-out check."""

import numpy as np
import SimpleITK as sitk

from BoneMetSegLib.result import LesionRecord
from training.eval_held_out import score_lesions


def record(centroid):
    return LesionRecord(id=1, segment_id="Lesion_1", label_value=1, detection_score=0.9,
                        lung_origin_probability=0.5, predicted_origin="lung", volume_ml=1.0,
                        centroid_lps_mm=list(centroid), bbox_lps_mm=[list(centroid), list(centroid)])


def test_score_lesions_counts_hits_and_false_positives():
    grid = sitk.Image(20, 20, 20, sitk.sitkUInt8)
    grid.SetOrigin((-10.0, -10.0, 5.0))
    labels = np.zeros((20, 20, 20), dtype=np.uint16)
    labels[2:6, 2:6, 2:6] = 1  # z, y, x
    labels[10:15, 10:15, 10:15] = 2
    inside_1 = grid.TransformIndexToPhysicalPoint((3, 3, 3))
    inside_1b = grid.TransformIndexToPhysicalPoint((4, 4, 4))
    empty = grid.TransformIndexToPhysicalPoint((18, 1, 1))
    outside = (500.0, 0.0, 0.0)
    hits, fps = score_lesions([record(inside_1), record(inside_1b), record(empty), record(outside)], labels, grid)
    assert (hits, fps) == (1, 2)

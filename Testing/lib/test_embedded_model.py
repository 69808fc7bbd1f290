"""The embedded default weights find a large obvious lesion planted in real CT (not random
weights passed off as a model): ``lesion_case`` is a real abdomen-CT crop with one planted
lesion from a seed never used in training, run at the model card's own detection threshold."""

from __future__ import annotations

import numpy as np

from BoneMetSegLib.inference.predictor import load_model


def test_embedded_model_finds_the_planted_lesion_with_its_origin(lesion_case):
    model = load_model(device="cpu")
    result = model.predict(lesion_case["path"])
    lo, hi = (np.asarray(v, float) for v in lesion_case["box_lps"])
    hits = [les for les in result.lesions
            if np.all(np.asarray(les.centroid_lps_mm) >= lo) and np.all(np.asarray(les.centroid_lps_mm) <= hi)]
    assert hits, f"no lesion found inside the planted lesion's box {lo} - {hi}: {result.lesions}"
    best = max(hits, key=lambda les: les.detection_score)
    assert best.detection_score >= model.detection_threshold
    assert best.predicted_origin == lesion_case["lesion"]["origin"]
    # properties of the pipeline, whatever the weights: nothing below the card's threshold is reported,
    # and every lesion lies inside the CT
    assert all(les.detection_score >= model.detection_threshold for les in result.lesions)
    image = lesion_case["image"]
    for les in result.lesions:
        index = image.TransformPhysicalPointToContinuousIndex(les.centroid_lps_mm)
        assert all(-0.5 <= i <= n - 0.5 for i, n in zip(index, image.GetSize())), les

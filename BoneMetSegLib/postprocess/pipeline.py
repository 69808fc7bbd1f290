"""Detections on the network crop -> instance labelmap on the input grid and one record per lesion."""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import SimpleITK as sitk
import torch

from ..preprocessing.pipeline import crop_hu
from ..preprocessing.types import Preprocessed
from .bone_filter import drop_lesions_not_enclosed, drop_metal_lesions, filter_outside_bone
from .config import PostprocessConfig
from .instances import crop_labels_to_input_grid, detections_to_instances
from .lesions import lesion_records


def postprocess(
    det: dict,
    pre: Preprocessed,
    image: sitk.Image,
    config: PostprocessConfig,
    origin_threshold: float = 0.5,
    checkpoint: Optional[Callable[[], None]] = None,
) -> tuple[sitk.Image, list]:
    """Keep detections scoring >= the threshold, paste their masks into instances, drop lesions
    away from bone, not enclosed by bone or on metal, and bring the labels to ``image``'s grid.
    ``checkpoint()`` (e.g. a cancel check) runs before the resampling. Returns the labelmap (label
    values = lesion ids 1..N) and the :class:`LesionRecord` list."""
    keep = det["scores"] >= config.detection_threshold
    det = {k: v[keep] for k, v in det.items()}
    labels_crop, source_index = detections_to_instances(det["boxes"], det["scores"], det["masks"], pre.crop_size)
    labels_crop, source_index = drop_non_bone_lesions(labels_crop, source_index, pre, config)
    if checkpoint is not None:
        checkpoint()
    labelmap = crop_labels_to_input_grid(labels_crop, pre, image)
    probs = det["class_probs"][torch.as_tensor(source_index, dtype=torch.long)].tolist() if source_index else []
    lesions = lesion_records(labelmap, probs, origin_threshold)
    # a lesion can vanish on a coarser input grid: keep label values consecutive with ids
    return relabel_consecutive(labelmap, lesions)


def drop_non_bone_lesions(labels: np.ndarray, source: list, pre: Preprocessed,
                          config: PostprocessConfig) -> tuple[np.ndarray, list]:
    """The bone filters that ``config`` turns on, in order: near bone, enclosed by bone, not metal
    (nor undiluted contrast)."""
    bone_hu = pre.config.bone_threshold_hu
    if config.bone_filter_radius_mm is not None and source:
        labels, source = filter_outside_bone(labels, source, crop_hu(pre), bone_hu, config.bone_filter_radius_mm)
    if config.bone_enclosure_min_directions is not None and source:
        labels, source = drop_lesions_not_enclosed(
            labels, source, crop_hu(pre), bone_hu, config.bone_enclosure_reach_mm,
            config.bone_enclosure_min_directions,
        )
    if (config.metal_median_hu is not None or config.metal_dense_fraction is not None) and source:
        labels, source = drop_metal_lesions(labels, source, crop_hu(pre), config.metal_median_hu,
                                            config.metal_dense_fraction)
    return labels, source


def relabel_consecutive(labelmap: sitk.Image, lesions: list) -> tuple[sitk.Image, list]:
    """Make label values 1..N equal to lesion ids (values can skip when a lesion vanished)."""
    if all(les.label_value == les.id for les in lesions):
        return labelmap, lesions
    arr = sitk.GetArrayFromImage(labelmap)
    lut = np.zeros(int(arr.max()) + 1, dtype=np.uint16)
    for les in lesions:
        lut[les.label_value] = les.id
        les.label_value = les.id
    out = sitk.GetImageFromArray(lut[arr])
    out.CopyInformation(labelmap)
    return out, lesions


__all__ = ["postprocess", "drop_non_bone_lesions", "relabel_consecutive"]

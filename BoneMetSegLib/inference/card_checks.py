"""Check the values of a model card before anything is built from it.

A card with the right sha256 can still hold a value of the wrong type (``"fpn_channels":
"sixteen"``) or an impossible one (an unknown backbone, no anchor sizes, ``spacing_mm`` 0, a
threshold of 5): each is refused with one sentence naming the field, before the network is built
or the CT is resampled.
"""

from __future__ import annotations

import math
from dataclasses import fields

from ..errors import BoneMetSegModelError
from ..model.config import BACKBONES, CONVNEXT_SIZES, ModelConfig
from ..preprocessing.types import PreprocessConfig

N_PYRAMID_LEVELS = 5  # P2..P6: one anchor size per level
UNIT_FIELDS = {  # fractions and IoU thresholds: within [0, 1]
    "drop_path_rate", "rpn_fg_iou_thresh", "rpn_bg_iou_thresh", "rpn_positive_fraction", "rpn_nms_thresh",
    "box_fg_iou_thresh", "box_bg_iou_thresh", "box_positive_fraction", "box_score_thresh", "box_nms_thresh",
    "seg_score_weight",
}
ZERO_ALLOWED = {"box_gt_jitter", "bone_contrast_mm"}  # whole numbers where 0 means none / off
CHOICES = {"backbone": BACKBONES, "backbone_size": tuple(CONVNEXT_SIZES), "rpn_matcher": ("atss", "iou"),
           "rpn_sampler": ("hard", "random"), "head_norm": ("layer", "none")}
# top-level inference settings: (allowed None, lowest, highest)
TOP_LEVEL = {"detection_threshold": (False, 0.0, 1.0), "bone_filter_radius_mm": (True, 0.0, 1000.0),
             "bone_enclosure_min_directions": (True, 1, 6), "bone_enclosure_reach_mm": (False, 1.0, 1000.0),
             "metal_median_hu": (True, -1024.0, 1e6), "metal_dense_fraction": (True, 0.0, 1.0),
             "border_context_mm": (True, 0, 256),
             "test_time_flips_max_voxels": (False, 1, 1e12)}
TOP_LEVEL_FLAGS = ("test_time_flips",)  # top-level switches: true / false (null: off)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


NULLABLE = {"norm_mean", "norm_std"}  # null: per-image z-score


def _problem(field: str, value, default) -> str | None:
    """What is wrong with ``value`` for a field whose default is ``default`` (None: nothing)."""
    if default is None or (field in NULLABLE and value is None):
        return None if value is None or _is_number(value) else "must be a number or null"
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "must be true or false"
    if isinstance(default, int):
        if not (isinstance(value, int) and not isinstance(value, bool)):
            return "must be a whole number"
        return None if value > 0 or field in ZERO_ALLOWED and value == 0 else "must be positive"
    if isinstance(default, float):
        if not _is_number(value):
            return "must be a number"
        if field in UNIT_FIELDS:
            return None if 0.0 <= value <= 1.0 else "must lie between 0 and 1"
        return None
    if isinstance(default, str):
        if not isinstance(value, str):
            return "must be a string"
        return None if field not in CHOICES or value in CHOICES[field] else f"must be one of {list(CHOICES[field])}"
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or not value:
            return "must be a non-empty list"
        kinds = {type(d) for d in default}
        if kinds == {str}:
            return None if all(isinstance(v, str) for v in value) else "must be a list of strings"
        if not all(_is_number(v) for v in value):
            return "must be a list of numbers"
        return None
    return None


def _check_section(card: dict, key: str, cls, source) -> None:
    section = card[key]
    defaults = {f.name: f.default for f in fields(cls)}
    for name, value in section.items():
        if name not in defaults:
            continue  # unknown keys: from_dict says so
        why = _problem(name, value, defaults[name])
        if why is not None:
            raise BoneMetSegModelError(
                f"Model card {source}: {key}.{name} = {value!r} {why}; re-export the model or fix its card."
            )


def _fail(source, what: str) -> None:
    raise BoneMetSegModelError(f"Model card {source}: {what}; re-export the model or fix its card.")


def _check_architecture(arch: dict, source) -> None:
    sizes = arch.get("anchor_sizes", ModelConfig.anchor_sizes)
    if len(sizes) != N_PYRAMID_LEVELS or min(sizes) <= 0:
        _fail(source, f"architecture.anchor_sizes = {sizes!r} must be {N_PYRAMID_LEVELS} positive sizes (P2..P6)")
    if min(arch.get("anchor_ratios", ModelConfig.anchor_ratios)) <= 0:
        _fail(source, "architecture.anchor_ratios must be positive")
    names = arch.get("class_names", ModelConfig.class_names)
    if len(names) != arch.get("num_classes", ModelConfig.num_classes):
        _fail(source, f"architecture.num_classes does not match its {len(names)} class_names")


def _check_preprocessing(pre: dict, source) -> None:
    spacing = pre.get("spacing_mm", PreprocessConfig.spacing_mm)
    if not 0.05 <= spacing <= 10.0:
        _fail(source, f"preprocessing.spacing_mm = {spacing!r} must lie between 0.05 and 10 mm")
    window = pre.get("hu_window", PreprocessConfig.hu_window)
    if len(window) != 2 or window[0] >= window[1]:
        _fail(source, f"preprocessing.hu_window = {window!r} must be [low, high] with low < high")
    std = pre.get("norm_std", PreprocessConfig.norm_std)
    if std is not None and std <= 0:
        _fail(source, f"preprocessing.norm_std = {std!r} must be positive")
    orientation = pre.get("orientation", PreprocessConfig.orientation)
    axes = sorted({"L": 0, "R": 0, "P": 1, "A": 1, "S": 2, "I": 2}.get(c, -1) for c in orientation.upper())
    if axes != [0, 1, 2]:
        _fail(source, f"preprocessing.orientation = {orientation!r} is not a 3-letter code such as 'LPS'")


def _check_top_level(card: dict, source) -> None:
    for name, (nullable, low, high) in TOP_LEVEL.items():
        if name not in card:
            continue
        value = card[name]
        if value is None and nullable:
            continue
        if not _is_number(value) or not low <= value <= high:
            _fail(source, f"{name} = {value!r} must be a number between {low:g} and {high:g}"
                  + (" or null" if nullable else ""))
    for name in TOP_LEVEL_FLAGS:
        if card.get(name) is not None and not isinstance(card[name], bool):
            _fail(source, f"{name} = {card[name]!r} must be true or false")


def check_card_values(card: dict, source) -> None:
    """Raise :class:`BoneMetSegModelError` naming the first field of ``card`` that is wrong."""
    _check_section(card, "architecture", ModelConfig, source)
    _check_section(card, "preprocessing", PreprocessConfig, source)
    _check_architecture(card["architecture"], source)
    _check_preprocessing(card["preprocessing"], source)
    _check_top_level(card, source)


__all__ = ["check_card_values"]

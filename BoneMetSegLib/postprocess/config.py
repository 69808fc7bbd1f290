"""Postprocessing settings of a model: detection threshold, bone filters, border context, test-time flips.

Read from the model card's top-level keys (each optional; ``null`` turns a filter off), once per run.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PostprocessConfig:
    detection_threshold: float = 0.5  # minimum detection score
    # a lesion must lie mostly within this many mm of bone (> the bone threshold HU); None: off
    bone_filter_radius_mm: int | None = 10
    # half a lesion's voxels must see bone within bone_enclosure_reach_mm in this many of the six
    # axis directions (postprocess.bone_filter); None: off. 3, not 4: with 4, large lytic lesions
    # that broke the thin cortex of the lumbar host were dropped.
    bone_enclosure_min_directions: int | None = 3
    bone_enclosure_reach_mm: int = 25
    metal_median_hu: float | None = 2000.0  # a lesion whose median HU is above this lies on metal; None: off
    # a lesion with more than this share of its voxels above 2500 HU lies on metal or undiluted
    # contrast (postprocess.bone_filter); None: off
    metal_dense_fraction: float | None = 0.1
    # mirrored context at the faces where the scan cuts the anatomy (0: none). Off unless the card
    # asks: whether it helps depends on how the weights were trained (docs/training.md).
    border_context_mm: int = 0
    # the crop also detected mirrored along z, y and x, scores averaged over the four passes
    # (inference.flips), for crops of at most test_time_flips_max_voxels voxels. Off unless the card asks.
    test_time_flips: bool = False
    test_time_flips_max_voxels: int = 200**3

    @classmethod
    def from_card(cls, card: dict) -> PostprocessConfig:
        """The settings a model card asks for (defaults above for absent keys)."""
        default = cls()

        def optional(key: str, cast):
            value = card.get(key, getattr(default, key))
            return None if value is None else cast(value)

        return cls(
            detection_threshold=float(card.get("detection_threshold", default.detection_threshold)),
            bone_filter_radius_mm=optional("bone_filter_radius_mm", int),
            bone_enclosure_min_directions=optional("bone_enclosure_min_directions", int),
            bone_enclosure_reach_mm=int(card.get("bone_enclosure_reach_mm", default.bone_enclosure_reach_mm)),
            metal_median_hu=optional("metal_median_hu", float),
            metal_dense_fraction=optional("metal_dense_fraction", float),
            border_context_mm=int(card.get("border_context_mm") or 0),
            test_time_flips=bool(card.get("test_time_flips")),
            test_time_flips_max_voxels=int(card.get("test_time_flips_max_voxels",
                                                    default.test_time_flips_max_voxels)),
        )


__all__ = ["PostprocessConfig"]

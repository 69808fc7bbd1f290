"""End-to-end inference: CT image in, instance labelmap and lesion records out.

``load_model`` builds the network from a weights file and its model card; ``Predictor.predict``
runs read -> preprocess -> tiled detection -> postprocess and returns a :class:`Result` whose
labelmap has exactly the input geometry.
"""

from __future__ import annotations

import time
import warnings as pywarnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import SimpleITK as sitk
import torch

from ..errors import BoneMetSegModelError
from ..io.read import as_ct
from ..model import MaskRCNN3D
from ..model.box_ops import shift_boxes
from ..postprocess.instances import crop_labels_to_input_grid, detections_to_instances
from ..postprocess.bone_filter import drop_lesions_not_enclosed, drop_metal_lesions, filter_outside_bone
from ..postprocess.lesions import lesion_records, patient_summary
from ..preprocessing.pipeline import crop_hu, preprocess
from ..result import Result
from .border import cut_faces, drop_mirrored, pad_cut_faces
from .device import describe_device, fallback_devices, select_device
from .model_card import model_config_from_card, preprocess_config_from_card
from .progress import ProgressReporter, check_cancel
from .seeds import seed_boxes
from .tiling import fallback_tile_sizes, run_tiled, with_oom_fallback
from .weights import load_weights

DEFAULT_TILE = (192, 192, 192)  # voxels at 1 mm; a whole chest-CT bone crop is ~2-4 tiles
DEFAULT_OVERLAP = 48  # > the largest lesion (40 mm) so that every lesion is whole in one tile
CPU_TILE = (384, 384, 384)  # the CPU has more memory than speed: a chest/abdomen crop in one tile
BONE_FILTER_RADIUS_MM = 10  # a lesion must lie mostly within 10 mm of bone (> bone threshold HU)
METAL_MEDIAN_HU = 2000.0  # a lesion whose median HU is above this lies on metal (an implant)
# half a lesion's voxels must see bone within BONE_ENCLOSURE_REACH_MM in this many of the six axis
# directions (postprocess.bone_filter; a card's bone_enclosure_min_directions overrides, null: off).
# 3, not 4: with 4, large lytic lesions that broke the thin cortex of the lumbar host were dropped.
BONE_ENCLOSURE_MIN_DIRECTIONS = 3
BONE_ENCLOSURE_REACH_MM = 25


class Predictor:
    """A loaded model plus the recipe (preprocessing, thresholds) that goes with it."""

    def __init__(self, net: MaskRCNN3D, card: dict, device: torch.device):
        self.net = net.eval()
        self.card = card
        self.device = device
        self.config = net.config
        self.preprocess_config = preprocess_config_from_card(card)

    @property
    def model_info(self) -> dict:
        return {
            "name": self.card.get("name", "unknown"),
            "version": self.card.get("version", "unknown"),
            "sha256": self.card.get("sha256", ""),
        }

    def predict(
        self,
        image,
        progress: Optional[Callable[[float, str], None]] = None,
        cancel=None,
        threshold: Optional[float] = None,
        origin_threshold: float = 0.5,
        tile: Optional[tuple] = None,
        warn: Optional[Callable[[str], None]] = None,
        seed_points_lps: Optional[list] = None,
    ) -> Result:
        """Segment and classify every bone lesion in ``image``.

        ``image``: a path (file or DICOM folder), a :class:`CTImage` or a ``SimpleITK.Image`` in HU.
        ``progress(fraction, message)`` is called as work proceeds; ``cancel`` (callable returning
        bool, or a ``threading.Event``) stops the run within a few seconds by raising
        ``BoneMetSegCancelled``. ``threshold`` is the minimum detection score (default: the model
        card's ``detection_threshold`` or 0.5). ``seed_points_lps``: points (LPS mm) where the
        user says a lesion is; boxes centred there join the proposals (:mod:`.seeds`) and the crop
        runs as one tile. Same input, same output.
        """
        reporter = ProgressReporter(progress, cancel)
        timing: dict = {}
        t_total = time.perf_counter()
        warn_list: list = []

        def _warn(msg: str) -> None:
            warn_list.append(msg)
            if warn is not None:
                warn(msg)

        t0 = time.perf_counter()
        reporter.report("read", 0.0, "Reading CT")
        ct = as_ct(image)
        for w in ct.warnings:
            _warn(w)
        timing["read"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        reporter.report("preprocess", 0.0, "Resampling to 1 mm and cropping to bone")
        pre = preprocess(ct.image, self.preprocess_config)
        timing["preprocess"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        reporter.report("inference", 0.0, "Detecting lesions")
        array, offset = pad_cut_faces(pre.array, cut_faces(pre), self.border_context_mm)
        seeds = shift_boxes(seed_boxes(pre, seed_points_lps), [-o for o in offset]) if seed_points_lps else None
        det = self.detect(array, reporter.stage_callback("inference"), cancel, tile, _warn, seeds)
        det = drop_mirrored(det, offset, pre.crop_size)
        timing["inference"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        reporter.report("postprocess", 0.0, "Building lesion masks")
        thr = self.detection_threshold if threshold is None else float(threshold)
        keep = det["scores"] >= thr
        det = {k: v[keep] for k, v in det.items()}
        labels_crop, source_index = detections_to_instances(
            det["boxes"], det["scores"], det["masks"], pre.crop_size
        )
        if self.bone_filter_radius_mm is not None and source_index:
            labels_crop, source_index = filter_outside_bone(
                labels_crop, source_index, crop_hu(pre), self.preprocess_config.bone_threshold_hu,
                self.bone_filter_radius_mm,
            )
        if self.bone_enclosure_min_directions is not None and source_index:
            labels_crop, source_index = drop_lesions_not_enclosed(
                labels_crop, source_index, crop_hu(pre), self.preprocess_config.bone_threshold_hu,
                self.bone_enclosure_reach_mm, self.bone_enclosure_min_directions,
            )
        if self.metal_median_hu is not None and source_index:
            labels_crop, source_index = drop_metal_lesions(labels_crop, source_index, crop_hu(pre),
                                                           self.metal_median_hu)
        check_cancel(cancel)
        labelmap = crop_labels_to_input_grid(labels_crop, pre, ct.image)
        probs = det["class_probs"][torch.as_tensor(source_index, dtype=torch.long)].tolist() if source_index else []
        lesions = lesion_records(labelmap, probs, origin_threshold)
        # a lesion can vanish on a coarser input grid: keep label values consecutive with ids
        labelmap, lesions = _relabel_consecutive(labelmap, lesions)
        timing["postprocess"] = time.perf_counter() - t0
        timing["write"] = 0.0
        timing["total"] = time.perf_counter() - t_total
        reporter.done(f"Found {len(lesions)} lesion(s)")
        return Result(
            labelmap=labelmap,
            lesions=lesions,
            patient=patient_summary(lesions, origin_threshold),
            timing_s=timing,
            device=describe_device(self.device),
            model=self.model_info,
            input={
                "path": ct.path,
                "size": list(ct.image.GetSize()),
                "spacing": [float(s) for s in ct.image.GetSpacing()],
            },
            warnings=warn_list,
        )

    @property
    def detection_threshold(self) -> float:
        return float(self.card.get("detection_threshold", 0.5))

    @property
    def bone_filter_radius_mm(self) -> int | None:
        """Lesions need half their voxels within this distance of bone (card; None: no filter)."""
        value = self.card.get("bone_filter_radius_mm", BONE_FILTER_RADIUS_MM)
        return None if value is None else int(value)

    @property
    def bone_enclosure_min_directions(self) -> int | None:
        """Lesions need half their voxels to see bone in this many of six directions (card; None: off)."""
        value = self.card.get("bone_enclosure_min_directions", BONE_ENCLOSURE_MIN_DIRECTIONS)
        return None if value is None else int(value)

    @property
    def bone_enclosure_reach_mm(self) -> int:
        return int(self.card.get("bone_enclosure_reach_mm", BONE_ENCLOSURE_REACH_MM))

    @property
    def border_context_mm(self) -> int:
        """Mirrored context at the faces where the scan cuts the anatomy (card; absent, 0 or null:
        none). Off unless the card asks: whether it helps depends on how the weights were trained
        (measured on validation patches, docs/training.md)."""
        return int(self.card.get("border_context_mm") or 0)

    @property
    def metal_median_hu(self) -> float | None:
        """Lesions whose median HU is above this are dropped as metal (card; None: no filter)."""
        value = self.card.get("metal_median_hu", METAL_MEDIAN_HU)
        return None if value is None else float(value)

    def detect(self, array: np.ndarray, progress=None, cancel=None, tile=None, warn=None,
               seeds: Optional[torch.Tensor] = None) -> dict:
        """Tiled detection on a normalised 1 mm crop; boxes in crop voxel coordinates, on the CPU.
        ``seeds``: extra proposals ``[K, 6]`` in crop coordinates; the crop then runs as one tile."""
        volume = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
        align = self.config.stem_stride * 16
        if seeds is not None:
            tiles = [tuple(-(-int(n) // align) * align for n in array.shape)]
        else:
            first = tuple(tile) if tile else (CPU_TILE if self.device.type == "cpu" else DEFAULT_TILE)
            tiles = fallback_tile_sizes(first, align=align)
        extra = None if seeds is None else [seeds]

        def attempt(tile_size, device):
            if device != self.device:
                self.net.to(device)
                self.device = device

            def detect_fn(x: torch.Tensor) -> dict:
                with _cancel_hooks(self.net, cancel):
                    out = self.net(x.to(device), extra_proposals=extra)[0]
                return {k: v.float() if v.is_floating_point() else v for k, v in out.items()}

            return run_tiled(
                volume, detect_fn, tile_size, DEFAULT_OVERLAP, progress, cancel,
                align=align, nms_iou=self.config.box_nms_thresh, method="nms",
            )

        with torch.inference_mode(), _quiet_warnings():
            det, _, _ = with_oom_fallback(attempt, tiles, fallback_devices(self.device), warn)
        return det


def load_model(path: str | Path | None = None, device: str = "auto") -> Predictor:
    """Load the embedded default model (``path=None``) or a weights file with its model card."""
    state, card = load_weights(path)
    config = model_config_from_card(card)
    try:
        net = MaskRCNN3D(config)
        missing, unexpected = net.load_state_dict(state, strict=False)
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
        first = next((ln for ln in lines if "size mismatch" in ln), lines[0])
        raise BoneMetSegModelError(
            f"The weights do not fit the architecture in their model card ({first[:300]}); re-export the "
            "model or pass --model with weights and card that belong together."
        ) from None
    if missing or unexpected:
        raise BoneMetSegModelError(
            f"The weights do not fit the architecture in their model card ({len(missing)} missing, "
            f"{len(unexpected)} unexpected tensors, e.g. {(missing or unexpected)[:3]}); re-export the model."
        )
    dev = select_device(device)
    return Predictor(net.to(dev), card, dev)


def predict(image, model: Optional[Predictor] = None, **kwargs) -> Result:
    """Shortcut: ``load_model().predict(image, **kwargs)``."""
    return (model or load_model()).predict(image, **kwargs)


def _relabel_consecutive(labelmap: sitk.Image, lesions: list):
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


@contextmanager
def _cancel_hooks(net: torch.nn.Module, cancel):
    """Check ``cancel`` before each top-level block so a long forward pass stops within seconds."""
    if cancel is None:
        yield
        return
    handles = []
    for module in _cancel_points(net):
        handles.append(module.register_forward_pre_hook(lambda *_: check_cancel(cancel)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _cancel_points(net: torch.nn.Module):
    for name, module in net.named_modules():
        if name.count(".") <= 2 and len(list(module.children())) > 0 and name:
            yield module


@contextmanager
def _quiet_warnings():
    with pywarnings.catch_warnings():
        pywarnings.simplefilter("ignore", UserWarning)
        yield

"""End-to-end inference: CT image in, instance labelmap and lesion records out.

``load_model`` builds the network from a weights file and its model card; ``Predictor.predict``
runs read -> preprocess -> tiled detection -> postprocess and returns a :class:`Result` whose
labelmap has exactly the input geometry.
"""

from __future__ import annotations

import warnings as pywarnings
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ..ct_image import CTImage
from ..errors import BoneMetSegModelError
from ..io.read import as_ct
from ..model import MaskRCNN3D
from ..model.box_ops import flip_boxes, shift_boxes
from ..postprocess.config import PostprocessConfig
from ..postprocess.lesions import patient_summary
from ..postprocess.pipeline import postprocess
from ..preprocessing.pipeline import preprocess
from ..preprocessing.types import Preprocessed
from ..result import Result
from .border import cut_faces, drop_mirrored, pad_cut_faces
from .device import describe_device, fallback_devices, select_device
from .flips import FLIP_AXES, detect_mirrored, fuse_passes
from .seg_scores import blend_seg_scores
from .model_card import model_config_from_card, preprocess_config_from_card
from .progress import check_cancel
from .seeds import seed_boxes
from .stages import PredictionRun
from .tiling import fallback_tile_sizes, run_tiled, with_oom_fallback
from .weights import load_weights

DEFAULT_TILE = (192, 192, 192)  # voxels at 1 mm; a whole chest-CT bone crop is ~2-4 tiles
DEFAULT_OVERLAP = 48  # > the largest lesion (40 mm) so that every lesion is whole in one tile
CPU_TILE = (384, 384, 384)  # the CPU has more memory than speed: a chest/abdomen crop in one tile


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

    @property
    def postprocess_config(self) -> PostprocessConfig:
        """Detection threshold, bone filters and border context, as the model card asks."""
        return PostprocessConfig.from_card(self.card)

    @property
    def detection_threshold(self) -> float:
        return self.postprocess_config.detection_threshold

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
        settings = self.postprocess_config
        if threshold is not None:
            settings = replace(settings, detection_threshold=float(threshold))
        run = PredictionRun(progress, cancel, warn)
        run.settings.update(detection_threshold=settings.detection_threshold, origin_threshold=float(origin_threshold))
        ct = run.stage("read", "Reading CT", self._read, image, run)
        pre = run.stage("preprocess", "Resampling to 1 mm and cropping to bone",
                        preprocess, ct.image, self.preprocess_config)
        det = run.stage("inference", "Detecting lesions", self._detect_on_crop, pre, settings, run, tile,
                        seed_points_lps)
        labelmap, lesions = run.stage("postprocess", "Building lesion masks", postprocess, det, pre, ct.image,
                                      settings, origin_threshold, lambda: check_cancel(cancel))
        run.done(f"Found {len(lesions)} lesion(s)")
        return Result(
            labelmap=labelmap,
            lesions=lesions,
            patient=patient_summary(lesions, origin_threshold),
            timing_s=run.timing,
            device=describe_device(self.device),
            model=self.model_info,
            input=input_info(ct),
            warnings=run.warnings,
            settings=run.settings,
        )

    @staticmethod
    def _read(image, run: PredictionRun) -> CTImage:
        ct = as_ct(image)
        for w in ct.warnings:
            run.warn(w)
        return ct

    def _detect_on_crop(self, pre: Preprocessed, settings: PostprocessConfig, run: PredictionRun,
                        tile=None, seed_points_lps=None) -> dict:
        """Detections in crop coordinates, with mirrored context at the faces where the scan cuts
        the anatomy (``settings.border_context_mm``), boxes seeded at the given points and, when
        the card asks and the crop is small enough, scores averaged over mirrored passes (.flips)."""
        array, offset = pad_cut_faces(pre.array, cut_faces(pre), settings.border_context_mm)
        seeds = shift_boxes(seed_boxes(pre, seed_points_lps), [-o for o in offset]) if seed_points_lps else None
        flips = FLIP_AXES if settings.test_time_flips and array.size <= settings.test_time_flips_max_voxels else ()
        run.settings["test_time_flips"] = bool(flips)
        report = run.progress("inference")
        n_passes = 1 + len(flips)

        def detect(volume: np.ndarray, k: int) -> dict:
            """Pass ``k`` of ``n_passes`` (k > 0: mirrored along axis k - 1, and so are the seeds)."""
            def progress(fraction, message):
                report((k + fraction) / n_passes, message)
            pass_seeds = seeds if seeds is None or k == 0 else flip_boxes(seeds, k - 1, array.shape[k - 1])
            return self.detect(volume, progress, run.cancel, tile, run.warn, pass_seeds)

        det = detect(array, 0)
        if flips:
            det = fuse_passes(det, [detect_mirrored(detect, array, axis) for axis in flips])
        det = blend_seg_scores(det, self.net.config.seg_score_weight)
        return drop_mirrored(det, offset, pre.crop_size)

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


def input_info(ct: CTImage) -> dict:
    """The ``input`` entry of a result: path, size and spacing of the CT as read."""
    return {
        "path": ct.path,
        "size": list(ct.image.GetSize()),
        "spacing": [float(s) for s in ct.image.GetSpacing()],
    }


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

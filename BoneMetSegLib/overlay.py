"""A PNG summary: axial, coronal and sagittal CT slices with the lesions drawn on top.

The three planes pass through the largest lesion's centroid (the volume centre when there is no
lesion). Slices are resampled on square pixels along the LPS axes, so any spacing and any
direction matrix display undistorted, in radiological convention (patient right on screen left).
"""

from __future__ import annotations

import math
import os

import numpy as np
import SimpleITK as sitk
from matplotlib import patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .io.atomic import atomic_write
from .result import Result
from .vocabulary import DISCLAIMER, ORIGIN_COLORS, origin_rgb

BONE_WINDOW = (-500.0, 1300.0)  # HU, level 400 / width 1800
MAX_PIXELS = 512  # longest side of a panel
_FILL_ALPHA = 0.45
_BG = "black"
_FG = "white"

# (name, column axis, row axis (downwards), orientation letters: left, right, top, bottom)
_VIEWS = (
    ("Axial", (1, 0, 0), (0, 1, 0), ("R", "L", "A", "P")),
    ("Coronal", (1, 0, 0), (0, 0, -1), ("R", "L", "S", "I")),
    ("Sagittal", (0, 1, 0), (0, 0, -1), ("A", "P", "S", "I")),
)


def _physical_corners(image: sitk.Image) -> np.ndarray:
    size = image.GetSize()
    return np.array(
        [
            image.TransformContinuousIndexToPhysicalPoint(
                [-0.5 + (size[a] if (c >> a) & 1 else 0) for a in range(3)]
            )
            for c in range(8)
        ]
    )


def _focus_point(ct: sitk.Image, result: Result) -> np.ndarray:
    if result.lesions:
        largest = max(result.lesions, key=lambda les: les.volume_ml)
        return np.asarray(largest.centroid_lps_mm, dtype=float)
    centre = [(s - 1) / 2.0 for s in ct.GetSize()]
    return np.asarray(ct.TransformContinuousIndexToPhysicalPoint(centre), dtype=float)


def _plane_grid(corners: np.ndarray, focus: np.ndarray, u, v, pixel: float) -> sitk.Image:
    """One-slice reference image on the plane through ``focus`` spanned by ``u`` (cols), ``v`` (rows)."""
    u, v = np.asarray(u, float), np.asarray(v, float)
    n = np.cross(u, v)
    pu, pv = corners @ u, corners @ v
    nu = max(1, int(math.ceil((pu.max() - pu.min()) / pixel)))
    nv = max(1, int(math.ceil((pv.max() - pv.min()) / pixel)))
    origin = (focus @ n) * n + (pu.min() + pixel / 2) * u + (pv.min() + pixel / 2) * v
    ref = sitk.Image([nu, nv, 1], sitk.sitkUInt8)
    ref.SetSpacing([pixel] * 3)
    ref.SetOrigin(origin.tolist())
    ref.SetDirection(np.column_stack([u, v, n]).flatten().tolist())
    return ref


def _sample(image: sitk.Image, ref: sitk.Image, label: bool) -> np.ndarray:
    if label:
        out = sitk.Resample(image, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, image.GetPixelID())
    else:
        out = sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), ref, sitk.Transform(), sitk.sitkLinear, -1024.0)
    return sitk.GetArrayFromImage(out)[0]  # (rows, cols)


def _patient_line(result: Result) -> str:
    p = result.patient
    if not result.lesions or p.predicted_origin == "none":
        return "No bone metastasis detected"
    n = len(result.lesions)
    prob = p.lung_origin_probability
    verdict = "lung" if p.predicted_origin == "lung" else "other (non-lung)"
    return (f"{n} bone lesion{'s' if n != 1 else ''} - predicted primary: {verdict} "
            f"(lung-origin probability {prob:.2f})")


def _draw_panel(ax, ct2d, lab2d, result: Result, name: str, letters, position_mm: float) -> list:
    """Draw one plane; returns its lesion labels as ``(text, row below the lesion)``."""
    ax.imshow(ct2d, cmap="gray", vmin=BONE_WINDOW[0], vmax=BONE_WINDOW[1], interpolation="bilinear")
    by_value = {les.label_value: les for les in result.lesions}
    labels = []
    fill = np.zeros(ct2d.shape + (4,), dtype=float)
    stroke = [patheffects.withStroke(linewidth=2.5, foreground="black")]
    for value in np.unique(lab2d):
        les = by_value.get(int(value))
        if les is None:
            continue
        mask = lab2d == value
        color = origin_rgb(les.predicted_origin)
        fill[mask] = (*color, _FILL_ALPHA)
        ax.contour(mask.astype(float), levels=[0.5], colors=[color], linewidths=1.6)
        rows, cols = np.nonzero(mask)
        on_right = cols.mean() < ct2d.shape[1] / 2  # put the label on the roomier side
        labels.append((ax.text(  # placed by _place_labels
            cols.max() + 4 if on_right else cols.min() - 4, rows.min() - 2,
            f"{les.name} (lung {les.lung_origin_probability:.2f})",
            color=color, fontsize=9, fontweight="bold", ha="left" if on_right else "right", va="bottom",
            path_effects=stroke, clip_on=False, gid="lesion-label",
        ), rows.max() + 2))
    ax.imshow(fill, interpolation="nearest")
    h, w = ct2d.shape
    style = dict(color=_FG, fontsize=10, fontweight="bold", path_effects=stroke, gid="orientation")
    left, right, top, bottom = letters
    ax.text(4, h / 2, left, ha="left", va="center", **style)
    ax.text(w - 5, h / 2, right, ha="right", va="center", **style)
    ax.text(w / 2, 3, top, ha="center", va="top", **style)
    ax.text(w / 2, h - 4, bottom, ha="center", va="bottom", **style)
    coord = {"Axial": "z", "Coronal": "y", "Sagittal": "x"}[name]
    ax.set_title(f"{name}  ({coord} = {position_mm:.1f} mm LPS)", color=_FG, fontsize=10)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_axis_off()
    return labels


def _place_labels(fig: Figure, labels: list) -> None:
    """Move each lesion label ``(text, row_below)`` below its lesion (to ``row_below``) when it
    covers an orientation letter (a lesion at the top of the scan puts its label on the "S"), then
    shift it back inside its panel where it sticks out."""
    renderer = fig.canvas.get_renderer()
    for text, row_below in labels:
        ax = text.axes
        letters = [t.get_window_extent(renderer) for t in ax.texts if t.get_gid() == "orientation"]
        for _ in range(2):  # placed, then (if it now covers a letter) placed below the lesion
            _shift_inside(text, ax, renderer)
            bb = text.get_window_extent(renderer).padded(3)
            if not any(bb.overlaps(letter) for letter in letters) or text.get_va() == "top":
                break
            text.set_y(row_below)
            text.set_va("top")


def _shift_inside(text, ax, renderer) -> None:
    """Shift ``text`` back inside its panel where it sticks out."""
    box = ax.get_window_extent(renderer)
    bb = text.get_window_extent(renderer)
    dx = min(0.0, box.x1 - 2 - bb.x1) or max(0.0, box.x0 + 2 - bb.x0)
    dy = min(0.0, box.y1 - 2 - bb.y1) or max(0.0, box.y0 + 2 - bb.y0)
    if dx or dy:
        x, y = ax.transData.transform(text.get_position())
        text.set_position(ax.transData.inverted().transform((x + dx, y + dy)))


def render_overlay(ct: sitk.Image, result: Result, note: str = "") -> Figure:
    """The overlay figure (not saved). ``note`` is appended to the title (e.g. "SYNTHETIC LESION")."""
    if ct.GetDimension() != 3:
        raise ValueError("the CT must be a 3D image")
    corners = _physical_corners(ct)
    focus = _focus_point(ct, result)
    extent = corners.max(axis=0) - corners.min(axis=0)
    pixel = max(min(ct.GetSpacing()), float(extent.max()) / MAX_PIXELS)

    panels = []
    for (name, u, v, letters), axis in zip(_VIEWS, (2, 1, 0)):
        ref = _plane_grid(corners, focus, u, v, pixel)
        panels.append((name, letters, focus[axis], _sample(ct, ref, False), _sample(result.labelmap, ref, True)))

    widths = [p[3].shape[1] / p[3].shape[0] for p in panels]
    panel_h = 4.6
    fig = Figure(figsize=(min(max(sum(widths) * panel_h + 0.6, 9.0), 20.0), panel_h + 1.5),
                 dpi=110, facecolor=_BG)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(1, 3, width_ratios=widths, left=0.01, right=0.99, top=0.83, bottom=0.10, wspace=0.03)
    labels = []
    for i, (name, letters, pos, ct2d, lab2d) in enumerate(panels):
        labels += _draw_panel(fig.add_subplot(grid[0, i]), ct2d, lab2d, result, name, letters, pos)

    title = "BoneMetSeg - " + _patient_line(result)
    if note:
        title += f"   [{note}]"
    fig.suptitle(title, color=_FG, fontsize=13, fontweight="bold", y=0.975)
    handles = [Patch(facecolor=c, edgecolor=c, label=f"{o} origin") for o, c in ORIGIN_COLORS.items()]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.925), ncol=2, frameon=False,
               labelcolor=_FG, fontsize=9)
    _place_labels(fig, labels)
    fig.text(0.5, 0.025, DISCLAIMER, ha="center", va="bottom", color="#ffcc66", fontsize=10, style="italic")
    return fig


def write_overlay_png(
    ct: sitk.Image, result: Result, path: str | os.PathLike, overwrite: bool = False, note: str = ""
) -> None:
    """Write the three-plane overlay of ``result`` on ``ct`` as a PNG (atomically)."""
    with atomic_write(path, overwrite) as tmp:
        save_overlay_png(ct, result, tmp, note)


def save_overlay_png(ct: sitk.Image, result: Result, path: str | os.PathLike, note: str = "") -> None:
    """Write the overlay PNG to exactly ``path`` (a temporary file of the caller)."""
    fig = render_overlay(ct, result, note)
    fig.savefig(str(path), format="png", facecolor=fig.get_facecolor())


__all__ = ["write_overlay_png", "save_overlay_png", "render_overlay", "BONE_WINDOW"]

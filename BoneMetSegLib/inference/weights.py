"""Saving and loading model weights: a plain tensor ``state_dict`` plus its JSON model card.

The ``.pt`` file is checked against the SHA-256 in the card *before* it is unpickled, and it is
then loaded with ``torch.load(weights_only=True)``, so a file holding arbitrary Python objects is
refused instead of executed.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import BoneMetSegModelError
from ..io.atomic import atomic_write
from .model_card import (
    WEIGHTS_SUFFIX,
    card_path_for,
    complete_card,
    read_model_card,
    write_model_card,
)

_HALF_TYPES = (torch.float16, torch.bfloat16)


def default_weights_path() -> Path:
    """``BoneMetSegLib/weights/default.pt`` (the weights shipped with the package)."""
    return Path(__file__).resolve().parents[1] / "weights" / "default.pt"


def sha256_of_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _plain_state_dict(state_dict: Mapping, half: bool) -> dict[str, torch.Tensor]:
    """Detached CPU tensors (own storage), floating ones cast to float16 when ``half``."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise TypeError(f"state_dict must map str to Tensor; got {key!r}: {type(value).__name__}")
        t = value.detach().to("cpu")
        if half and t.is_floating_point():
            t = t.to(torch.float16)
        t = t.contiguous()
        if t.untyped_storage().nbytes() != t.nbytes:  # a view: do not save the whole storage
            t = t.clone()
        out[key] = t
    return out


def save_weights(state_dict: Mapping, card: dict, path: str | Path, half: bool = False) -> dict:
    """Write ``path`` (``.pt``) and its card (same stem, ``.json``), each atomically.

    ``card`` holds the descriptive fields (see ``docs/model_card_format.md``); ``weights_file``,
    ``sha256`` and ``weights_dtype`` are computed here and defaults are filled in. With ``half``
    floating-point tensors are stored as float16 (``load_weights`` casts them back to float32).
    Returns the card as written.
    """
    path = Path(path)
    if path.suffix.lower() != WEIGHTS_SUFFIX:
        path = path.with_suffix(WEIGHTS_SUFFIX)
    for key in ("version", "architecture", "preprocessing"):
        if key not in card:
            raise ValueError(f"model card needs '{key}' before saving weights")
    tensors = _plain_state_dict(state_dict, half)
    with atomic_write(path, overwrite=True) as tmp:
        # through memory: saved to a path, the archive is named after the (random) temporary
        # file, so the same tensors gave other bytes and another sha256 on every export
        buffer = io.BytesIO()
        torch.save(tensors, buffer)
        tmp.write_bytes(buffer.getvalue())
        sha = sha256_of_file(tmp)
    full = complete_card(card, path.name, sha, "float16" if half else "float32")
    write_model_card(full, path)
    return full


def _missing_weights_error(pt_path: Path, card_path: Path | None = None) -> BoneMetSegModelError:
    if pt_path.resolve() == default_weights_path().resolve() or (
        card_path is not None and card_path.resolve() == card_path_for(default_weights_path()).resolve()
    ):
        return BoneMetSegModelError(
            f"The embedded model weights are missing ({default_weights_path()} and its .json card). "
            "Export trained weights with `python -m training.export` (see docs/training.md), "
            "or pass --model PATH to a .pt file with its .json model card."
        )
    return BoneMetSegModelError(
        f"Weights file not found: {pt_path}. Check the path given with --model (a .pt file with its "
        ".json model card next to it)."
    )


def resolve_weights_paths(path: str | Path | None = None) -> tuple[Path, Path, dict]:
    """``(pt_path, card_path, card)`` for a ``.pt`` or ``.json`` path (None: the default weights)."""
    path = Path(path) if path is not None else default_weights_path()
    card_path = card_path_for(path)
    if not card_path.is_file():
        pt_guess = path if path.suffix.lower() != ".json" else path.with_suffix(WEIGHTS_SUFFIX)
        if not pt_guess.exists():
            raise _missing_weights_error(pt_guess, card_path)
    card = read_model_card(card_path)  # raises "model card not found" when the .pt is alone
    pt_path = card_path.parent / str(card["weights_file"])
    if path.suffix.lower() == WEIGHTS_SUFFIX:
        pt_path = path  # the user's file; the sha256 check guards that it is the card's file
    return pt_path, card_path, card


def load_weights(path: str | Path | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Load ``(state_dict, card)`` from a ``.pt`` or ``.json`` path (None: the default weights).

    Raises :class:`BoneMetSegModelError` when the card is missing or invalid, the file does not
    match the card's SHA-256, or the file is not a flat ``dict[str, Tensor]``. Half-precision
    tensors are returned as float32.
    """
    pt_path, card_path, card = resolve_weights_paths(path)
    if not pt_path.is_file():
        raise _missing_weights_error(pt_path, card_path)
    sha = sha256_of_file(pt_path)
    if sha != str(card["sha256"]).lower():
        raise BoneMetSegModelError(
            f"The weights file {pt_path} does not match its model card {card_path.name} "
            f"(sha256 {sha[:12]}... instead of {str(card['sha256'])[:12]}...); re-download or re-export "
            "the model."
        )
    try:
        obj = torch.load(pt_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError...: never execute, never crash
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BoneMetSegModelError(
            f"The weights file {pt_path} is not a plain tensor state_dict and was refused "
            f"({first}); use weights exported with `python -m training.export`."
        ) from None
    if not isinstance(obj, Mapping) or not obj:
        raise BoneMetSegModelError(
            f"The weights file {pt_path} does not hold a state_dict (a dict of tensors) but "
            f"{type(obj).__name__}; use weights exported with `python -m training.export`."
        )
    state: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise BoneMetSegModelError(
                f"The weights file {pt_path} is not a flat state_dict: entry {key!r} is a "
                f"{type(value).__name__}, not a tensor; use weights exported with `python -m training.export`."
            )
        state[key] = value.float() if value.dtype in _HALF_TYPES else value
    return state, card


__all__ = [
    "default_weights_path",
    "save_weights",
    "load_weights",
    "resolve_weights_paths",
    "sha256_of_file",
]

"""Choosing the compute device: CUDA, Apple MPS or CPU."""

from __future__ import annotations

import torch

from ..errors import BoneMetSegInputError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def select_device(requested: str | torch.device = "auto") -> torch.device:
    """Return the device to run on.

    ``"auto"`` picks CUDA, then Apple MPS, then CPU. ``"cuda"``, ``"cuda:N"`` and ``"mps"`` must
    be available (else :class:`BoneMetSegInputError`); ``"cpu"`` always works.
    """
    text = str(requested).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not mps_available():
            raise BoneMetSegInputError(
                "Device 'mps' (Apple GPU) is not available on this computer; use --device cpu "
                "(or --device auto)."
            )
        return torch.device("mps")
    if text == "cuda" or text.startswith("cuda:"):
        index = None
        if text != "cuda":
            suffix = text[len("cuda:"):]
            if not suffix.isdigit():
                raise BoneMetSegInputError(f"Unknown device {requested!r}; use auto, cpu, cuda, cuda:N or mps.")
            index = int(suffix)
        if not torch.cuda.is_available():
            raise BoneMetSegInputError(
                f"Device {text!r} (NVIDIA GPU) is not available: this PyTorch has no CUDA support or "
                "no GPU was found; use --device cpu (or --device auto)."
            )
        if index is not None and index >= torch.cuda.device_count():
            raise BoneMetSegInputError(
                f"Device {text!r} does not exist: only {torch.cuda.device_count()} CUDA device(s) "
                "found; use --device cuda:0 or --device cpu."
            )
        return torch.device(text)
    raise BoneMetSegInputError(f"Unknown device {requested!r}; use auto, cpu, cuda, cuda:N or mps.")


def fallback_devices(device: torch.device | str) -> list[torch.device]:
    """``[device, cpu]`` (or ``[cpu]``): the order in which to retry after running out of memory."""
    device = torch.device(device)
    return [device] if device.type == "cpu" else [device, torch.device("cpu")]


def empty_device_cache(device: torch.device | str | None = None) -> None:
    """Release cached accelerator memory (after an out-of-memory error). Safe on CPU-only builds."""
    dtype = torch.device(device).type if device is not None else None
    if dtype in (None, "cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
    if dtype in (None, "mps") and mps_available() and hasattr(torch, "mps"):
        torch.mps.empty_cache()


def describe_device(device: torch.device | str) -> str:
    """Human-readable device name, e.g. ``"cuda (NVIDIA H100)"``."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


__all__ = [
    "DEVICE_CHOICES",
    "select_device",
    "fallback_devices",
    "empty_device_cache",
    "describe_device",
    "mps_available",
]

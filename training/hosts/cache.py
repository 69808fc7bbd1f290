"""Cache of loaded hosts as ``.npy`` files under ``$BONEMETSEG_CACHE/hosts`` (else
``~/.cache/bonemetseg/hosts``), keyed by the source files' path, size and time."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from BoneMetSegLib.io.atomic import atomic_folder

from .host import Host, make_grid
from .noise import NoiseModel

CACHE_VERSION = 4


def host_cache_dir() -> Path:
    """``$BONEMETSEG_CACHE/hosts`` or ``~/.cache/bonemetseg/hosts``."""
    env = os.environ.get("BONEMETSEG_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "bonemetseg") / "hosts"


def cached(key: str, sources: list, build, cache_dir: Path | None, use_cache: bool) -> Host:
    if not use_cache:
        return build()
    stamp = [CACHE_VERSION] + [(str(Path(p).resolve()), Path(p).stat().st_size,
                                int(Path(p).stat().st_mtime)) for p in sources]
    digest = hashlib.sha1(json.dumps(stamp).encode()).hexdigest()[:12]
    folder = Path(cache_dir or host_cache_dir()) / f"{key}-{digest}"
    if (folder / "meta.json").is_file():
        return _read_host(folder)
    host = build()
    _write_host(host, folder)
    return host


def _write_host(host: Host, folder: Path) -> None:
    hu = np.clip(np.round(host.image_hu), -32768, 32767).astype(np.int16)
    noise = host.get_noise()
    meta = {"name": host.name, "origin": host.grid.GetOrigin(),
            "direction": host.grid.GetDirection(),
            "noise": {"std": noise.std, "corr_sigma": list(noise.corr_sigma)}}
    try:
        with atomic_folder(folder) as tmp:
            np.save(tmp / "image_hu.npy", hu)
            np.save(tmp / "bone.npy", host.bone)
            if host.site_labels is not None:
                np.save(tmp / "sites.npy", host.site_labels)
            if host.bone_ids is not None:
                np.save(tmp / "bone_ids.npy", host.bone_ids)
            (tmp / "meta.json").write_text(json.dumps(meta))
    except FileExistsError:  # another process won the race: keep its copy
        pass


def _read_host(folder: Path) -> Host:
    meta = json.loads((folder / "meta.json").read_text())
    hu = np.load(folder / "image_hu.npy").astype(np.float32)
    bone = np.load(folder / "bone.npy")
    sites = np.load(folder / "sites.npy") if (folder / "sites.npy").is_file() else None
    grid = make_grid(hu.shape, meta["origin"], meta["direction"])
    ids = np.load(folder / "bone_ids.npy") if (folder / "bone_ids.npy").is_file() else None
    noise = NoiseModel(meta["noise"]["std"], tuple(meta["noise"]["corr_sigma"]))
    return Host(meta["name"], hu, bone, grid, sites, noise, ids)


__all__ = ["CACHE_VERSION", "host_cache_dir", "cached"]

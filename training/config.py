"""The training recipe as a YAML file, read into dataclasses and checked before anything runs.

Sections (every key optional; defaults = the paper's recipe, ``training/configs/paper.yaml``):

* ``model``: ``BoneMetSegLib.model.ModelConfig`` fields (the architecture; goes into the model card);
* ``preprocess``: ``PreprocessConfig`` fields (HU window, z-score statistics);
* ``data``: where cases come from and how they are split and cut into patches (``DataConfig``);
* ``augment``: rotation, scaling, flips (``AugmentConfig``);
* ``optim``: optimiser, batch, mixed precision (``OptimConfig``);
* ``schedule``: epochs, learning-rate drops, validation, early stopping, caps (``ScheduleConfig``).

``load_config(path)`` raises :class:`ConfigError` naming the file, the key and what to do.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from BoneMetSegLib.model.config import ModelConfig
from BoneMetSegLib.preprocessing.types import PreprocessConfig

from .synthetic import PRESETS, SyntheticConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST_NAMES = ("abdomen", "chest", "lumbar", "dicom")  # training.hosts.load_host names
TRAINING_HOSTS = ("abdomen", "chest", "lumbar")  # the default training hosts
# The real CT never used for training or validation: the TotalSegmentator DICOM series with its
# TotalSegmentator labels (training.hosts "dicom"; the same CT as the path below).
DEFAULT_HELD_OUT = "dicom"
DICOM_HOST_PATH = "totalsegmentator-example/ct_dicom_series"


class ConfigError(ValueError):
    """A training config that cannot be used; the message says which key and what to do."""


@dataclass
class DataConfig:
    source: str = "synthetic"  # "synthetic" (lesions planted in real host CT) or "dataset"
    hosts: list = field(default_factory=lambda: list(TRAINING_HOSTS))  # host names or CT paths
    held_out_hosts: list = field(default_factory=lambda: [DEFAULT_HELD_OUT])  # never trained on
    shared_data: str | None = None  # default: $BONEMETSEG_SHARED_DATA or ../shared/data
    dataset_dir: str | None = None  # source "dataset": folder of annotated cases (BoneMetSegLib.dataset)
    synthetic: Any = "default"  # a preset name (synthetic.PRESETS), SyntheticConfig fields, or {mix: [{weight, config}]}
    n_patients: int = 200  # synthetic patients, split train:val:test
    split: list = field(default_factory=lambda: [0.70, 0.15, 0.15])  # by patient
    patch_size: list = field(default_factory=lambda: [96, 96, 96])  # (z, y, x) voxels = mm
    p_foreground: float = 0.67  # patch around a lesion, else around random bone
    hard_negatives: str | None = None  # training.mine_negatives JSON: false positives of an earlier model
    p_hard_negative: float = 0.5  # share of the non-lesion patches that hold one of them
    min_visible_fraction: float = 0.5  # a lesion cut by the patch border below this: no target
    pool_size: int = 8  # cases held in memory per data worker
    refresh_every: int = 20  # batches between replacing one pooled case with another patient
    num_workers: int = 0  # DataLoader worker processes per rank (0: in the training process)
    # real CT patches with box labels (BLDS layout: CT files + lesions.csv; relative paths are
    # taken from the shared data folder) mixed into training: each training patch comes from one
    # of them with probability p_real_patch (training.real_patches; no masks, no origins)
    real_patches: str | None = None
    real_patches_exclude: list = field(default_factory=list)  # patch files left out (leave-one-patch-out)
    p_real_patch: float = 0.0
    # the same folder's lesions pasted into training patients (training.lesion_paste): each
    # synthetic training patient gets n_paste_real (min, max) of them with probability p_paste_real
    p_paste_real: float = 0.0
    n_paste_real: list = field(default_factory=lambda: [1, 2])

    def real_patches_dir(self, shared_data: Path) -> Path | None:
        """The folder of ``real_patches`` (None when unset)."""
        if not self.real_patches:
            return None
        path = Path(self.real_patches)
        return path if path.is_absolute() else Path(shared_data) / path

    def synthetic_config(self) -> SyntheticConfig:
        """The generator settings of a single-config ``synthetic`` (not a mixture)."""
        mix = self.synthetic_mix()
        if len(mix) != 1:
            raise ValueError("data.synthetic is a mixture; use synthetic_mix()")
        return mix[0][1]

    def synthetic_mix(self) -> list:
        """``[(weight, SyntheticConfig), ...]`` with weights summing to 1.

        ``synthetic`` is one generator setting (a preset name, or ``SyntheticConfig`` fields,
        with ``preset: <name>`` to change a preset rather than the default) or ``{mix: [{weight: w, config: <one setting>}, ...]}``: each synthetic patient
        draws one setting with these weights (``training.data_source``)."""
        spec = self.synthetic
        if isinstance(spec, dict) and "mix" in spec:
            if set(spec) != {"mix"}:
                raise ValueError(f"a mixture takes only the key 'mix', not {sorted(set(spec) - {'mix'})}")
            entries = spec["mix"]
            if not isinstance(entries, list) or not entries:
                raise ValueError("mix must be a non-empty list of {weight: w, config: <setting> | {[preset: <setting>,] fields}}")
            out = []
            for k, e in enumerate(entries):
                if not isinstance(e, dict) or set(e) != {"weight", "config"}:
                    raise ValueError(f"mix entry {k} must be {{weight: w, config: ...}}, not {e!r}")
                w = e["weight"]
                if isinstance(w, bool) or not isinstance(w, (int, float)) or not w > 0:
                    raise ValueError(f"mix entry {k}: weight must be a number > 0, not {w!r}")
                if isinstance(e["config"], dict) and "mix" in e["config"]:
                    raise ValueError(f"mix entry {k}: a mixture cannot hold another mixture")
                out.append((float(w), _one_synthetic(e["config"])))
            total = sum(w for w, _ in out)
            return [(w / total, c) for w, c in out]
        return [(1.0, _one_synthetic(spec))]


def _one_synthetic(spec) -> SyntheticConfig:
    if spec is None or spec in PRESETS:
        return SyntheticConfig.preset(spec or "default")
    if not isinstance(spec, dict):
        raise ValueError(f"expected {', '.join(map(repr, PRESETS))} or a mapping of SyntheticConfig "
                         f"fields, not {spec!r}")
    fields_ = dict(spec)
    base = fields_.pop("preset", "default")
    if base not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(map(repr, PRESETS))}, not {base!r}")
    if base == "default":
        return SyntheticConfig.from_dict(fields_)
    overrides = SyntheticConfig.from_dict(fields_)  # checks the keys, makes lists tuples
    return replace(SyntheticConfig.preset(base), **{k: getattr(overrides, k) for k in fields_})


@dataclass
class AugmentConfig:
    enabled: bool = True
    rotate_deg: float = 15.0  # uniform in [-r, r] about each axis
    scale: list = field(default_factory=lambda: [0.8, 1.2])  # isotropic; lesion volume x s^3
    p_affine: float = 1.0  # probability of rotating/scaling a patch
    flip_axes: list = field(default_factory=lambda: [0, 1, 2])  # each flipped with p = 0.5
    # intensity (not in the paper's recipe: off by default): with p_intensity, a patch is
    # blurred, gets extra noise and a contrast / offset change (training.augment.augment_intensity)
    p_intensity: float = 0.0
    blur_sigma: list = field(default_factory=lambda: [0.0, 1.0])  # voxels, uniform
    noise_hu: list = field(default_factory=lambda: [0.0, 20.0])  # extra noise std (HU), uniform
    p_noise: float = 1.0  # probability that an intensity-augmented patch gets the extra noise
    contrast: list = field(default_factory=lambda: [0.9, 1.1])  # HU x c, uniform
    shift_hu: float = 20.0  # HU + uniform(-shift, shift)
    sharpen: list = field(default_factory=lambda: [0.0, 0.0])  # unsharp-mask amount, uniform
    # "both": the blur, then the unsharp mask; "one": either of them (p 0.5), one reconstruction
    # kernel smoother or sharper than the host's, so quieter scans than the hosts are made too
    kernel: str = "both"


@dataclass
class OptimConfig:
    name: str = "adamw"
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    batch_size: int = 8  # global: split evenly over the DDP ranks
    grad_clip: float = 10.0  # max gradient norm (0: off)
    amp: bool = True  # mixed precision, only ever on CUDA
    find_unused_parameters: bool = False  # DDP option
    seg_head_lr_mult: float = 1.0  # the lesion map's LR = lr x this (a head new to --init weights)


@dataclass
class ScheduleConfig:
    epochs: int = 50
    steps_per_epoch: int = 200  # an epoch over a patch stream = this many optimiser steps
    lr_milestones: list = field(default_factory=lambda: [40])  # epochs after which lr *= gamma
    lr_gamma: float = 0.1
    val_batches: int = 16  # fixed validation batches (from the validation patients)
    val_detection: bool = True  # also the lesion-detection FROC on the validation patches
    monitor: str = "loss"  # what best.pt and early stopping follow: "loss" (the paper) or "detection" (FROC)
    early_stopping_patience: int = 10  # epochs without a better monitored figure; 0: off
    early_stopping_min_delta: float = 0.0
    checkpoint_every_steps: int = 0  # also write last.pt inside an epoch (0: at epoch ends)
    max_steps: int | None = None  # stop (resumably) after this many steps in total
    max_minutes: float | None = None  # stop (resumably) after this much wall time


@dataclass
class TrainConfig:
    name: str = "paper"
    seed: int = 0
    run_dir: str | None = None  # default runs/<name>
    version: str = "1.0.0"  # version of the weights this run produces
    init_weights: str | None = None  # start from these exported weights (.pt + card), e.g. a pre-training run
    model: ModelConfig = field(default_factory=ModelConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    source_path: str | None = None  # the YAML it came from (set by load_config)

    # ------------------------------------------------------------------ helpers
    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if hasattr(value, "to_dict"):
                value = value.to_dict()
            elif dataclasses.is_dataclass(value):
                value = dataclasses.asdict(value)
            out[f.name] = value
        return out

    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir) if self.run_dir else REPO_ROOT / "runs" / self.name

    def shared_data_dir(self) -> Path:
        if self.data.shared_data:
            return Path(self.data.shared_data)
        env = os.environ.get("BONEMETSEG_SHARED_DATA")
        return Path(env) if env else REPO_ROOT.parent / "shared" / "data"

    def host_path(self, host: str) -> str:
        """A host name ("abdomen", ...) as is; a path made absolute (relative: to shared data)."""
        if host in HOST_NAMES or Path(host).is_absolute():
            return host
        return str(self.shared_data_dir() / host)


SECTIONS = {
    "model": ModelConfig, "preprocess": PreprocessConfig, "data": DataConfig,
    "augment": AugmentConfig, "optim": OptimConfig, "schedule": ScheduleConfig,
}


def parse_overrides(items: list[str]) -> dict:
    """``["optim.lr=3e-4", "data.hosts=[abdomen]"]`` -> ``{"optim.lr": 0.0003, ...}`` (YAML values)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"training config {path} not found; see training/configs/ for examples")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None


def load_augment(path: str | Path) -> "AugmentConfig":
    """Only the ``augment`` section of a recipe, validated (what a measurement of the training
    images needs; the recipe's data files, such as mined negatives, need not exist)."""
    path = Path(path)
    raw = _read_yaml(path)
    augment = _section(AugmentConfig, raw.get("augment") or {}, "augment", str(path))
    problems = _augment_problems(augment)
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    return augment


def load_config(path: str | Path, overrides: dict | None = None) -> TrainConfig:
    """Read and validate a YAML config; ``overrides`` = ``{"section.key": value}``."""
    path = Path(path)
    raw = _read_yaml(path)
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return config_from_dict(raw, source=str(path))


def config_from_dict(raw: dict, source: str = "config") -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from a parsed YAML mapping."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    top = {f.name for f in dataclasses.fields(TrainConfig)} - {"source_path"}
    unknown = set(raw) - top
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s) {sorted(unknown)}; allowed: {sorted(top)}")
    kwargs = {k: v for k, v in raw.items() if k not in SECTIONS}
    for name, cls in SECTIONS.items():
        kwargs[name] = _section(cls, raw.get(name) or {}, name, source)
    cfg = TrainConfig(**kwargs, source_path=source)
    problems = validate(cfg)
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    return cfg


def _section(cls, values: dict, name: str, source: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: section '{name}' must be a mapping, not {type(values).__name__}")
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - allowed
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {sorted(unknown)} in section '{name}'; "
                          f"allowed: {sorted(allowed)}")
    values = {k: _typed(cls, k, v, f"{source}: {name}.{k}") for k, v in values.items()}
    if hasattr(cls, "from_dict"):
        return cls.from_dict(values)
    return cls(**values)


def _typed(cls, key: str, value, where: str):
    """``value`` checked against the field's annotation (numbers that YAML read as strings, such
    as ``1e-4``, are read as floats)."""
    kind = str(next(f for f in dataclasses.fields(cls) if f.name == key).type)
    if value is None:
        if "None" in kind:
            return value
        raise ConfigError(f"{where} must be set (null is not allowed)")
    base = kind.split("|")[0].strip()
    if base == "bool" and not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, not {value!r}")
    if base == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where} must be an integer, not {value!r}")
    if base == "float":
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a number, not {value!r}") from None
    if base in ("list", "tuple") and not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where} must be a list, not {value!r}")
    if base == "str" and not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, not {value!r}")
    return value


def validate(cfg: TrainConfig) -> list[str]:
    """Every problem of ``cfg``, human readable; ``[]`` when it can be used."""
    return ([f"model.{problem}" for problem in cfg.model.problems()] + _data_problems(cfg)
            + _augment_problems(cfg.augment) + _optim_problems(cfg.optim) + _schedule_problems(cfg.schedule))


def _data_problems(cfg: TrainConfig) -> list[str]:
    """Problems of the ``data`` section (held-out hosts are resolved with ``cfg``)."""
    p: list[str] = []
    d = cfg.data
    if d.source not in ("synthetic", "dataset"):
        p.append(f"data.source must be 'synthetic' or 'dataset', not {d.source!r}")
    if d.source == "dataset" and not d.dataset_dir:
        p.append("data.source is 'dataset' but data.dataset_dir is not set (a folder of annotated cases)")
    if d.source == "synthetic":
        if not d.hosts:
            p.append("data.hosts is empty: name at least one host CT (abdomen, chest, lumbar or a CT path)")
        clash = {_host_key(cfg, h) for h in d.hosts} & {_host_key(cfg, h) for h in d.held_out_hosts}
        if clash:
            p.append(f"host(s) {sorted(clash)} are both in data.hosts and data.held_out_hosts; "
                     "a held-out host must never be trained on")
        if d.n_patients < 3:
            p.append(f"data.n_patients must be >= 3 (train, validation, test), not {d.n_patients}")
        try:
            d.synthetic_mix()
        except (TypeError, ValueError) as exc:
            p.append(f"data.synthetic: {exc}")
    if len(d.split) != 3 or any(not _number(v) or v < 0 for v in d.split) or abs(sum(d.split) - 1) > 1e-6:
        p.append(f"data.split must be three fractions (train, val, test) summing to 1, not {d.split}")
    elif d.split[0] <= 0 or d.split[1] <= 0:
        p.append("data.split needs a training and a validation share > 0")
    if len(d.patch_size) != 3 or any(not isinstance(v, int) or v < 16 for v in d.patch_size):
        p.append(f"data.patch_size must be three integers >= 16 (z, y, x voxels), not {d.patch_size}")
    if not 0 <= d.p_foreground <= 1:
        p.append(f"data.p_foreground must be in [0, 1], not {d.p_foreground}")
    if not 0 <= d.p_hard_negative <= 1:
        p.append(f"data.p_hard_negative must be in [0, 1], not {d.p_hard_negative}")
    p += _real_patch_problems(cfg)
    if d.hard_negatives and not Path(d.hard_negatives).is_file():
        p.append(f"data.hard_negatives: {d.hard_negatives} not found; make it with python -m training.mine_negatives")
    if not 0 < d.min_visible_fraction <= 1:
        p.append(f"data.min_visible_fraction must be in (0, 1], not {d.min_visible_fraction}")
    for key in ("pool_size", "refresh_every"):
        if getattr(d, key) < 1:
            p.append(f"data.{key} must be >= 1")
    if d.num_workers < 0:
        p.append("data.num_workers must be >= 0")
    return p


def _real_patch_problems(cfg: TrainConfig) -> list[str]:
    """Problems of ``data.real_patches`` / ``p_real_patch``."""
    d = cfg.data
    if not _number(d.p_real_patch) or not 0 <= d.p_real_patch < 1:
        return [f"data.p_real_patch must be in [0, 1), not {d.p_real_patch}"]
    if not _number(d.p_paste_real) or not 0 <= d.p_paste_real <= 1:
        return [f"data.p_paste_real must be in [0, 1], not {d.p_paste_real}"]
    n = d.n_paste_real
    if not (isinstance(n, (list, tuple)) and len(n) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                for v in n) and 1 <= n[0] <= n[1]):
        return [f"data.n_paste_real must be [min, max] whole numbers with 1 <= min <= max, not {n!r}"]
    for key in ("p_real_patch", "p_paste_real"):
        if getattr(d, key) > 0 and not d.real_patches:
            return [f"data.{key} > 0 but data.real_patches is not set (a folder of CT patches and lesions.csv)"]
    if d.p_paste_real > 0 and d.source != "synthetic":
        return ["data.p_paste_real > 0 pastes real lesions into synthetic patients: set data.source to synthetic"]
    if not d.real_patches:
        return []
    folder = d.real_patches_dir(cfg.shared_data_dir())
    if not (folder / "lesions.csv").is_file():
        return [f"data.real_patches: {folder / 'lesions.csv'} not found (BLDS layout: CT patches + lesions.csv)"]
    from .evaluate import read_blds

    names = set(read_blds(folder))
    p = [f"data.real_patches_exclude: {n} is not a patch of {folder}" for n in d.real_patches_exclude
         if n not in names]
    if not names - set(d.real_patches_exclude):
        p.append("data.real_patches_exclude leaves no real patch to train on")
    return p


def _augment_problems(a: AugmentConfig) -> list[str]:
    """Problems of the ``augment`` section."""
    p: list[str] = []
    if not 0 <= a.rotate_deg <= 90:
        p.append(f"augment.rotate_deg must be in [0, 90], not {a.rotate_deg}")
    if len(a.scale) != 2 or not 0 < a.scale[0] <= a.scale[1] <= 2:
        p.append(f"augment.scale must be [min, max] with 0 < min <= max <= 2, not {a.scale}")
    if not 0 <= a.p_affine <= 1:
        p.append(f"augment.p_affine must be in [0, 1], not {a.p_affine}")
    if not 0 <= a.p_intensity <= 1:
        p.append(f"augment.p_intensity must be in [0, 1], not {a.p_intensity}")
    if not 0 <= a.p_noise <= 1:
        p.append(f"augment.p_noise must be in [0, 1], not {a.p_noise}")
    for key, hi in (("blur_sigma", 5.0), ("noise_hu", 200.0), ("contrast", 2.0), ("sharpen", 3.0)):
        v = getattr(a, key)
        if len(v) != 2 or not all(_number(x) for x in v) or not (0 <= v[0] <= v[1] <= hi) \
                or (key == "contrast" and v[0] <= 0):
            p.append(f"augment.{key} must be [min, max] with 0 {'<' if key == 'contrast' else '<='} "
                     f"min <= max <= {hi:g}, not {v}")
    if a.kernel not in ("both", "one"):
        p.append(f"augment.kernel must be 'both' (blur, then unsharp mask) or 'one' (either), not {a.kernel!r}")
    if not _number(a.shift_hu) or not 0 <= a.shift_hu <= 200:
        p.append(f"augment.shift_hu must be in [0, 200] HU, not {a.shift_hu}")
    if any(ax not in (0, 1, 2) for ax in a.flip_axes):
        p.append(f"augment.flip_axes must list axes among 0, 1, 2 (z, y, x), not {a.flip_axes}")
    return p


def _optim_problems(o: OptimConfig) -> list[str]:
    """Problems of the ``optim`` section."""
    p: list[str] = []
    if o.name.lower() != "adamw":
        p.append(f"optim.name: only 'adamw' (the paper's optimiser) is supported, not {o.name!r}")
    if not o.lr > 0:
        p.append(f"optim.lr must be > 0, not {o.lr}")
    if o.batch_size < 1:
        p.append(f"optim.batch_size must be >= 1, not {o.batch_size}")
    if o.grad_clip < 0:
        p.append("optim.grad_clip must be >= 0 (0 turns clipping off)")
    return p


def _schedule_problems(s: ScheduleConfig) -> list[str]:
    """Problems of the ``schedule`` section."""
    p: list[str] = []
    if s.epochs < 1 or s.steps_per_epoch < 1:
        p.append("schedule.epochs and schedule.steps_per_epoch must be >= 1")
    if any(not isinstance(e, int) or e < 1 for e in s.lr_milestones) or list(s.lr_milestones) != sorted(s.lr_milestones):
        p.append(f"schedule.lr_milestones must be increasing epoch numbers >= 1, not {s.lr_milestones}")
    if s.val_batches < 1:
        p.append("schedule.val_batches must be >= 1 (early stopping needs a validation loss)")
    if s.monitor not in ("loss", "detection"):
        p.append(f"schedule.monitor must be 'loss' or 'detection', not {s.monitor!r}")
    elif s.monitor == "detection" and not s.val_detection:
        p.append("schedule.monitor 'detection' needs schedule.val_detection: true")
    if s.early_stopping_patience < 0 or s.checkpoint_every_steps < 0:
        p.append("schedule.early_stopping_patience and checkpoint_every_steps must be >= 0")
    if s.max_steps is not None and s.max_steps < 1:
        p.append("schedule.max_steps must be >= 1 or null")
    return p


def _host_key(cfg: TrainConfig, host: str) -> str:
    h = cfg.host_path(host)
    if h == "dicom":  # a name for the same CT as the DICOM folder
        return str((cfg.shared_data_dir() / DICOM_HOST_PATH).resolve())
    return h if h in HOST_NAMES else str(Path(h).resolve())


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


__all__ = ["TrainConfig", "DataConfig", "AugmentConfig", "OptimConfig", "ScheduleConfig",
           "ConfigError", "load_config", "config_from_dict", "validate", "DEFAULT_HELD_OUT",
           "HOST_NAMES"]

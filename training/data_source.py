"""Where training patches come from: synthetic patients in real host CT, or annotated cases.

* ``CaseSource``: the patients of a run, split train:val:test by patient (never by patch), and
  ``case(patient_id) -> engine.TrainingCase`` on the canonical 1 mm grid. Synthetic patient ``i``
  is lesions planted in host ``hosts[i % len(hosts)]`` with the generator seeded by
  ``(seed, i)``: the same patient whoever asks. Held-out hosts are never loaded here.
* ``PatchStream``: an endless, resumable stream of training batches. Batch ``i`` of rank ``r`` is
  a pure function of ``(seed, r, i)``: each rank draws its own patients and patches (what a
  ``DistributedSampler`` does for a finite data set), and ``start_batch`` resumes the stream
  exactly, whatever the number of DataLoader workers (worker ``w`` makes batches
  ``start + w, start + w + W, ...``, the order in which the DataLoader returns them).
* ``validation_batches``: the fixed validation batches (no augmentation), split over ranks.
* Real patches with box labels (``data.real_patches``, ``training.real_patches``) join the
  training patches with probability ``data.p_real_patch``; they never enter validation. Their
  lesions can also be pasted into synthetic training patients (``data.p_paste_real``,
  ``training.lesion_paste``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import SimpleITK as sitk
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from BoneMetSegLib.preprocessing.network_input import network_input

from .augment import augment_intensity, augment_patch, context_size
from .config import TrainConfig
from .engine import TrainingCase, case_stats
from .hosts import canonical_1mm, load_host
from .patches import choose_patch_start, crop_patch, mask_to_box
from .real_patches import draw_unknown_origins, load_box_cases
from .lesion_paste import load_donors, paste_lesions
from .synthetic import bone_centre_sampler, plant_lesions


class DataSourceError(ValueError):
    """The configured data cannot be used (empty or invalid data set, too few patients)."""


@dataclass
class Split:
    train: list
    val: list
    test: list

    def to_dict(self) -> dict:
        return {"train": self.train, "val": self.val, "test": self.test}


def split_patients(patients: list, fractions, seed: int) -> Split:
    """Shuffle ``patients`` (seeded) and cut them train:val:test; val and test get at least one
    patient each when their fraction is > 0."""
    order = list(patients)
    np.random.default_rng([seed, 11]).shuffle(order)
    n = len(order)
    n_val = max(1, int(round(fractions[1] * n))) if fractions[1] > 0 else 0
    n_test = max(1, int(round(fractions[2] * n))) if fractions[2] > 0 else 0
    if n - n_val - n_test < 1:
        raise DataSourceError(f"{n} patients cannot be split {list(fractions)} with at least one per "
                         "part; add patients or change data.split")
    return Split(sorted(order[: n - n_val - n_test]), sorted(order[n - n_val - n_test: n - n_test]),
                 sorted(order[n - n_test:]))


class CaseSource:
    """The patients of a run and their cases (see the module docstring)."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self._hard = None
        self._real: list | None = None
        self._donors: list | None = None
        d = cfg.data
        if d.source == "synthetic":
            self.kind = "synthetic"
            self.host_names = list(d.hosts)
            self._hosts: dict = {}
            self.synth_mix = d.synthetic_mix()
            patients = list(range(d.n_patients))
            self.description = (f"{d.n_patients} synthetic patients planted in real host CT "
                                f"{', '.join(map(str, d.hosts))}")
        else:
            self.kind = "dataset"
            from BoneMetSegLib.dataset import list_cases, load_case, validate_dataset  # interface A

            problems = validate_dataset(Path(d.dataset_dir))
            if problems:
                raise DataSourceError(f"data set {d.dataset_dir} has {len(problems)} problem(s), fix them first:\n  "
                                 + "\n  ".join(problems))
            self._load_case = load_case
            self.case_dirs = {p.name: p for p in list_cases(Path(d.dataset_dir))}
            if not self.case_dirs:
                raise DataSourceError(f"no cases in {d.dataset_dir}; check it with "
                                 "`python -m training.validate_dataset`")
            self.patient_of = {name: _patient_id(path) for name, path in self.case_dirs.items()}
            patients = sorted(set(self.patient_of.values()))
            self.description = f"{len(self.case_dirs)} annotated cases of {len(patients)} patients in {d.dataset_dir}"
        self.split = split_patients(patients, d.split, cfg.seed)
        self._train = set(self.split.train)  # real lesions are pasted into these only

    # ------------------------------------------------------------------ cases
    def cases_of(self, patients: list) -> list:
        """Case keys of these patients (synthetic: the patient ids themselves)."""
        if self.kind == "synthetic":
            return list(patients)
        wanted = set(patients)
        return sorted(k for k, p in self.patient_of.items() if p in wanted)

    def case(self, key) -> TrainingCase:
        if self.kind == "synthetic":
            return self._synthetic_case(int(key))
        return self._dataset_case(key)

    def preload(self) -> None:
        """Load the training hosts and real patches now (DataLoader workers forked later share them)."""
        if self.kind == "synthetic":
            for name in self.host_names:
                self.host(name)
        self.real_cases()
        self.donors()

    def real_cases(self) -> list:
        """The real box-labelled training patches (``data.real_patches`` less the excluded ones)."""
        if self._real is None:
            d = self.cfg.data
            folder = d.real_patches_dir(self.cfg.shared_data_dir())
            self._real = (load_box_cases(folder, d.real_patches_exclude, self.cfg.preprocess)
                          if folder is not None and d.p_real_patch > 0 else [])
        return self._real

    def donors(self) -> list:
        """The real lesions pasted into synthetic training patients (``data.p_paste_real``;
        ``training.lesion_paste``): those of ``data.real_patches`` less the excluded patches."""
        if self._donors is None:
            d = self.cfg.data
            folder = d.real_patches_dir(self.cfg.shared_data_dir())
            self._donors = (load_donors(folder, d.real_patches_exclude)
                            if folder is not None and d.p_paste_real > 0 and self.kind == "synthetic" else [])
        return self._donors

    def host(self, name):
        """The training host CT of this name (loaded once)."""
        if name not in self._hosts:
            self._hosts[name] = load_host(self.cfg.host_path(name), shared_data=self.cfg.shared_data_dir())
        return self._hosts[name]

    def _synthetic_case(self, i: int) -> TrainingCase:
        host = self.host(self.host_names[i % len(self.host_names)])
        rng = np.random.default_rng([self.cfg.seed, i])
        config = self.synthetic_config_of(i)
        image, labels, lesions = plant_lesions(host, rng=rng, config=config)
        paste = np.random.default_rng([self.cfg.seed, i, 3])  # its own stream: the planted lesions stay
        if self.donors() and i in self._train and paste.random() < self.cfg.data.p_paste_real:
            lo, hi = self.cfg.data.n_paste_real
            draw_site_centre = bone_centre_sampler(host, config)
            lesions = paste_lesions(image, labels, lesions, lambda r: draw_site_centre(r)[1],
                                    self.donors(), int(paste.integers(lo, hi + 1)), paste)
        mean, std = case_stats(image, self.cfg.preprocess)
        return TrainingCase(f"{host.name}-{i:05d}", image, labels, lesions, host.bone, mean, std,
                            self._mined(self.host_names[i % len(self.host_names)]))

    def synthetic_config_of(self, i: int):
        """The generator setting of synthetic patient ``i``: with a mixture, drawn from its own
        stream ``default_rng([seed, i, 1])``, so a single setting gives the same patients as ever."""
        if len(self.synth_mix) == 1:
            return self.synth_mix[0][1]
        u = np.random.default_rng([self.cfg.seed, i, 1]).random()
        edges = np.cumsum([w for w, _ in self.synth_mix])
        return self.synth_mix[min(int(np.searchsorted(edges, u, side="right")), len(edges) - 1)][1]

    def _dataset_case(self, key: str) -> TrainingCase:
        case = self._load_case(self.case_dirs[key])
        image = canonical_1mm(case.image)
        labels = sitk.GetArrayFromImage(sitk.Resample(
            case.labels, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16))
        image_hu = sitk.GetArrayFromImage(image).astype(np.float32)
        lesions = []
        for value in np.unique(labels):
            if value == 0 or int(value) not in case.origins:
                continue
            mask = labels == value
            lesions.append({"label": int(value), "origin": case.origins[int(value)],
                            "bbox": mask_to_box(mask).tolist(), "n_voxels": int(mask.sum())})
        mean, std = case_stats(image_hu, self.cfg.preprocess)
        return TrainingCase(case.case_id, image_hu, labels, lesions, None, mean, std, self._mined(key))

    def _mined(self, key: str):
        """Mined false-positive centres of this host (synthetic) or case (data set), or None."""
        if self._hard is None:
            path = self.cfg.data.hard_negatives
            self._hard = read_hard_negatives(Path(path)) if path else {}
        return self._hard.get(str(key))

    def split_record(self) -> dict:
        """What goes into the run's ``split.json``."""
        d = self.cfg.data
        rec = {"source": self.kind, "description": self.description, "seed": self.cfg.seed,
               "fractions": list(d.split), "patients": self.split.to_dict()}
        if self.kind == "synthetic":
            rec["hosts"] = list(d.hosts)
            rec["held_out_hosts"] = list(d.held_out_hosts)
            rec["patient_rule"] = ("patient i = training.synthetic.plant_lesions(host hosts[i % len(hosts)], "
                                   "rng=numpy.random.default_rng([seed, i]), config=data.synthetic; a mixture's "
                                   "setting drawn with default_rng([seed, i, 1]))")
        else:
            rec["cases"] = {part: self.cases_of(p) for part, p in self.split.to_dict().items()}
        if self.real_cases():
            rec["real_patches"] = {"folder": str(d.real_patches_dir(self.cfg.shared_data_dir())),
                                   "train": [c.name for c in self.real_cases()],
                                   "excluded": list(d.real_patches_exclude), "p_real_patch": d.p_real_patch,
                                   "labels": "boxes only: ellipsoid masks, origin drawn at random per patch"}
        if self.donors():
            rec["pasted_real_lesions"] = {"folder": str(d.real_patches_dir(self.cfg.shared_data_dir())),
                                          "donors": [x.name for x in self.donors()],
                                          "excluded": list(d.real_patches_exclude),
                                          "p_paste_real": d.p_paste_real, "n_paste_real": list(d.n_paste_real),
                                          "rule": "training patients only; training.lesion_paste"}
        return rec


def read_hard_negatives(path: Path) -> dict:
    """``{host name or case id: (N, 3) z, y, x centres}`` from ``training.mine_negatives``' JSON."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return {str(k): np.array([c["zyx"] for c in v], float).reshape(-1, 3) for k, v in data["negatives"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataSourceError(f"data.hard_negatives {path} is not a training.mine_negatives file ({exc}); "
                              "make it with python -m training.mine_negatives") from None


def _patient_id(case_dir: Path) -> str:
    meta = case_dir / "lesions.json"
    if meta.is_file():
        try:
            return str(json.loads(meta.read_text()).get("patient_id") or case_dir.name)
        except (OSError, ValueError):
            pass
    return case_dir.name


# ----------------------------------------------------------------------------- patches


def training_sample(case: TrainingCase, cfg: TrainConfig, rng: np.random.Generator, augment: bool):
    """One ``(network input [1, *patch], target dict)`` from ``case``: a patch around a lesion or
    bone (``training.patches``), augmented (``training.augment``) when ``augment``."""
    d, a = cfg.data, cfg.augment
    size = tuple(d.patch_size)
    use_aug = augment and a.enabled
    ctx = context_size(size, a.rotate_deg, a.scale[0]) if use_aug and a.p_affine > 0 else size
    lesions = draw_unknown_origins(case.lesions, rng)
    start = choose_patch_start(case.image_hu.shape, case.labels, lesions, size, rng,
                               d.p_foreground, bone=case.bone, image_hu=case.image_hu,
                               hard_negatives=case.hard_negatives, p_hard=d.p_hard_negative)
    start = tuple(s - (c - k) // 2 for s, c, k in zip(start, ctx, size))
    cut = crop_patch(case.image_hu, case.labels, lesions, start, ctx, d.min_visible_fraction)
    aug = augment_patch(cut.hu, cut.masks, cut.classes, size, a if use_aug else _NO_AUGMENT, rng,
                        d.min_visible_fraction)
    patch = augment_intensity(aug.hu, a, rng) if use_aug else aug.hu
    image = network_input(patch, cfg.preprocess, case.mean, case.std)
    target = {"boxes": torch.from_numpy(aug.boxes).reshape(-1, 6),
              "labels": torch.from_numpy(aug.classes).reshape(-1),
              "masks": torch.from_numpy(aug.masks)}
    return torch.from_numpy(image)[None], target


class _NoAugment:
    enabled, p_affine, flip_axes = False, 0.0, []


_NO_AUGMENT = _NoAugment()


def collate(samples) -> tuple[torch.Tensor, list[dict]]:
    return torch.stack([s[0] for s in samples]), [s[1] for s in samples]


class PatchStream(IterableDataset):
    """Endless training batches of one rank (see the module docstring)."""

    def __init__(self, source: CaseSource, cfg: TrainConfig, rank: int, batch_size: int,
                 start_batch: int = 0):
        super().__init__()
        self.source, self.cfg, self.rank = source, cfg, rank
        self.batch_size, self.start_batch = batch_size, start_batch
        self.keys = source.cases_of(source.split.train)
        self._pool: dict = {}  # slot -> (generation, case)

    def batch(self, i: int) -> tuple[torch.Tensor, list[dict]]:
        """Batch ``i`` of this rank."""
        rng = np.random.default_rng([self.cfg.seed, self.rank, 2, i])
        slots, real = self._pool_at(i), self.source.real_cases()
        return collate([training_sample(self._draw(slots, real, rng), self.cfg, rng, True)
                        for _ in range(self.batch_size)])

    def _draw(self, slots: list, real: list, rng: np.random.Generator):
        """The case of one sample: a real patch with probability ``p_real_patch``, else a pooled case
        (without real patches ``rng`` is drawn from exactly as before they existed)."""
        if real and rng.random() < self.cfg.data.p_real_patch:
            return real[int(rng.integers(len(real)))]
        return slots[int(rng.integers(len(slots)))]

    def _pool_at(self, i: int) -> list:
        d = self.cfg.data
        size = min(d.pool_size, len(self.keys))
        refreshes = i // d.refresh_every  # refresh k = 1, 2, ... replaces slot (k - 1) % size
        out = []
        for j in range(size):
            gen = max(0, (refreshes - j + size - 1) // size)
            held = self._pool.get(j)
            if held is None or held[0] != gen:
                pick = np.random.default_rng([self.cfg.seed, self.rank, 1, j, gen]).integers(len(self.keys))
                held = (gen, self.source.case(self.keys[int(pick)]))
                self._pool[j] = held
            out.append(held[1])
        return out

    def __iter__(self) -> Iterator:
        info = get_worker_info()
        w, n = (info.id, info.num_workers) if info is not None else (0, 1)
        i = self.start_batch + w
        while True:
            yield self.batch(i)
            i += n


def train_loader(stream: PatchStream, num_workers: int) -> DataLoader:
    """A DataLoader over ``stream`` (the stream makes whole batches: ``batch_size=None``)."""
    return DataLoader(stream, batch_size=None, num_workers=num_workers,
                      persistent_workers=False, prefetch_factor=2 if num_workers else None)


def validation_batches(source: CaseSource, cfg: TrainConfig, batch_size: int, rank: int = 0,
                       world: int = 1) -> Iterator[tuple[torch.Tensor, list[dict]]]:
    """The fixed validation batches ``k = rank, rank + world, ...`` (< ``schedule.val_batches``):
    batch ``k`` holds patches of validation patient ``k mod n``, without augmentation."""
    keys = source.cases_of(source.split.val)
    last = (None, None)
    for k in range(rank, cfg.schedule.val_batches, world):
        key = keys[k % len(keys)]
        if last[0] != key:
            last = (key, source.case(key))
        rng = np.random.default_rng([cfg.seed, 3, k])
        yield collate([training_sample(last[1], cfg, rng, False) for _ in range(batch_size)])


__all__ = ["DataSourceError", "Split", "split_patients", "CaseSource", "read_hard_negatives", "PatchStream", "training_sample", "collate",
           "train_loader", "validation_batches"]

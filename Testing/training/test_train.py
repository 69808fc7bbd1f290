"""training.train: the recipe configs, config errors, the patient split, and one real CPU run."""

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from BoneMetSegLib.inference.weights import save_weights
from BoneMetSegLib.model import MaskRCNN3D
from training.checkpoint import load_checkpoint
from training.config import REPO_ROOT, ConfigError, config_from_dict, load_config
from training.data_source import DataSourceError, split_patients
from BoneMetSegLib.dataset import write_case
from training.train import init_from_weights, main, run

CONFIGS = REPO_ROOT / "training" / "configs"


def test_paper_config_is_the_papers_recipe():
    cfg = load_config(CONFIGS / "paper.yaml")
    o, s, a, d = cfg.optim, cfg.schedule, cfg.augment, cfg.data
    assert (o.name, o.lr, o.batch_size, o.amp) == ("adamw", 1e-4, 8, True)
    assert (s.epochs, s.lr_milestones, s.lr_gamma) == (50, [40], 0.1) and s.early_stopping_patience > 0
    assert (a.enabled, a.rotate_deg, a.scale, sorted(a.flip_axes)) == (True, 15, [0.8, 1.2], [0, 1, 2])
    assert d.split == [0.70, 0.15, 0.15]
    assert d.held_out_hosts == ["dicom"] and "dicom" not in d.hosts
    cpu = load_config(CONFIGS / "cpu.yaml")
    assert cpu.optim.amp is False and cpu.schedule.max_minutes < 120


@pytest.mark.parametrize("raw, words", [
    ({"optim": {"lr_rate": 1}}, ["unknown key", "lr_rate", "optim"]),
    ({"data": {"hosts": ["abdomen", "totalsegmentator-example/ct_dicom_series"]}}, ["held_out_hosts", "never"]),
    ({"data": {"hosts": ["abdomen", "dicom"],
               "held_out_hosts": ["totalsegmentator-example/ct_dicom_series"]}}, ["held_out_hosts", "never"]),
    ({"data": {"split": [0.8, 0.15, 0.15]}}, ["data.split", "summing to 1"]),
    ({"augment": {"scale": [1.2, 0.8]}}, ["augment.scale"]),
    ({"data": {"source": "dataset"}}, ["dataset_dir"]),
    ({"optimizer": {}}, ["unknown top-level"]),
    ({"optim": {"batch_size": 2.5}}, ["optim.batch_size", "integer"]),
    ({"optim": {"amp": "yes"}}, ["optim.amp", "true or false"]),
])
def test_config_errors_say_what_is_wrong(raw, words):
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_numbers_that_yaml_reads_as_strings_are_numbers():
    assert config_from_dict({"optim": {"lr": "1e-4"}}).optim.lr == 1e-4


def test_split_by_patient_is_disjoint_and_complete():
    split = split_patients(list(range(40)), [0.7, 0.15, 0.15], seed=3)
    parts = [set(split.train), set(split.val), set(split.test)]
    assert [len(p) for p in parts] == [28, 6, 6]
    assert set.union(*parts) == set(range(40)) and sum(len(p) for p in parts) == 40
    assert split_patients(list(range(40)), [0.7, 0.15, 0.15], seed=4).val != split.val


def test_one_real_training_run_with_early_stopping(tmp_path, shared_data):
    run_dir = tmp_path / "run"
    # every validation after the first counts as "no better": early stopping after epoch 2 of 3
    rc = main(["--config", str(CONFIGS / "tiny.yaml"), "--run-dir", str(run_dir), "--no-progress", "--set",
               f"data.shared_data={shared_data}", "schedule.epochs=3", "schedule.steps_per_epoch=1",
               "schedule.early_stopping_patience=1", "schedule.early_stopping_min_delta=1e9"])
    assert rc == 0
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    train = [r for r in log if r["type"] == "train"]
    assert [r["step"] for r in train] == [1, 2] and all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in train)
    assert [r["improved"] for r in log if r["type"] == "val"] == [True, False]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["finished"] == "early stopping after epoch 2" and summary["best_epoch"] == 1
    assert (run_dir / "loss_curve.png").stat().st_size > 5000
    split = json.loads((run_dir / "split.json").read_text())
    assert split["held_out_hosts"] and not set(split["held_out_hosts"]) & set(split["hosts"])
    assert not set(split["patients"]["train"]) & (set(split["patients"]["val"]) | set(split["patients"]["test"]))

    # the optimiser really changed the weights; best.pt holds epoch 1, last.pt epoch 2
    last, best = load_checkpoint(run_dir / "last.pt"), load_checkpoint(run_dir / "best.pt")
    assert (last["state"]["epoch"], best["state"]["epoch"]) == (2, 1)
    torch.manual_seed(0)
    init = MaskRCNN3D(load_config(CONFIGS / "tiny.yaml").model).state_dict()
    changed = [k for k, v in last["model"].items() if v.is_floating_point() and not torch.equal(v, init[k])]
    assert len(changed) > 0.5 * len(init)
    # a finished run is not trained again
    assert main(["--config", str(CONFIGS / "tiny.yaml"), "--run-dir", str(run_dir), "--no-progress",
                 "--set", f"data.shared_data={shared_data}"]) == 0
    assert len((run_dir / "log.jsonl").read_text().splitlines()) == len(log)


def test_training_on_an_annotated_data_set(tmp_path):
    """``data.source: dataset``: cases in format A (training/dataset), split by patient_id."""
    rng = np.random.default_rng(0)
    data = tmp_path / "cases"
    for i, patient in enumerate(["p1", "p1", "p2", "p3"]):
        hu = (rng.normal(0, 10, (56, 60, 64)) - 100).astype(np.int16)
        hu[8:48, 10:50, 12:52] = 500  # a bone block ...
        labels = np.zeros(hu.shape, np.uint16)
        labels[20:32, 22:36, 24:38] = 1  # ... holding one lytic lesion
        hu[labels == 1] = 40
        image = sitk.GetImageFromArray(hu)
        image.SetSpacing((1.0, 1.0, 1.5))
        write_case(data, f"case{i}", image, labels, {1: "lung" if i % 2 else "other"}, patient_id=patient)
    cfg = load_config(CONFIGS / "tiny.yaml", {"run_dir": str(tmp_path / "run"), "schedule.max_steps": 1,
                                             "data.source": "dataset", "data.dataset_dir": str(data)})
    result = run(cfg, progress=False)
    assert len(result["history"]) == 1 and math.isfinite(result["history"][0]["loss"])
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert sorted(split["patients"]["train"] + split["patients"]["val"] + split["patients"]["test"]) == ["p1", "p2", "p3"]
    p1_part = [part for part, ids in split["patients"].items() if "p1" in ids][0]
    assert split["cases"][p1_part][:2] == ["case0", "case1"]  # a patient's cases stay together

    (data / "case3" / "lesions.json").write_text("{}")  # a broken case: refused before training
    cfg.run_dir = str(tmp_path / "run2")
    with pytest.raises(DataSourceError, match="problem"):
        run(cfg, progress=False)


def _saved(model, cfg, path):
    save_weights(model.state_dict(), {"name": "t", "version": "0", "architecture": model.config.to_dict(),
                                      "preprocessing": cfg.preprocess.to_dict()}, path)
    return path


def test_init_weights_loads_an_exported_model_and_refuses_another_architecture(tmp_path):
    cfg = load_config(CONFIGS / "tiny.yaml")
    torch.manual_seed(1)
    source = MaskRCNN3D(cfg.model)
    path = tmp_path / "w.pt"
    save_weights(source.state_dict(), {"name": "t", "version": "0", "architecture": cfg.model.to_dict(),
                                        "preprocessing": cfg.preprocess.to_dict()}, path)
    torch.manual_seed(2)
    target = MaskRCNN3D(cfg.model)
    init_from_weights(target, path)
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        assert torch.equal(a, b), name
    other = MaskRCNN3D(config_from_dict({"model": {**cfg.model.to_dict(), "fpn_channels": 8}}).model)
    with pytest.raises(ConfigError, match="init_weights"):
        init_from_weights(other, path)
    with_map = MaskRCNN3D(config_from_dict({"model": {**cfg.model.to_dict(), "seg_head": True}}).model)
    fresh = {k: v.clone() for k, v in with_map.state_dict().items() if k.startswith("seg_head.")}
    init_from_weights(with_map, path)  # the lesion map the weights lack starts fresh, the rest is loaded
    for name, a in source.state_dict().items():
        assert torch.equal(a, with_map.state_dict()[name]), name
    assert fresh and all(torch.equal(v, with_map.state_dict()[k]) for k, v in fresh.items())
    with pytest.raises(ConfigError, match="init_weights"):  # but not the other way round
        init_from_weights(source, _saved(with_map, cfg, tmp_path / "map.pt"))


def test_a_synthetic_mixture_draws_each_patients_setting_with_its_weight():
    from training.config import config_from_dict
    from training.data_source import CaseSource
    from training.synthetic import SyntheticConfig

    mix = {"mix": [{"weight": 1, "config": "easy"}, {"weight": 3, "config": {"diameter_mm": [3, 12]}}]}
    cfg = config_from_dict({"data": {"synthetic": mix, "n_patients": 400}})
    weights = [w for w, _ in cfg.data.synthetic_mix()]
    assert weights == pytest.approx([0.25, 0.75])
    src = CaseSource(cfg)
    kinds = [src.synthetic_config_of(i) for i in range(400)]
    n_easy = sum(k == SyntheticConfig.easy() for k in kinds)
    assert 70 <= n_easy <= 130  # binomial(400, 0.25): mean 100, sd 8.7
    assert all(k == SyntheticConfig.easy() or tuple(k.diameter_mm) == (3, 12) for k in kinds)
    assert [src.synthetic_config_of(i) for i in range(20)] == kinds[:20]  # a pure function of i
    # a mapping may start from a named preset and change some of its fields
    bridge = config_from_dict({"data": {"synthetic": {"preset": "realistic", "blastic_contrast_hu": [150, 600]}}})
    got = bridge.data.synthetic_config()
    assert got.blastic_contrast_hu == (150, 600)
    assert got.p_expansile == SyntheticConfig.realistic().p_expansile != SyntheticConfig().p_expansile
    # a single setting is what it always was
    single = CaseSource(config_from_dict({"data": {"synthetic": "easy"}}))
    assert single.synthetic_config_of(7) == SyntheticConfig.easy()


@pytest.mark.parametrize("spec,msg", [
    ({"mix": []}, "non-empty"),
    ({"mix": [{"weight": 0, "config": "easy"}]}, "weight must be a number > 0"),
    ({"mix": [{"weight": 1}]}, "weight: w, config"),
    ({"mix": [{"weight": 1, "config": "hard"}]}, "expected 'default', 'easy'"),
    ({"mix": [{"weight": 1, "config": {"mix": []}}]}, "cannot hold another mixture"),
    ({"mix": [{"weight": 1, "config": "easy"}], "extra": 1}, "only the key 'mix'"),
    ({"preset": "hard", "n_lesions": [1, 2]}, "preset must be one of"),
    ({"preset": "realistic", "colour": 1}, "unknown SyntheticConfig keys"),
])
def test_bad_synthetic_mixtures_are_refused(spec, msg):
    from training.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="data.synthetic") as err:
        config_from_dict({"data": {"synthetic": spec}})
    assert msg in str(err.value)

"""training.real_patches: box-labelled real patches (BLDS layout) as training cases, and a run that mixes them in."""

import csv
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from BoneMetSegLib.dataset import write_case
from BoneMetSegLib.vocabulary import ORIGINS
from training.config import REPO_ROOT, ConfigError, load_config
from training.data_source import CaseSource
from training.real_patches import draw_unknown_origins, ellipsoid_labels, load_box_cases
from training.leave_one_patch_out import main as leave_one_patch_out
from training.train import run

CONFIGS = REPO_ROOT / "training" / "configs"
ORIGIN_LPS = (10.0, -20.0, 5.0)


def write_patches(folder, boxes_by_patch):
    """Patches of 40 x 44 x 48 voxels (x, y, z; 1 mm, origin ORIGIN_LPS; bone-like 300 +- 20 HU
    beside a slab of air) and a lesions.csv of LPS boxes."""
    folder.mkdir()
    rows = []
    rng = np.random.default_rng(1)
    for name, boxes in boxes_by_patch.items():
        hu = rng.normal(300, 20, (48, 44, 40)).astype(np.int16)
        hu[:, :, :2] = -1000
        image = sitk.GetImageFromArray(hu)
        image.SetOrigin(ORIGIN_LPS)
        sitk.WriteImage(image, str(folder / name))
        for lo, size in boxes:
            centre = np.add(lo, np.divide(size, 2))
            rows.append({"image_path": name, "class": "osteoma", "x": centre[0], "y": centre[1], "z": centre[2],
                         "width": size[0], "height": size[1], "depth": size[2]})
    with open(folder / "lesions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_boxes_become_lesions_on_the_patch_grid(tmp_path):
    # a box from x 14.5..26.5, y -10.5..-2.5, z 20.5..30.5 mm holds the voxel centres (origin + index)
    # x 15..26, y -10..-3, z 21..30 mm: indices x 5..16, y 10..17, z 16..25
    write_patches(tmp_path / "real", {"a.nii.gz": [((14.5, -10.5, 20.5), (12, 8, 10))],
                                      "b.nii.gz": [((12.5, -17.5, 8.5), (6, 6, 6)), ((30.5, 10.5, 30.5), (8, 8, 8))]})
    cases = load_box_cases(tmp_path / "real")
    assert [c.name for c in cases] == ["real-a", "real-b"]
    a = cases[0]
    assert a.image_hu.shape == (48, 44, 40)
    (les,) = a.lesions
    assert les["origin"] is None and les["label"] == 1
    assert les["bbox"] == [16, 10, 5, 26, 18, 17]  # the ellipsoid fills its box: z, y, x min .. max
    assert les["n_voxels"] == int((a.labels == 1).sum())
    assert 0.45 < les["n_voxels"] / (10 * 8 * 12) < 0.6  # an ellipsoid fills pi/6 of its box
    assert [le["label"] for le in cases[1].lesions] == [1, 2]
    assert [c.name for c in load_box_cases(tmp_path / "real", exclude=["a.nii.gz"])] == ["real-b"]
    with pytest.raises(ValueError, match="c.nii.gz not in .*lesions.csv; the patches are a.nii.gz, b.nii.gz"):
        load_box_cases(tmp_path / "real", exclude=["c.nii.gz"])


def test_a_one_voxel_box_keeps_its_centre_voxel():
    labels = ellipsoid_labels((10, 10, 10), np.array([[4.2, 4.2, 4.2, 4.4, 4.4, 4.4]]))
    assert labels.sum() == 1 and labels[4, 4, 4] == 1


def test_unknown_origins_are_drawn_per_patch_and_known_ones_kept():
    rng = np.random.default_rng(0)
    known = [{"label": 1, "origin": "lung"}]
    state = rng.bit_generator.state
    assert draw_unknown_origins(known, rng) is known and rng.bit_generator.state == state
    lesions = [{"label": 1, "origin": None}, {"label": 2, "origin": "other"}]
    drawn = [draw_unknown_origins(lesions, rng) for _ in range(200)]
    firsts = [d[0]["origin"] for d in drawn]
    assert set(firsts) == set(ORIGINS) and 60 < firsts.count("lung") < 140
    assert all(d[1]["origin"] == "other" for d in drawn) and lesions[0]["origin"] is None


def test_real_patch_settings_are_checked(tmp_path):
    write_patches(tmp_path / "real", {"a.nii.gz": [((14.5, -10.5, 20.5), (12, 8, 10))]})
    with pytest.raises(ConfigError, match="p_real_patch > 0 but data.real_patches is not set"):
        load_config(CONFIGS / "tiny.yaml", {"data.p_real_patch": 0.3})
    with pytest.raises(ConfigError, match="must be in"):
        load_config(CONFIGS / "tiny.yaml", {"data.real_patches": str(tmp_path / "real"), "data.p_real_patch": 1.5})
    with pytest.raises(ConfigError, match="lesions.csv not found"):
        load_config(CONFIGS / "tiny.yaml", {"data.real_patches": str(tmp_path), "data.p_real_patch": 0.3})
    with pytest.raises(ConfigError, match="leaves no real patch"):
        load_config(CONFIGS / "tiny.yaml", {"data.real_patches": str(tmp_path / "real"), "data.p_real_patch": 0.3,
                                            "data.real_patches_exclude": ["a.nii.gz"]})


def write_cases(data):
    """Three one-lesion cases (format A) of three patients: a lytic cube in a bone cube."""
    rng = np.random.default_rng(0)
    for i, patient in enumerate(["p1", "p2", "p3"]):
        hu = (rng.normal(0, 10, (48, 48, 48)) - 100).astype(np.int16)
        hu[8:40, 8:40, 8:40] = 500
        labels = np.zeros(hu.shape, np.uint16)
        labels[18:30, 18:30, 18:30] = 1
        hu[labels == 1] = 40
        write_case(data, f"case{i}", sitk.GetImageFromArray(hu), labels, {1: "lung"}, patient_id=patient)


def test_a_run_mixes_real_patches_into_training_only(tmp_path):
    data = tmp_path / "cases"
    write_cases(data)
    write_patches(tmp_path / "real", {"a.nii.gz": [((14.5, -10.5, 20.5), (12, 8, 10))],
                                      "b.nii.gz": [((12.5, -17.5, 8.5), (6, 6, 6))]})
    cfg = load_config(CONFIGS / "tiny.yaml", {
        "run_dir": str(tmp_path / "run"), "schedule.max_steps": 2, "data.source": "dataset",
        "data.dataset_dir": str(data), "data.real_patches": str(tmp_path / "real"), "data.p_real_patch": 0.5,
        "data.real_patches_exclude": ["b.nii.gz"]})
    source = CaseSource(cfg)
    assert [c.name for c in source.real_cases()] == ["real-a"]
    result = run(cfg, progress=False)
    assert all(math.isfinite(h["loss"]) for h in result["history"])
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["real_patches"]["train"] == ["real-a"] and split["real_patches"]["excluded"] == ["b.nii.gz"]
    assert all(not key.startswith("real-") for part in split["cases"].values() for key in part)


def test_leave_one_patch_out_predicts_each_patch_with_the_fold_that_never_saw_it(tmp_path, capsys):
    write_cases(tmp_path / "cases")
    write_patches(tmp_path / "real", {"a.nii.gz": [((14.5, -10.5, 20.5), (12, 8, 10))],
                                      "b.nii.gz": [((12.5, -17.5, 8.5), (6, 6, 6)), ((30.5, 10.5, 30.5), (8, 8, 8))]})
    sets = ["data.source=dataset", f"data.dataset_dir={tmp_path / 'cases'}", f"data.real_patches={tmp_path / 'real'}",
            "data.p_real_patch=0.5", "schedule.max_steps=1"]
    out = tmp_path / "lopo"
    argv = ["--config", str(CONFIGS / "tiny.yaml"), "--out", str(out), *[a for s in sets for a in ("--set", s)]]
    assert leave_one_patch_out([*argv, "--all"]) == 0

    def real_patches_of(run_dir):
        return json.loads((run_dir / "split.json").read_text())["real_patches"]
    fold_a = real_patches_of(out / "fold-a")
    assert fold_a["train"] == ["real-b"] and fold_a["excluded"] == ["a.nii.gz"]
    assert real_patches_of(out / "fold-b")["train"] == ["real-a"]
    assert real_patches_of(out / "all")["train"] == ["real-a", "real-b"] and (out / "all" / "model.pt").is_file()
    report = json.loads((out / "lopo.json").read_text())
    assert report["models"] == {"a.nii.gz": str(out / "fold-a" / "model.pt"), "b.nii.gz": str(out / "fold-b" / "model.pt")}
    assert [p["patch"] for p in report["patches"]] == ["a.nii.gz", "b.nii.gz"] and report["n_lesions"] == 3
    assert [row["lesion"] for p in report["patches"] for row in p["lesions"]] == ["a.1", "b.1", "b.2"]
    assert report["summary"] in (out / "lopo.md").read_text()
    assert "`--set data.p_real_patch=0.5`" in (out / "lopo.md").read_text()  # the recipe as it ran

    # a fold that has its model is not trained again
    assert "training.train" in capsys.readouterr().out  # the first run printed each fold's command
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/model.pt")}
    assert leave_one_patch_out(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/model.pt")} == stamps
    assert "training.train" not in capsys.readouterr().out

    assert leave_one_patch_out(["--config", str(CONFIGS / "tiny.yaml"), "--out", str(tmp_path / "none")]) == 2
    assert "set data.real_patches and data.p_real_patch > 0" in capsys.readouterr().err

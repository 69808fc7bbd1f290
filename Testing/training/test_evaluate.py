"""End to end: synthetic cases on the held-out real CT -> training.evaluate with the embedded model."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import numpy as np
import pytest
import SimpleITK as sitk

from BoneMetSegLib.inference.predictor import load_model
from BoneMetSegLib.inference.weights import load_weights, save_weights
from BoneMetSegLib.dataset import list_cases, load_case, validate_dataset
from training.evaluate import detection_by_group, equivalent_diameter_mm, lesion_details, lesion_ranks
from training.evaluate import main as evaluate_main
from training.make_synthetic_dataset import main as make_main
from training.metrics import detection, segmentation


@pytest.fixture(scope="module")
def dataset(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "data"
    assert make_main(["--host", "heldout", "--cases", "2", "--seed", "11", "--out", str(out), "--easy",
                      "--crop", "64", "--shared-data", str(shared_data)]) == 0
    return out


@pytest.fixture(scope="module")
def report(dataset, shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "report"
    args = ["--model", "default", "--data", str(dataset), "--out", str(out), "--device", "cpu",
            "--blds", str(shared_data / "blds-dev"), "--bootstrap", "200"]
    assert evaluate_main(args) == 0
    return out, json.loads((out / "report.json").read_text())


def test_synthetic_dataset_is_valid_and_described(dataset):
    assert validate_dataset(dataset) == []
    meta = json.loads((dataset / "dataset.json").read_text())
    cases = list_cases(dataset)
    host = meta["generator"]["host"]
    assert [c.name for c in cases] == [f"{host}-11-0000", f"{host}-11-0001"]
    for case_dir in cases:
        case = load_case(case_dir)
        planted = meta["generator"]["cases"][case.case_id]
        counts = np.bincount(case.label_array().ravel())
        assert {p["label"]: p["origin"] for p in planted} == case.origins
        assert [int(counts[p["label"]]) for p in planted] == [p["n_voxels"] for p in planted]
        assert case.image.GetSize() == case.labels.GetSize() and max(case.image.GetSize()) <= 64


def test_report_files_and_schema(report):
    out, rep = report
    assert sorted(p.name for p in out.iterdir()) == ["froc.png", "report.json", "report.md", "roc.png"]
    for png in ("froc.png", "roc.png"):
        assert mpimg.imread(str(out / png)).shape[:2] == (450, 600)
    assert set(rep) == {"model", "settings", "data", "segmentation", "detection", "classification", "cases", "lesions",
                        "blds"}
    assert rep["model"]["name"] and rep["model"]["detection_threshold"] == load_weights(None)[1]["detection_threshold"]
    assert set(rep["detection"]["sensitivity_at_fp"]) == {"0.5", "1", "2", "4"}
    assert set(rep["classification"]) == {"lesion", "patient"}
    text = (out / "report.md").read_text()
    assert rep["blds"]["summary"] in text and f"| {rep['cases'][0]['case_id']} |" in text


def test_report_numbers_agree_with_the_data_and_metrics(report, dataset):
    _, rep = report
    truths = [len(set(np.unique(load_case(c).label_array())) - {0}) for c in list_cases(dataset)]
    assert rep["data"]["n_lesions"] == sum(truths) == sum(c["n_true"] for c in rep["cases"])
    curve = rep["detection"]["curve"]
    for rate, value in rep["detection"]["sensitivity_at_fp"].items():
        assert value == detection.sensitivity_at(curve, float(rate))
    at = rep["detection"]["at_detection_threshold"]
    assert at["hits"] == sum(c["hits"] for c in rep["cases"])
    assert at["false_positives"] == sum(c["false_positives"] for c in rep["cases"])
    assert curve["thresholds"][1:] == sorted(curve["thresholds"][1:], reverse=True)
    assert min(curve["thresholds"][1:], default=0.05) >= 0.05
    assert rep["segmentation"]["per_case_mean"]["dsc"] == pytest.approx(np.mean([c["dsc"] for c in rep["cases"]]))
    lesion = rep["classification"]["lesion"]
    assert lesion["n"] + lesion["n_true_lesions_not_found"] == rep["data"]["n_lesions"]
    assert lesion["n"] == at["hits"]  # every true lesion found at the threshold gets classified
    patient = rep["classification"]["patient"]
    assert patient["n"] + patient["n_without_prediction"] + patient["n_mixed_truth"] == rep["data"]["n_patients"]


def test_detection_by_size_and_kind_adds_up(report, dataset):
    _, rep = report
    groups, at = rep["detection"]["by_group"]["groups"], rep["detection"]["at_detection_threshold"]
    sizes = [g for name, g in groups.items() if name.endswith("mm")]
    kinds = {name: g for name, g in groups.items() if name in ("lytic", "blastic", "mixed")}
    assert sum(g["n"] for g in sizes) == rep["data"]["n_lesions"] == len(rep["lesions"])
    assert sum(g["found_at_detection_threshold"] for g in sizes) == at["hits"]
    planted = json.loads((dataset / "dataset.json").read_text())["generator"]["cases"]
    expected = {}
    for rows in planted.values():
        for les in rows:
            expected[les["kind"]] = expected.get(les["kind"], 0) + 1
    assert {k: g["n"] for k, g in kinds.items()} == expected
    t1 = detection.threshold_at(rep["detection"]["curve"], 1.0)
    found = sum(les["score"] is not None and les["score"] >= t1 for les in rep["lesions"])
    assert sum(g["found_at_1fp"] for g in sizes) == found
    assert "by size (equivalent diameter), contrast to their bone, kind" in (report[0] / "report.md").read_text()
    contrast = [g for name, g in groups.items() if name.endswith(" HU")]
    assert sum(g["n"] for g in contrast) == rep["data"]["n_lesions"]  # every planted lesion has its contrast


def test_detection_by_group_by_hand():
    lesions = [{"diameter_mm": 5.0, "score": 0.9, "kind": "lytic"}, {"diameter_mm": 12.0, "score": 0.4, "kind": "lytic"},
               {"diameter_mm": 25.0, "score": -np.inf, "kind": "blastic"}, {"diameter_mm": 10.0, "score": 0.6}]
    out = detection_by_group(lesions, detection_threshold=0.5, threshold_1fp=0.3)["groups"]
    assert {k: (g["n"], g["found_at_detection_threshold"], g["found_at_1fp"]) for k, g in out.items()} == {
        "0-10 mm": (1, 1, 1), "10-20 mm": (2, 1, 2), ">= 20 mm": (1, 0, 0), "blastic": (1, 0, 0), "lytic": (2, 1, 2)}
    assert equivalent_diameter_mm(4.0 / 3.0 * np.pi * 1e-3) == pytest.approx(2.0)  # r = 1 mm sphere


def test_a_second_run_into_the_same_folder_keeps_the_first_runs_lesion_details(shared_data, tmp_path):
    for seed in ("21", "22"):
        assert make_main(["--host", "heldout", "--cases", "1", "--seed", seed, "--out", str(tmp_path), "--easy",
                          "--crop", "48", "--shared-data", str(shared_data)]) == 0
    cases = json.loads((tmp_path / "dataset.json").read_text())["generator"]["cases"]
    assert sorted(cases) == sorted(c.name for c in list_cases(tmp_path)) and len(cases) == 2
    details = lesion_details(tmp_path)
    assert {d["kind"] for d in details.values()} <= {"lytic", "blastic"} and len(details) >= 2


def test_voxel_metrics_equal_a_run_at_the_detection_threshold(report, dataset):
    """The report takes the lesions scoring >= the card's threshold from a low-threshold run;
    a run at that threshold gives the same voxels."""
    _, rep = report
    model = load_model(None, "cpu")
    case = load_case(list_cases(dataset)[0])
    result = model.predict(case.image)  # the card's detection threshold
    counts = segmentation.confusion_counts(sitk.GetArrayFromImage(result.labelmap), case.label_array())
    row = rep["cases"][0]
    assert row["n_predicted"] == len(result.lesions)
    assert row["dsc"] == pytest.approx(segmentation.voxel_metrics(counts)["dsc"], nan_ok=True)
    assert row["specificity"] == pytest.approx(segmentation.voxel_metrics(counts)["specificity"])


def test_blds_part(report):
    _, rep = report
    blds = rep["blds"]
    assert [p["patch"] for p in blds["patches"]] == ["1.nii.gz", "2.nii.gz", "3.nii.gz", "4.nii.gz"]
    assert [p["n_true"] for p in blds["patches"]] == [1, 1, 2, 2] and blds["n_lesions"] == 6
    found = round(detection.sensitivity_at(blds["curve"], 2.0) * 6)
    assert blds["found_at_max_fp"] == found
    assert blds["summary"] == f"found {found} of 6 at <= 2 FP per patch"
    assert sum(p["hits"] for p in blds["patches"]) == blds["at_detection_threshold"]["hits"]


def test_refuses_to_overwrite_and_invalid_data(report, dataset, tmp_path, capsys):
    out, _ = report
    assert evaluate_main(["--model", "default", "--data", str(dataset), "--out", str(out), "--blds", "none"]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    assert evaluate_main(["--model", "default", "--data", str(tmp_path), "--out", str(tmp_path / "r"),
                          "--blds", "none"]) == 2
    assert "validate_dataset" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_origin_metrics_with_every_prediction_shown(dataset, tmp_path):
    """The embedded weights with a card threshold of 0.05 (= the evaluation's lowest score): every
    lesion on the FROC curve is shown, so the found lesions are classified and scored per patient."""
    state, card = load_weights(None)
    save_weights(state, {**card, "detection_threshold": 0.05}, tmp_path / "low.pt")
    out = tmp_path / "report"
    assert evaluate_main(["--model", str(tmp_path / "low.pt"), "--data", str(dataset), "--out", str(out),
                          "--blds", "none", "--bootstrap", "100", "--device", "cpu"]) == 0
    rep = json.loads((out / "report.json").read_text())
    curve, at = rep["detection"]["curve"], rep["detection"]["at_detection_threshold"]
    assert at["hits"] == round(curve["sensitivity"][-1] * curve["n_truth"]) > 0
    lesion, patient = rep["classification"]["lesion"], rep["classification"]["patient"]
    assert lesion["n"] == at["hits"] and lesion["n_lung"] + lesion["n_other"] == lesion["n"]
    assert lesion["tp"] + lesion["fp"] + lesion["tn"] + lesion["fn"] == lesion["n"]
    assert patient["n_without_prediction"] == sum(c["n_predicted"] == 0 for c in rep["cases"])
    assert rep["blds"] is None and "BLDS" not in (out / "report.md").read_text()


def test_detection_by_contrast_site_and_the_faint_target_by_hand():
    rows = [{"diameter_mm": 12.0, "score": 0.9, "contrast_hu": 150.0, "max_side_mm": 14.0, "site": "rib"},
            {"diameter_mm": 8.0, "score": 0.2, "contrast_hu": 120.0, "max_side_mm": 9.0, "site": "rib"},
            {"diameter_mm": 15.0, "score": 0.4, "contrast_hu": -250.0, "max_side_mm": 20.0, "site": "pelvis",
             "form": "expansile"},
            {"diameter_mm": 20.0, "score": -np.inf, "contrast_hu": 199.0, "max_side_mm": 22.0, "site": "pelvis"}]
    out = detection_by_group(rows, detection_threshold=0.5, threshold_1fp=0.3)["groups"]
    got = {k: (g["n"], g["found_at_detection_threshold"], g["found_at_1fp"]) for k, g in out.items() if g["n"]}
    assert got["+100 to +200 HU"] == (3, 1, 1)
    assert got["< -200 HU"] == (1, 0, 1)
    assert got["faint target: >= 10 mm and +100 to +200 HU"] == (2, 1, 1)  # the 9 mm one is left out
    assert got["site rib"] == (2, 1, 1) and got["site pelvis"] == (2, 0, 1)
    assert got["form expansile"] == (1, 0, 1)
    assert out["0 to +100 HU"]["n"] == 0 and out["0 to +100 HU"]["sensitivity_at_1fp"] is None


def test_lesion_ranks_by_hand():
    # predictions 0.9 (FP), 0.7 (hits truth 1), 0.5 (FP), 0.3 (hits truth 0); truth 2 not found
    pred = np.array([[50, 50, 50, 60, 60, 60], [20, 0, 0, 30, 10, 10], [70, 70, 70, 80, 80, 80],
                     [0, 0, 0, 10, 10, 10]], float)
    truth = np.array([[0, 0, 0, 10, 10, 10], [20, 0, 0, 30, 10, 10], [90, 90, 90, 99, 99, 99]], float)
    match = detection.match_lesions(pred, (pred[:, :3] + pred[:, 3:]) / 2, [0.9, 0.7, 0.5, 0.3], truth)
    assert lesion_ranks(match) == [{"score": 0.3, "rank": 4, "false_positives_above": 2},
                                   {"score": 0.7, "rank": 2, "false_positives_above": 1},
                                   {"score": None, "rank": None, "false_positives_above": None}]


def test_faint_setting_records_each_lesions_measured_contrast(shared_data, tmp_path):
    from training.lesion_measures import box_statistics

    assert make_main(["--host", "heldout", "--cases", "2", "--seed", "31", "--out", str(tmp_path),
                      "--setting", "faint", "--crop", "64", "--shared-data", str(shared_data)]) == 0
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert "faint settings" in meta["description"]
    for case_dir in list_cases(tmp_path):
        case = load_case(case_dir)
        image = sitk.GetArrayFromImage(case.image).astype(np.float32)
        labels = case.label_array()
        for les in meta["generator"]["cases"][case_dir.name]:
            assert les["kind"] == "blastic"
            idx = np.argwhere(labels == les["label"])
            stats = box_statistics(image, idx.min(0).astype(float), idx.max(0) + 1.0)
            assert les["contrast_hu"] == pytest.approx(stats["contrast_hu"], abs=2.0)  # int16 rounding
            assert 40 < les["contrast_hu"] < 300  # nominal +100..+200 above the replaced bone

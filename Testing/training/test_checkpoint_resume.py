"""A run stopped mid-epoch and resumed from last.pt continues exactly like an uninterrupted run."""

import json

import pytest
import torch

from training.checkpoint import load_checkpoint
from training.config import REPO_ROOT, load_config
from training.train import main, run

TINY = REPO_ROOT / "training" / "configs" / "tiny.yaml"


def _cfg(run_dir, shared_data, max_steps):
    return load_config(TINY, {"run_dir": str(run_dir), "data.shared_data": str(shared_data),
                              "schedule.max_steps": max_steps})


def test_resume_continues_identically(tmp_path, shared_data):
    whole = run(_cfg(tmp_path / "a", shared_data, 3), progress=False)
    first = run(_cfg(tmp_path / "b", shared_data, 1), progress=False)  # stops inside epoch 1
    ckpt = load_checkpoint(tmp_path / "b" / "last.pt")
    assert (ckpt["state"]["epoch"], ckpt["state"]["step"], ckpt["state"]["step_in_epoch"]) == (0, 1, 1)
    rest = run(_cfg(tmp_path / "b", shared_data, 3), progress=False)  # auto-resume from last.pt

    assert [r["step"] for r in whole["history"]] == [1, 2, 3]
    assert [r["step"] for r in first["history"] + rest["history"]] == [1, 2, 3]
    for a, b in zip(whole["history"], first["history"] + rest["history"]):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-6), (a, b)
    for (name, p), q in zip(whole["model"].state_dict().items(), rest["model"].state_dict().values()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)
    # the validation after epoch 1 (crossed by the resumed run) gives the same loss
    vals = [[json.loads(x) for x in (tmp_path / d / "log.jsonl").read_text().splitlines()] for d in "ab"]
    val_a, val_b = ([r["loss"] for r in v if r["type"] == "val"] for v in vals)
    assert len(val_a) == len(val_b) == 1 and val_b[0] == pytest.approx(val_a[0], rel=1e-5)
    assert rest["state"]["best_epoch"] == 1 and (tmp_path / "b" / "best.pt").is_file()


def test_resume_refuses_what_is_not_a_checkpoint(tmp_path, capsys):
    bogus = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, bogus)
    assert main(["--config", str(TINY), "--run-dir", str(tmp_path / "r"), "--resume", str(bogus)]) == 2
    assert "not a training checkpoint" in capsys.readouterr().err
    assert main(["--config", str(TINY), "--run-dir", str(tmp_path / "r"), "--resume", str(tmp_path / "no.pt")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_patch_stream_resumes_at_any_batch_with_any_number_of_workers(shared_data):
    from training.data_source import CaseSource, PatchStream, train_loader

    cfg = _cfg("unused", shared_data, None)
    cfg.data.pool_size, cfg.data.refresh_every = 1, 2  # the pooled case changes between batches
    source = CaseSource(cfg)
    direct = PatchStream(source, cfg, rank=0, batch_size=1)
    expected = [direct.batch(i) for i in range(3, 6)]
    resumed = iter(train_loader(PatchStream(source, cfg, rank=0, batch_size=1, start_batch=3), num_workers=2))
    for images, targets in expected:
        got_images, got_targets = next(resumed)
        torch.testing.assert_close(got_images, images, rtol=0, atol=0)
        torch.testing.assert_close(got_targets[0]["boxes"], targets[0]["boxes"], rtol=0, atol=0)
    other_rank = PatchStream(source, cfg, rank=1, batch_size=1).batch(3)[0]
    assert not torch.equal(other_rank, expected[0][0])


def test_a_finished_run_is_extended_with_the_configs_epochs_and_milestones(tmp_path, shared_data):
    base = {"run_dir": str(tmp_path / "r"), "data.shared_data": str(shared_data),
            "schedule.epochs": 1, "schedule.lr_milestones": [1]}
    first = run(load_config(TINY, base), progress=False)  # 1 epoch; the milestone passes at its end
    assert first["state"]["finished"] == "all epochs done (1)"
    # the resumed run must drop the LR at ITS milestone (epoch 2), not the checkpoint's (epoch 1) again
    more = run(load_config(TINY, {**base, "schedule.epochs": 3, "schedule.lr_milestones": [2]}), progress=False)
    lrs = {r["epoch"]: r["lr"] for r in more["history"]}
    lr0 = load_config(TINY).optim.lr
    gamma = load_config(TINY).schedule.lr_gamma
    assert sorted(lrs) == [1, 2]
    assert lrs[1] == pytest.approx(lr0 * gamma)  # after the first run's milestone
    assert lrs[2] == pytest.approx(lr0 * gamma ** 2)  # the new milestone, once


def test_changed_validation_patches_restart_the_best_figures(tmp_path, shared_data):
    base = {"run_dir": str(tmp_path / "r"), "data.shared_data": str(shared_data), "schedule.epochs": 1,
            "schedule.steps_per_epoch": 1, "schedule.val_batches": 2}
    first = run(load_config(TINY, base), progress=False)
    assert first["state"]["best_epoch"] == 1 and (tmp_path / "r" / "best.pt").is_file()
    # same validation patches (a path that only moves the data, more epochs): the best stays
    same = run(load_config(TINY, {**base, "schedule.epochs": 2, "data.num_workers": 0}), progress=False)
    assert same["state"]["val_fingerprint"] == first["state"]["val_fingerprint"]
    assert not (tmp_path / "r" / "best_before_epoch_1.pt").exists()
    # other patches: the old best is kept aside, and the next validation is the new best
    messages = []
    changed = run(load_config(TINY, {**base, "schedule.epochs": 3, "data.p_foreground": 0.5}), progress=False,
                  echo=messages.append)
    assert any("not comparable" in m for m in messages)
    assert (tmp_path / "r" / "best_before_epoch_2.pt").is_file()
    assert changed["state"]["best_epoch"] == 3 and load_checkpoint(tmp_path / "r" / "best.pt")["state"]["epoch"] == 3

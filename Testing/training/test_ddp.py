"""The DDP path on CPU: torchrun, two processes, gloo. After a step both ranks hold identical
weights, each rank trained on its own patches, and only rank 0 wrote the run's files."""

import json
import os
import subprocess
import sys
import textwrap

import torch

from BoneMetSegLib.model import MaskRCNN3D
from training.config import REPO_ROOT, load_config

TINY = REPO_ROOT / "training" / "configs" / "tiny.yaml"

WORKER = textwrap.dedent("""
    import os, sys, torch
    from training.config import load_config
    from training.train import run
    run_dir, shared, out = sys.argv[1:4]
    cfg = load_config({tiny!r}, {{"run_dir": run_dir, "data.shared_data": shared, "schedule.max_steps": 1}})
    result = run(cfg, device="cpu", progress=False)
    torch.save({{"state": result["model"].state_dict(), "history": result["history"]}},
               os.path.join(out, "rank%s.pt" % os.environ["RANK"]))
""")


def test_two_gloo_processes_stay_in_sync(tmp_path, shared_data):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tiny=str(TINY)))
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(run_dir), str(shared_data), str(tmp_path)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))

    for name, p in r0["state"].items():
        torch.testing.assert_close(r1["state"][name], p, rtol=0, atol=0, msg=name)  # bit-identical
    torch.manual_seed(0)
    init = MaskRCNN3D(load_config(TINY).model).state_dict()
    assert any(not torch.equal(p, init[k]) for k, p in r0["state"].items() if p.is_floating_point())

    (h0,), (h1,) = r0["history"], r1["history"]
    assert h0["rank_loss"] != h1["rank_loss"]  # each rank its own patches
    assert h0["loss"] == h1["loss"] and abs(h0["loss"] - (h0["rank_loss"] + h1["rank_loss"]) / 2) < 1e-4
    log = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["type"] == "train"] == [1]  # one writer
    assert (run_dir / "last.pt").is_file()

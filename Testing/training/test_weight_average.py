"""training.weight_average: a fine-tune blended with its start weights, exported and loaded back."""

import pytest
import torch

from BoneMetSegLib.inference.predictor import load_model
from BoneMetSegLib.model import MaskRCNN3D
from training.checkpoint import load_checkpoint, save_checkpoint
from training.config import REPO_ROOT, load_config
from training.export import main as export_main
from training.weight_average import BlendError, blend_state_dicts, main

TINY = REPO_ROOT / "training" / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Exported start weights (seed 1) and a training checkpoint of other weights (seed 2)."""
    root = tmp_path_factory.mktemp("blend")
    cfg = load_config(TINY)
    nets, paths = [], []
    for seed in (1, 2):
        torch.manual_seed(seed)
        net = MaskRCNN3D(cfg.model)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        path = root / f"seed{seed}.pt"
        save_checkpoint(path, model=net, optimizer=opt, scheduler=torch.optim.lr_scheduler.MultiStepLR(opt, [9]),
                        scaler=torch.amp.GradScaler("cuda", enabled=False),
                        state={"epoch": 1, "step": 10, "step_in_epoch": 0}, config=cfg.to_dict())
        nets.append(net.state_dict())
        paths.append(path)
    base = root / "base.pt"
    assert export_main(["--checkpoint", str(paths[0]), "--out", str(base)]) == 0
    return {"base": base, "checkpoint": paths[1], "base_state": load_model(base, "cpu").net.state_dict(),
            "tuned_state": nets[1], "root": root}


def test_blend_is_the_straight_line_between_the_two(pair, tmp_path):
    out = tmp_path / "blend.pt"
    assert main(["--checkpoint", str(pair["checkpoint"]), "--base", str(pair["base"]), "--alpha", "0.25",
                 "--out", str(out)]) == 0
    ckpt = load_checkpoint(out)
    assert ckpt["slim"] and ckpt["state"]["blend"]["alpha"] == 0.25 and ckpt["state"]["step"] == 10
    base, tuned = pair["base_state"], pair["tuned_state"]
    floats = [k for k, v in tuned.items() if v.is_floating_point() and not torch.equal(base[k], v.half().float())]
    assert floats, "the two sets of weights should differ"
    for key in floats:  # stored in float16, like every slim checkpoint
        torch.testing.assert_close(ckpt["model"][key], (0.75 * base[key] + 0.25 * tuned[key]).half())

    exported = tmp_path / "blend_export.pt"  # what export makes of it loads like any weights
    assert export_main(["--checkpoint", str(out), "--out", str(exported)]) == 0
    loaded = load_model(exported, "cpu").net.state_dict()
    torch.testing.assert_close(loaded[floats[0]], ckpt["model"][floats[0]].float())

    assert main(["--checkpoint", str(pair["checkpoint"]), "--base", str(pair["base"]), "--alpha", "0.5",
                 "--out", str(out)]) == 2  # never overwritten


def test_blend_ends_are_the_two_weights_and_bad_input_is_refused(pair, tmp_path, capsys):
    base, tuned = pair["base_state"], pair["tuned_state"]
    key = next(k for k, v in tuned.items() if v.is_floating_point())
    torch.testing.assert_close(blend_state_dicts(base, tuned, 0.0)[key], base[key])
    torch.testing.assert_close(blend_state_dicts(base, tuned, 1.0)[key], tuned[key])
    with pytest.raises(BlendError, match="alpha"):
        blend_state_dicts(base, tuned, 1.5)
    other = dict(base)
    other[key] = torch.zeros(3)
    with pytest.raises(BlendError, match="not the same architecture"):
        blend_state_dicts(other, tuned, 0.5)
    assert main(["--checkpoint", str(pair["base"]), "--base", str(pair["base"]), "--alpha", "0.5",
                 "--out", str(tmp_path / "x.pt")]) == 2  # exported weights are not a training checkpoint
    assert "error:" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()

"""``afd probe-update``: gradient statistics and paired evaluation of steps along the mean gradient."""

from __future__ import annotations

import json

import pytest
import torch

from afd.probes.update import gradient_statistics, stepped_copy
from afd.train.config import AdaptConfig
from test_nft_loss import tiny_model


def test_gradient_statistics_separate_signal_from_noise():
    gen = torch.Generator().manual_seed(0)
    signal = torch.randn(20000, generator=gen)
    noisy = [[signal + 3 * torch.randn(20000, generator=gen) for _ in range(2)] for _ in range(4)]
    s = gradient_statistics(noisy)
    assert s["cos_other_batch"] == pytest.approx(0.1, abs=0.03)  # |s|^2 / (|s|^2 + 9 |s|^2)
    assert s["expected_norm"] == pytest.approx(float(signal.norm()), rel=0.1)
    pure = gradient_statistics([[torch.randn(20000, generator=gen)] for _ in range(4)])
    assert abs(pure["cos_other_batch"]) < 0.03 and pure["expected_norm"] < 0.2 * pure["grad_norm"]
    with pytest.raises(ValueError, match="at least 2 batches"):
        gradient_statistics(noisy[:1])


def test_stepped_copy_moves_by_the_requested_rms_and_leaves_the_model():
    model = tiny_model()
    params = [p for p in model.parameters() if p.requires_grad]
    direction = [torch.randn_like(p) for p in params]
    moved = stepped_copy(model, direction, 1e-3)
    delta = torch.cat([(a - b).flatten() for a, b in zip([p for p in moved.parameters() if p.requires_grad], params)])
    assert delta.pow(2).mean().sqrt().item() == pytest.approx(1e-3, rel=1e-3)
    assert torch.equal(torch.cat([p.flatten() for p in stepped_copy(model, direction, 0.0).parameters()]),
                       torch.cat([p.flatten() for p in model.parameters()]))


def test_probe_update_end_to_end(tiny_state_student, tmp_path):
    from afd.cli import main
    from train_util import tiny_args

    out = tmp_path / "probe"
    code = main(["probe-update", "--config", "configs/train/afd.yaml", "--out", str(out), "--batches", "2",
                 "--draws", "2", "--steps", "0,1e-3", "--per-prompt", "1",
                 *tiny_args(tiny_state_student, tmp_path / "unused", tmp_path / "cache", "train.method=oracle")])
    assert code == 0
    rows = [json.loads(line) for line in (out / "probe.jsonl").read_text().splitlines()]
    assert [r["rms_step"] for r in rows] == [0.0, 1e-3]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["grad_norm"] > 0 and -1 <= summary["cos_other_batch"] <= 1
    assert (out / "config.yaml").exists()


def test_probe_update_refuses_methods_without_an_nft_update(tiny_state_student, tmp_path, capsys):
    from afd.cli import main
    from train_util import tiny_args

    code = main(["probe-update", "--config", "configs/train/afd.yaml", "--out", str(tmp_path / "p"),
                 *tiny_args(tiny_state_student, tmp_path / "u", tmp_path / "cache", "train.method=sft")])
    assert code != 0 and "train.method is 'sft'" in capsys.readouterr().err


def test_probe_update_checks_its_arguments(tmp_path):
    from afd.probes.update import probe_update

    cfg = AdaptConfig()
    cfg.train.method = "oracle"
    for kwargs, match in (({"branch": "sideways"}, "branch"), ({"batches": 1}, "--batches"),
                          ({"sizes": (-1.0,)}, "step sizes")):
        with pytest.raises(ValueError, match=match):
            probe_update(cfg, tmp_path / "p", **kwargs)
    assert not (tmp_path / "p").exists()

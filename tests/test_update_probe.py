"""``afd probe-update``: gradient statistics, the optimizer's own step, and paired central differences of
the method's direction beside two controls (SFT's and a random direction)."""

from __future__ import annotations

import json

import pytest
import torch

from afd.probes.update import gradient_statistics, moved_copy, optimizer_step, paired_difference
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


def test_adam_step_is_adamws_first_step():
    """The probe's "adam" step is exactly what torch's AdamW does on its first step (same lr, weight
    decay, eps), and "sign" is -lr sign(g); moved_copy adds h times it and leaves the model alone."""
    model = tiny_model().double()  # float64, so that p - before resolves the step exactly
    params = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(1)
    grad = [torch.randn(p.shape, generator=gen, dtype=torch.float64)
            * 10.0 ** torch.randint(-9, 0, p.shape, generator=gen) for p in params]
    before = [p.detach().clone() for p in params]
    delta = optimizer_step(grad, params, lr=1e-3, weight_decay=1e-4, rule="adam")
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)
    for p, g in zip(params, grad):
        p.grad = g.clone()
    opt.step()
    for p, b, d in zip(params, before, delta):
        torch.testing.assert_close(p.detach() - b, d, rtol=1e-9, atol=1e-15)
    sign = optimizer_step(grad, params, lr=2e-3, weight_decay=0.0, rule="sign")
    assert all(torch.equal(s, -2e-3 * torch.sign(g)) for s, g in zip(sign, grad))
    model = tiny_model().double()
    params = [p for p in model.parameters() if p.requires_grad]
    moved = moved_copy(model, sign, -3.0)
    for a, b, s in zip([p for p in moved.parameters() if p.requires_grad], params, sign):
        torch.testing.assert_close(a - b, -3.0 * s)
    with pytest.raises(ValueError, match="step must be one of"):
        optimizer_step(grad, params, 1e-3, 0.0, "sgd")


def test_paired_difference_pairs_clips_and_skips_the_undefined():
    mean, se, n = paired_difference([50.0, None, 70.0, 10.0], [40.0, 30.0, None, 20.0])
    assert n == 2 and mean == pytest.approx(0.0) and se == pytest.approx(10.0)
    assert paired_difference([None], [1.0])[2] == 0


def test_probe_update_end_to_end(tiny_state_student, tmp_path):
    from afd.cli import main
    from train_util import tiny_args

    out = tmp_path / "probe"
    code = main(["probe-update", "--config", "configs/train/afd.yaml", "--out", str(out), "--batches", "2",
                 "--draws", "2", "--multiples", "1,30", "--per-prompt", "1",
                 *tiny_args(tiny_state_student, tmp_path / "unused", tmp_path / "cache", "train.method=oracle")])
    assert code == 0
    rows = [json.loads(line) for line in (out / "probe.jsonl").read_text().splitlines()]
    assert [(r["direction"], r["multiple"]) for r in rows] == [(d, h) for d in ("method", "sft", "random")
                                                               for h in (1.0, 30.0)]
    assert all(r["pairs"] > 0 and r["step"] == "adam" for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    for name in ("method", "sft"):
        g = summary["gradients"][name]
        assert g["grad_norm"] > 0 and -1 <= g["cos_other_batch"] <= 1
    assert isinstance(summary["sft_control_positive"], bool) and "physical_consistency" in summary["base"]
    assert (out / "config.yaml").exists()


def test_probe_update_refuses_methods_that_train_through_the_rollout(tiny_state_student, tmp_path, capsys):
    from afd.cli import main
    from train_util import tiny_args

    code = main(["probe-update", "--config", "configs/train/afd.yaml", "--out", str(tmp_path / "p"),
                 *tiny_args(tiny_state_student, tmp_path / "u", tmp_path / "cache", "train.method=gan")])
    assert code != 0 and "train.method is 'gan'" in capsys.readouterr().err


def test_probe_update_checks_its_arguments(tmp_path):
    from afd.probes.update import probe_update

    cfg = AdaptConfig()
    cfg.train.method = "oracle"
    for kwargs, match in (({"branch": "sideways"}, "branch"), ({"batches": 1}, "--batches"),
                          ({"multiples": (-1.0,)}, "step multiples"), ({"step": "sgd"}, "step must be")):
        with pytest.raises(ValueError, match=match):
            probe_update(cfg, tmp_path / "p", **kwargs)
    assert not (tmp_path / "p").exists()

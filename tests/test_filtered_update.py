"""The reward-filtered update (``afd.update=reward-filtered``): SFT's loss on each prompt's top-k
rollouts by weight, usable by AFD and the oracle."""

from __future__ import annotations

import json

import pytest
import torch

from afd.losses import fm_error, forward_noise, velocity
from afd.methods.afd_config import AFDMethodConfig
from afd.methods.filtered import reward_filtered_loss, top_k_per_group
from test_nft_loss import fake_text, tiny_model


def test_top_k_keeps_the_best_rollouts_of_each_prompt():
    w = torch.tensor([0.2, 0.9, 0.5, 0.1, 0.7, 0.7, 0.3])
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 2])
    assert top_k_per_group(w, groups, 1).tolist() == [1, 4, 6]  # a tie goes to the earlier rollout
    assert top_k_per_group(w, groups, 2).tolist() == [1, 2, 4, 5, 6]  # group 2 has only one
    assert top_k_per_group(w, groups, 5).tolist() == list(range(7))


def test_loss_is_sfts_on_the_kept_rollouts_only():
    """The loss is flow matching (x0 weighting) on the kept rollouts with the same draws; changing
    a dropped rollout changes nothing, and at equal weights the first rollout of a group is kept."""
    model = tiny_model()
    c = model.config
    x0 = torch.randn(4, c.frames, c.channels, c.height, c.width, generator=torch.Generator().manual_seed(1))
    text = fake_text(4)
    groups, w = torch.tensor([0, 0, 1, 1]), torch.tensor([0.3, 0.8, 0.6, 0.2])
    cfg = AFDMethodConfig(update="reward-filtered", lambda_prior=0.0)
    out = reward_filtered_loss(model, None, x0, text, w, groups, torch.Generator().manual_seed(0), cfg)
    keep = torch.tensor([1, 2])
    t, eps, x_t = forward_noise(x0[keep], c, torch.Generator().manual_seed(0))
    want = fm_error(velocity(model, x0[keep], x_t, t, text.index(keep)), eps - x0[keep], t, "x0").mean()
    assert out["loss"].item() == pytest.approx(want.item(), rel=1e-6)
    assert out["kept_weight"].item() == pytest.approx(0.7)
    changed = x0.clone()
    changed[[0, 3]] += 5.0
    again = reward_filtered_loss(model, None, changed, text, w, groups, torch.Generator().manual_seed(0), cfg)
    assert again["loss"].item() == out["loss"].item()
    even = reward_filtered_loss(model, None, x0, text, torch.full((4,), 0.5), groups,
                                torch.Generator().manual_seed(0), cfg)
    first = reward_filtered_loss(model, None, x0[[0, 2, 1, 3]], text.index(torch.tensor([0, 2, 1, 3])),
                                 torch.tensor([0.9, 0.9, 0.1, 0.1]), groups[[0, 2, 1, 3]],
                                 torch.Generator().manual_seed(0), cfg)
    assert even["loss"].item() == pytest.approx(first["loss"].item(), rel=1e-6)


def test_the_prior_term_only_moves_the_student(tmp_path):
    model, ref = tiny_model(), tiny_model(seed=1)
    c = model.config
    x0 = torch.randn(2, c.frames, c.channels, c.height, c.width, generator=torch.Generator().manual_seed(1))
    cfg = AFDMethodConfig(update="reward-filtered", lambda_prior=1.0)
    out = reward_filtered_loss(model, ref, x0, fake_text(2), torch.tensor([0.4, 0.6]), torch.tensor([0, 0]),
                               torch.Generator().manual_seed(0), cfg)
    out["loss"].backward()
    assert out["loss_prior"].item() > 0 and all(p.grad is None for p in ref.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_the_oracle_trains_with_the_reward_filtered_update(tiny_state_student, tmp_path):
    from afd.cli import main
    from train_util import tiny_args

    run = tmp_path / "run"
    args = tiny_args(tiny_state_student, run, tmp_path / "cache", "train.method=oracle", "train.steps=2",
                     "afd.update=reward-filtered", "afd.top_k=1", "run.tensorboard=false")
    assert main(["train", "--no-progress", "--config", "configs/train/afd.yaml", *args]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all("loss_fm" in r and "kept_weight" in r for r in rows)
    assert "loss_nft" not in rows[0]


def test_top_k_must_be_positive():
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        AFDMethodConfig(top_k=0)

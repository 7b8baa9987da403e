"""The discriminator's training options: the replay buffer of past prompt groups (first in, first
out, exact through a resume), label smoothing of the BT loss (margins stop growing), scoring with an
average of D's weights, and the saturation statistics of ``score_pairs``."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from afd.config import load_config
from afd.disc.losses import bt_loss, gan_loss
from afd.text.encoder import TextEncoding
from afd.train.config import AdaptConfig
from afd.train.disc_phase import ReplayBuffer
from afd.train.loop import train
from train_util import tiny_args


def _groups(P, G, value):
    clip = (P, 4, 3, 8, 8)
    text = TextEncoding(torch.full((P, 5, 6), float(value)), torch.ones(P, 5, dtype=torch.bool),
                        torch.full((P, 6), float(value)))
    return torch.full(clip, value / 10), torch.full((P * G, *clip[1:]), -value / 10), text


def test_replay_buffer_keeps_the_newest_groups_and_round_trips():
    buf = ReplayBuffer(3)
    assert len(buf) == 0 and buf.sample(2, torch.Generator().manual_seed(0), torch.zeros(1)) is None
    for v in (1, 2, 3):
        buf.add(*_groups(1 if v < 3 else 2, 2, v))
    assert len(buf) == 3  # 1 + 1 + 2 groups added, the oldest dropped
    assert buf.teacher[:, 0, 0, 0, 0].tolist() == pytest.approx([0.2, 0.3, 0.3], abs=1e-3)
    assert buf.rollouts.shape == (3, 2, 4, 3, 8, 8) and buf.text.pooled[:, 0].tolist() == [2.0, 3.0, 3.0]
    t, r, text = buf.sample(5, torch.Generator().manual_seed(0), torch.zeros(1))
    assert t.shape[0] == 3 and r.shape == (6, 4, 3, 8, 8) and len(text) == 3 and t.dtype == torch.float32
    # a rollout group stays with its own teacher clip and prompt
    assert torch.allclose(r[::2, 0, 0, 0, 0], -t[:, 0, 0, 0, 0]) and torch.allclose(text.pooled[:, 0] / 10,
                                                                                      t[:, 0, 0, 0, 0], atol=1e-3)
    again = ReplayBuffer(3)
    again.load_state_dict(buf.state_dict())
    for a, b in zip(again.state_dict().values(), buf.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="cannot join"):
        buf.add(*_groups(1, 3, 4))
    with pytest.raises(ValueError, match="disc.replay must be >= 0"):
        load_config(AdaptConfig, None, ["disc.replay=-1"])


def test_replay_resumes_exactly(tiny_student, tmp_path):
    cache = tmp_path / "cache"
    extra = ("disc.replay=3", "disc.ema=0.5", "eval.before=false")
    train(load_config(AdaptConfig, None, tiny_args(tiny_student, tmp_path / "a", cache, "train.steps=4", *extra)),
          progress=False)
    train(load_config(AdaptConfig, None, tiny_args(tiny_student, tmp_path / "b", cache, "train.steps=2", *extra)),
          progress=False)
    half = load_file(tmp_path / "b" / "checkpoint" / "disc_replay.safetensors")
    assert half["teacher"].shape[0] == 3  # 2 iterations x 2 prompts, capped at 3 groups
    train(load_config(AdaptConfig, None, tiny_args(tiny_student, tmp_path / "b", cache, "train.steps=4", *extra)),
          resume=True, progress=False)
    for name in ("disc", "disc_ema", "student", "disc_replay"):
        a = load_file(tmp_path / "a" / "checkpoint" / f"{name}.safetensors")
        b = load_file(tmp_path / "b" / "checkpoint" / f"{name}.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    # without the buffer the run differs: replay changes what D trains on
    train(load_config(AdaptConfig, None, tiny_args(tiny_student, tmp_path / "c", cache, "train.steps=4",
                                                   "eval.before=false")), progress=False)
    a, c = (load_file(tmp_path / x / "checkpoint" / "disc.safetensors") for x in ("a", "c"))
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_label_smoothing_bounds_the_margin():
    eps = 0.1
    best = math.log((1 - eps) / eps)
    margins = torch.linspace(-1, 6, 701)
    losses = torch.stack([bt_loss(torch.tensor([m]), torch.tensor([0.0]), smoothing=eps) for m in margins])
    assert float(margins[losses.argmin()]) == pytest.approx(best, abs=0.02)
    # past the optimum the loss pushes the margin back down; without smoothing it keeps pulling it up
    t = torch.tensor([best + 2.0], requires_grad=True)
    bt_loss(t, torch.tensor([0.0]), smoothing=eps).backward()
    assert t.grad.item() > 0
    t.grad = None
    bt_loss(t, torch.tensor([0.0])).backward()
    assert t.grad.item() < 0
    assert bt_loss(torch.tensor([1.0]), torch.tensor([0.0]), smoothing=0.0) == bt_loss(torch.tensor([1.0]),
                                                                                       torch.tensor([0.0]))
    # the GAN loss's optimum logit is log((1 - eps) / eps) for teacher clips too
    logits = torch.linspace(-1, 6, 701)
    g = torch.stack([gan_loss(torch.tensor([x]), torch.tensor([-x]), smoothing=eps) for x in logits])
    assert float(logits[g.argmin()]) == pytest.approx(best, abs=0.02)
    with pytest.raises(ValueError, match="label_smoothing"):
        load_config(AdaptConfig, None, ["disc.label_smoothing=0.5"])


def test_scoring_average_and_saturation_statistics(tiny_student, tmp_path):
    import json

    from afd.disc.config import DiscConfig
    from afd.disc.model import Discriminator
    from afd.text import get_text_encoder
    from afd.train.config import DiscTrainConfig
    from afd.train.disc_phase import score_pairs

    run = tmp_path / "a"
    train(load_config(AdaptConfig, None, tiny_args(tiny_student, run, tmp_path / "cache", "train.steps=2",
                                                   "disc.ema=0.5", "eval.before=false")), progress=False)
    d, e = (load_file(run / "checkpoint" / f"{x}.safetensors") for x in ("disc", "disc_ema"))
    assert d.keys() == e.keys() and any(not torch.equal(d[k], e[k]) for k in d)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= r["r_phi_p10"] <= r["r_phi_p90"] <= 1 and 0 <= r["r_phi_sat"] <= 1 for r in rows)

    torch.manual_seed(0)
    disc = Discriminator(DiscConfig(frames=4, size=8, width=4, hidden=16, depth=2))
    text = get_text_encoder().encode(["a red ball falls", "a blue ball falls"])
    teacher, student = torch.zeros(2, 4, 3, 8, 8), torch.zeros(4, 4, 3, 8, 8)
    with torch.no_grad():  # a D whose logit is its bias: every pair ties, nothing saturates
        for p in disc.parameters():
            p.zero_()
    _, _, stats = score_pairs(disc, DiscTrainConfig(), teacher, student, text)
    assert stats["r_phi"] == stats["r_phi_p10"] == stats["r_phi_p90"] == 0.5 and stats["r_phi_sat"] == 0.0

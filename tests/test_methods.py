"""The baselines (SFT, GAN, score-free DMD) and AFD as methods of the shared loop: their losses on
hand-made tensors, where gradients flow, a tiny run of each and exact resume of each."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from afd.config import load_config
from afd.losses import flow_matching_loss
from afd.methods import common
from afd.methods.base import Batch, Prepared
from afd.text import get_text_encoder
from afd.train.config import AdaptConfig
from afd.train.loop import Trainer, train
from train_util import tiny_args

METHODS = ("afd", "sft", "gan", "dmd")
PROMPTS = ["a small red ball falls on a black background", "a large blue ball is tossed upward on a gray background"]


def trainer_for(method, tiny_student, tmp_path, *extra) -> Trainer:
    cfg = load_config(AdaptConfig, None, tiny_args(tiny_student, tmp_path / "run", tmp_path / "cache",
                                                   f"train.method={method}", *extra))
    return Trainer(cfg, resume=False, progress=False)


def hand_batch(trainer: Trainer, G: int = 2) -> Batch:
    torch.manual_seed(0)
    text = get_text_encoder().encode(PROMPTS)
    teacher = torch.rand(2, 16, 3, 32, 32) * 2 - 1
    rollouts = torch.rand(2 * G, 16, 3, 32, 32) * 2 - 1
    return Batch(step=0, prompts=PROMPTS, text=text, teacher=teacher, rollouts=rollouts, rollout_latents=rollouts,
                 rollout_text=text.repeat_interleave(G), group_ids=torch.arange(2).repeat_interleave(G),
                 d_teacher=torch.tensor([1.0, 0.5]), d_student=torch.tensor([0.2, -0.3, 0.4, 0.1]))


def grads(module) -> dict[str, torch.Tensor]:
    return {n: p.grad for n, p in module.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_sft_loss_is_flow_matching_on_teacher_clips(tiny_student, tmp_path):
    tr = trainer_for("sft", tiny_student, tmp_path, "sft.lambda_prior=0")
    batch = hand_batch(tr)
    out = tr.method.student_loss(batch, Prepared(), torch.Generator().manual_seed(3))
    ref = flow_matching_loss(tr.models.student, batch.teacher, batch.text, torch.Generator().manual_seed(3))
    torch.testing.assert_close(out["loss"], ref)
    # the prior term at theta = theta_ref is zero and leaves the loss unchanged
    tr.cfg.sft.lambda_prior = 1.0
    out2 = tr.method.student_loss(batch, Prepared(), torch.Generator().manual_seed(3))
    assert float(out2["loss_prior"]) == pytest.approx(0.0, abs=1e-10)
    torch.testing.assert_close(out2["loss"], ref)


def test_sft_collects_no_rollouts(tiny_student, tmp_path, monkeypatch):
    tr = trainer_for("sft", tiny_student, tmp_path)
    monkeypatch.setattr(Trainer, "rollouts", lambda *a, **k: pytest.fail("SFT must not roll out"))
    batch, _ = tr.collect(0)
    assert batch.rollouts is None and batch.teacher.shape == (2, 16, 3, 32, 32)
    row = tr.iteration(0)
    assert "loss_fm" in row and "d_loss" not in row


def test_afd_has_no_gradient_through_the_rollout(tiny_student, tmp_path):
    tr = trainer_for("afd", tiny_student, tmp_path)
    batch, _ = tr.collect(0)
    assert not batch.rollouts.requires_grad and batch.rollouts.grad_fn is None
    tr.discriminator(batch, 0)
    prep = tr.method.prepare(batch)
    assert prep.weights.shape == (4,) and bool(((prep.weights >= 0) & (prep.weights <= 1)).all())
    out = tr.method.student_loss(batch, prep, torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert grads(tr.models.student) and not grads(tr.models.disc) and not grads(tr.models.old)


def test_oracle_weights_follow_the_exact_physics_and_train_no_discriminator(tiny_student, tmp_path, monkeypatch):
    """The diagnostic oracle: per prompt, real-world rollouts outrank loose-world ones on the
    world's exact physical consistency, so they get the higher weights; D is never trained."""
    from afd.eval.measures import rollout_measures
    from afd.video.core import STUDENT
    from afd.world.sample import sample_world

    tr = trainer_for("oracle", tiny_student, tmp_path)
    batch = hand_batch(tr)
    clips = []
    for p in PROMPTS:  # rollout 0 of each prompt: the real world; rollout 1: the loose world
        clips += [sample_world([p], [5], "real", STUDENT)[0].video.frames,
                  sample_world([p], [5], "loose", STUDENT)[0].video.frames]
    batch.rollouts = torch.stack(clips)
    pc = rollout_measures(batch.rollouts, [p for p in PROMPTS for _ in range(2)])["physical_consistency"]
    assert pc[0] > pc[1] and pc[2] > pc[3]
    w = tr.method.prepare(batch).weights
    assert w[0] > 0.5 > w[1] and w[2] > 0.5 > w[3]
    monkeypatch.setattr(Trainer, "discriminator", lambda *a, **k: pytest.fail("the oracle must not train D"))
    # the oracle measures its rollouts once, through the judge; the log-only fidelity reuses them
    calls = []
    real_measure = tr.judge.measure
    monkeypatch.setattr(tr.judge, "measure", lambda *a, **k: calls.append(1) or real_measure(*a, **k))
    row = tr.iteration(0)
    assert "d_loss" not in row and "loss_nft" in row and "reward_fidelity" in row
    assert len(calls) == 1
    with pytest.raises(ValueError, match="afd.advantage.reward=logit"):
        trainer_for("oracle", tiny_student, tmp_path / "r", "afd.advantage.reward=ratio")


def test_chance_weights_ignore_the_rollouts_and_repeat_per_seed_and_step(tiny_student, tmp_path, monkeypatch):
    """The chance control: weights from random scores that depend on (seed, step, rank) only, never
    on the clips, D or a judge; a resumed run draws the same ones; no discriminator is trained."""
    from afd.methods.chance import chance_scores

    tr = trainer_for("chance", tiny_student, tmp_path, "eval.judge=none")
    batch = hand_batch(tr, G=4)
    w = tr.method.prepare(batch).weights
    assert w.shape == (8,) and bool(((w >= 0) & (w <= 1)).all()) and len(set(w.tolist())) > 2
    batch.rollouts = -batch.rollouts  # other clips, other D scores: the same weights
    batch.rollout_latents, batch.d_student = batch.rollouts, None
    torch.testing.assert_close(tr.method.prepare(batch).weights, w)
    batch.step = 1
    assert not torch.equal(tr.method.prepare(batch).weights, w)
    torch.testing.assert_close(chance_scores(8, 0, 3), chance_scores(8, 0, 3))
    assert not torch.equal(chance_scores(8, 0, 3), chance_scores(8, 1, 3))
    assert not torch.equal(chance_scores(8, 0, 3), chance_scores(8, 0, 3, rank=1))
    # reward-filtered under chance: one rollout per prompt, and a random one
    picks = set()
    for step in range(12):
        batch.step = step
        ws = tr.method.prepare(batch).weights.view(2, 4)
        picks.update(ws.argmax(1).tolist())
    assert len(picks) > 1
    monkeypatch.setattr(Trainer, "discriminator", lambda *a, **k: pytest.fail("chance must not train D"))
    row = tr.iteration(0)
    assert "d_loss" not in row and "loss_nft" in row


def test_gan_loss_hand_computed_and_one_step_per_block(tiny_student, tmp_path, monkeypatch):
    tr = trainer_for("gan", tiny_student, tmp_path, "gan.lambda_prior=0")
    batch = hand_batch(tr)
    seen = []
    real_rollout = common.rollout

    def spy(model, text, noise, levels, **kw):
        seen.append(kw["grad_steps"])
        return real_rollout(model, text, noise, levels, **kw)

    monkeypatch.setattr(common, "rollout", spy)
    fixed = torch.tensor([0.3, -0.2, 0.1, 0.0])
    monkeypatch.setattr(type(tr.models.disc), "forward", lambda self, video, text: fixed + 0 * video.mean((1, 2, 3, 4)))
    out = tr.method.student_loss(batch, Prepared(), torch.Generator().manual_seed(5))
    expected = torch.nn.functional.softplus(batch.d_teacher.repeat_interleave(2) - fixed).mean()
    torch.testing.assert_close(out["loss"], expected)
    n_blocks, n_steps = tr.models.student.config.n_blocks, tr.models.student.config.steps
    assert len(seen) == 1 and len(seen[0]) == n_blocks and all(0 <= s < n_steps for s in seen[0])
    # the same generator seed (every rank seeds it identically) picks the same steps
    assert common.draw_grad_steps(n_blocks, n_steps, torch.Generator().manual_seed(5)) == seen[0]
    tr.cfg.disc.loss = "gan"
    out = tr.method.student_loss(batch, Prepared(), torch.Generator().manual_seed(5))
    torch.testing.assert_close(out["loss"], torch.nn.functional.softplus(-fixed).mean())


def test_gan_gradient_reaches_the_student_not_the_discriminator(tiny_student, tmp_path):
    tr = trainer_for("gan", tiny_student, tmp_path)
    out = tr.method.student_loss(hand_batch(tr), Prepared(), torch.Generator().manual_seed(1))
    out["loss"].backward()
    assert grads(tr.models.student) and not grads(tr.models.disc)
    assert all(p.requires_grad for p in tr.models.disc.trainable_parameters())  # restored after the step


def test_dmd_critic_and_student_update_the_right_networks(tiny_student, tmp_path):
    tr = trainer_for("dmd", tiny_student, tmp_path)
    batch = hand_batch(tr)
    before = {k: v.clone() for k, v in tr.method.fake.state_dict().items()}
    student_before = {k: v.clone() for k, v in tr.models.student.state_dict().items()}
    stats = tr.method.critic_steps(batch, torch.Generator().manual_seed(0))
    assert {"fake_fm", "fake_cls", "fake_acc"} <= set(stats)
    assert any(not torch.equal(before[k], v) for k, v in tr.method.fake.state_dict().items())
    assert all(torch.equal(student_before[k], v) for k, v in tr.models.student.state_dict().items())
    tr.method.fake.zero_grad(set_to_none=True)
    out = tr.method.student_loss(batch, Prepared(), torch.Generator().manual_seed(1))
    out["loss"].backward()
    assert grads(tr.models.student) and not grads(tr.method.fake)


@pytest.mark.parametrize("method", METHODS)
def test_tiny_run_and_exact_resume(method, tiny_student, tmp_path):
    cache = tmp_path / "cache"
    straight = load_config(AdaptConfig, None, tiny_args(tiny_student, tmp_path / "a", cache, "train.steps=4",
                                                        f"train.method={method}", "eval.every=0"))
    train(straight, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert (tmp_path / "a" / "eval.json").exists()
    first = load_config(AdaptConfig, None, tiny_args(tiny_student, tmp_path / "b", cache, "train.steps=2",
                                                     f"train.method={method}", "eval.every=0"))
    train(first, progress=False)
    resumed = load_config(AdaptConfig, None, tiny_args(tiny_student, tmp_path / "b", cache, "train.steps=4",
                                                       f"train.method={method}", "eval.every=0"))
    train(resumed, resume=True, progress=False)
    names = ["student", "old", "disc"] + (["dmd_fake"] if method == "dmd" else [])
    for name in names:
        a = load_file(tmp_path / "a" / "checkpoint" / f"{name}.safetensors")
        b = load_file(tmp_path / "b" / "checkpoint" / f"{name}.safetensors")
        for k in a:
            assert torch.equal(a[k], b[k]), f"{method}: {name}.{k} differs after resume"

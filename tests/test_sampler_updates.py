"""Updates with per-rollout credit at the sampler's own states (afd/methods/sampler_updates.py) and
prefix groups: the record is what the sampler used, the policy-gradient log-probabilities are the
closed-form Gaussian ones, equal weights give no push, and a prefix group shares its prefix bit
for bit."""

from __future__ import annotations

import json
import math

import pytest
import torch

from afd.methods.afd_config import AFDMethodConfig
from afd.methods.nft import sampler_level_picks
from afd.methods.sampler_updates import (
    _states_at,
    policy_gradient_loss,
    sampler_states_loss,
    transition_logprob,
)
from afd.student.rollout import rollout
from afd.train.plan import Plan
from test_methods import trainer_for
from test_nft_loss import fake_text, tiny_model


def recorded_rollout(model, B=4, seed=0, **kw):
    c = model.config
    first, levels = c.sampler_levels()
    noise = torch.randn(B, c.n_blocks, len(first), c.block_frames, c.channels, c.height, c.width,
                        generator=torch.Generator().manual_seed(seed))
    x0, rec = rollout(model, fake_text(B), noise, levels, first_levels=first, amp=False, record=True, **kw)
    return noise, x0, rec


def test_recorded_states_are_the_states_the_sampler_queried():
    model = tiny_model()
    c = model.config
    queried = []

    def spy(module, args, kwargs):
        if not kwargs.get("clean", False):
            queried.append(args[0].detach().clone())

    handle = model.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        noise, x0, rec = recorded_rollout(model)
    finally:
        handle.remove()
    first, levels = c.sampler_levels()
    assert rec.states.shape == (4, c.n_blocks, len(first), c.block_frames, c.channels, c.height, c.width)
    assert len(queried) == c.n_blocks * len(levels)
    for n, x in enumerate(queried):
        assert torch.equal(rec.states[:, n // len(levels), n % len(levels)], x)
    assert torch.equal(rec.levels, torch.tensor([levels] * c.n_blocks))
    assert torch.equal(rec.states[:, :, 0], noise[:, :, 0])  # each block starts from its noise
    plain = rollout(model, fake_text(4), noise, levels, first_levels=first, amp=False)
    assert torch.equal(plain, x0)  # recording changes nothing


def test_a_prefix_block_has_no_record():
    model = tiny_model()
    c = model.config
    prefix = torch.randn(4, c.block_frames, c.channels, c.height, c.width)
    _, x0, rec = recorded_rollout(model, prefix=prefix)
    assert torch.isnan(rec.levels[0]).all() and torch.isfinite(rec.levels[1:]).all()
    assert torch.equal(x0[:, :c.block_frames], prefix)


def test_transition_logprob_is_the_gaussian_density():
    g = torch.Generator().manual_seed(0)
    x_next, x0_hat = torch.randn(3, 2, 4, 5, 2, 2, generator=g), torch.randn(3, 2, 4, 5, 2, 2, generator=g)
    t = torch.rand(3, 2, generator=g) * 0.8 + 0.2
    want = torch.distributions.Normal((1 - t[..., None, None, None, None]) * x0_hat,
                                      t[..., None, None, None, None]).log_prob(x_next).flatten(2).mean(2)
    assert torch.allclose(transition_logprob(x_next, x0_hat, t), want, atol=1e-5)


def test_the_sampling_policy_gives_each_transition_the_density_of_the_noise_it_drew():
    """Closed form: x_{i+1} - (1 - t) x0_old(x_i) is t times the rollout's own re-noising draw, so
    log p_old = mean(-eps^2 / 2) - log t - log(2 pi) / 2 per block, from the teacher-forced forward."""
    from afd.methods.sampler_updates import _x0

    model = tiny_model()
    c = model.config
    K, F = c.n_blocks, c.block_frames
    noise, x0, rec = recorded_rollout(model)
    text = fake_text(4)
    for i in range(rec.levels.shape[1] - 1):
        x_t, t, _ = _states_at(rec, torch.full((4, K), i), x0, F)
        with torch.no_grad():
            x0_old = _x0(model, x0, x_t, t, text, None).unflatten(1, (K, F))
        t_next = rec.levels[:, i + 1][None].expand(4, K)
        lp = transition_logprob(rec.states[:, :, i + 1], x0_old, t_next)
        eps = noise[:, :, i + 1]
        want = (-0.5 * eps.pow(2)).flatten(2).mean(2) - torch.log(t_next) - 0.5 * math.log(2 * math.pi)
        assert torch.allclose(lp, want, atol=2e-4), (i, (lp - want).abs().max())


@pytest.mark.parametrize("update", ["sampler-states", "policy-gradient"])
def test_equal_weights_give_no_gradient(update):
    model = tiny_model()
    _, x0, rec = recorded_rollout(model)
    cfg = AFDMethodConfig(update=update, lambda_prior=0.0, kl_beta=0.0, beta=0.5)
    w = torch.full((4,), 0.5)
    if update == "sampler-states":
        out = sampler_states_loss(model, model, None, x0, fake_text(4), w, rec, torch.Generator().manual_seed(0), cfg)
    else:
        out = policy_gradient_loss(model, model, None, x0, fake_text(4), w, rec, cfg)
        assert out["pg_log_ratio"].item() == 0.0  # the sampling policy itself: every ratio is 1
    out["loss"].backward()
    assert max(p.grad.abs().max().item() for p in model.parameters() if p.grad is not None) < 1e-6
    # and unequal weights do push
    model.zero_grad()
    w2 = torch.tensor([0.9, 0.1, 0.7, 0.3])
    if update == "sampler-states":
        out = sampler_states_loss(model, model, None, x0, fake_text(4), w2, rec, torch.Generator().manual_seed(0), cfg)
    else:
        out = policy_gradient_loss(model, model, None, x0, fake_text(4), w2, rec, cfg)
    out["loss"].backward()
    assert max(p.grad.abs().max().item() for p in model.parameters() if p.grad is not None) > 1e-4


def test_the_policy_gradient_kl_is_the_closed_form_between_transition_means():
    """KL(N(m, s^2) || N(m_ref, s^2)) = (m - m_ref)^2 / (2 s^2) per dimension, m = (1 - t) x0: zero
    against the student itself, and for another reference the mean over transitions of that form."""
    from afd.methods.sampler_updates import _x0

    model, ref = tiny_model(), tiny_model(seed=1)
    c = model.config
    K, F = c.n_blocks, c.block_frames
    _, x0, rec = recorded_rollout(model)
    cfg = AFDMethodConfig(update="policy-gradient", kl_beta=1.0)
    w = torch.full((4,), 0.5)
    assert policy_gradient_loss(model, model, model, x0, fake_text(4), w, rec, cfg)["loss_kl"].item() == 0.0
    out = policy_gradient_loss(model, model, ref, x0, fake_text(4), w, rec, cfg)
    want = []
    with torch.no_grad():
        for i in range(rec.levels.shape[1] - 1):
            x_t, t, _ = _states_at(rec, torch.full((4, K), i), x0, F)
            m, m_ref = (_x0(net, x0, x_t, t, fake_text(4), None).unflatten(1, (K, F)) for net in (model, ref))
            s = rec.levels[:, i + 1][None, :, None, None, None, None]
            want.append(((1 - s) * (m - m_ref)).pow(2).div(2 * s.pow(2)).flatten(2).mean(2).flatten())
    assert out["loss_kl"].item() == pytest.approx(torch.cat(want).mean().item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(out["loss_kl"].item(), rel=1e-6)  # equal weights: A = 0


def test_sampler_states_trains_every_recorded_state_once():
    model = tiny_model()
    c = model.config
    _, x0, rec = recorded_rollout(model)
    picks = sampler_level_picks(4, c, torch.Generator().manual_seed(0))
    assert sorted(picks[:, 1, 2].tolist()) == list(range(len(c.sampler_levels()[1])))
    x_t, t, valid = _states_at(rec, picks[0], x0, c.block_frames)
    assert valid.all()
    b, k = 2, 1
    s = slice(k * c.block_frames, (k + 1) * c.block_frames)
    assert torch.equal(x_t[b, s], rec.states[b, k, picks[0, b, k]])
    assert (t[b, s] == rec.levels[k, picks[0, b, k]]).all()


def test_policy_gradient_needs_stochastic_steps():
    model = tiny_model()
    _, x0, rec = recorded_rollout(model)
    model.config.renoise = "ddim"
    try:
        with pytest.raises(ValueError, match="renoise=fresh"):
            policy_gradient_loss(model, model, None, x0, fake_text(4), torch.full((4,), 0.5), rec, AFDMethodConfig())
    finally:
        model.config.renoise = "fresh"


def test_prefix_groups_share_their_prefix_bit_for_bit(tiny_state_student, tmp_path):
    trainer = trainer_for("oracle", tiny_state_student, tmp_path, "afd.prefix_groups=true",
                          "afd.update=sampler-states", "train.rollouts=3")
    c = trainer.models.old.config
    it = next(i for i in range(40) if Plan.branch_block(trainer.cfg.train.seed, i, c.n_blocks) == 2)
    batch, _ = trainer.collect(it)
    assert batch.branch_block == 2
    lat = batch.rollout_latents.unflatten(0, (2, 3))  # (P, G, T, ...)
    shared = 2 * c.block_frames
    for p in range(2):
        for g in range(1, 3):
            assert torch.equal(lat[p, g, :shared], lat[p, 0, :shared])
            assert not torch.equal(lat[p, g, shared:], lat[p, 0, shared:])
    assert torch.isnan(batch.sampler.levels[:2]).all() and torch.isfinite(batch.sampler.levels[2:]).all()


@pytest.mark.parametrize("update", ["sampler-states", "policy-gradient"])
def test_the_oracle_trains_with_each_sampler_update(update, tiny_state_student, tmp_path):
    from afd.cli import main
    from train_util import tiny_args

    run = tmp_path / "run"
    args = tiny_args(tiny_state_student, run, tmp_path / "cache", "train.method=oracle", "train.steps=2",
                     f"afd.update={update}", "afd.prefix_groups=true", "run.tensorboard=false")
    assert main(["train", "--no-progress", "--config", "configs/train/afd.yaml", *args]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    key = "loss_nft" if update == "sampler-states" else "loss_pg"
    assert len(rows) == 2 and all(key in r and math.isfinite(r[key]) for r in rows)


def test_config_errors():
    with pytest.raises(ValueError, match="pg_clip must be > 0"):
        AFDMethodConfig(pg_clip=0.0)
    with pytest.raises(ValueError, match="prefix_groups trains the blocks after"):
        AFDMethodConfig(prefix_groups=True, nft_blocks="first")


def test_the_noised_context_view_is_block_causal_over_noised_blocks():
    """Astrolabe's view: block k's prediction depends on the noised blocks < k (not on later ones);
    the rollout's view (forward_train) depends on the clean clip there instead."""
    model = tiny_model()
    c = model.config
    F = c.block_frames
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(2, c.frames, c.channels, c.height, c.width, generator=g)
    t = torch.full((2, c.frames), 0.7)
    text = fake_text(2)
    with torch.no_grad():
        base = model.forward_noised_context(x_t, t, text)
        changed = x_t.clone()
        changed[:, F:2 * F] += 1.0  # block 1
        again = model.forward_noised_context(changed, t, text)
        clean = torch.randn_like(x_t)
        train_view = model.forward_train(clean, changed, t, text)
        train_view_base = model.forward_train(clean, x_t, t, text)
    assert torch.equal(base[:, :F], again[:, :F])  # block 0 does not see block 1
    assert not torch.allclose(base[:, 2 * F:], again[:, 2 * F:])  # block 2 sees noised block 1
    assert torch.allclose(train_view[:, 2 * F:], train_view_base[:, 2 * F:], atol=1e-6)  # clean context there


def test_nft_with_astrolabes_context_trains_at_one_sampler_level():
    from afd.methods.nft import nft_student_loss

    model = tiny_model()
    c = model.config
    x0 = torch.randn(4, c.frames, c.channels, c.height, c.width, generator=torch.Generator().manual_seed(2))
    cfg = AFDMethodConfig(context="noised", timesteps="minibatch", lambda_prior=0.0)
    seen = []
    orig = model.forward_noised_context

    def spy(x_t, t, text):
        seen.append(t.clone())
        return orig(x_t, t, text)

    model.forward_noised_context = spy
    out = nft_student_loss(model, model, None, x0, fake_text(4), torch.tensor([0.9, 0.1, 0.6, 0.4]),
                           torch.Generator().manual_seed(0), cfg)
    out["loss"].backward()
    assert len(seen) == 2 and len(torch.unique(seen[0])) == 1
    assert float(seen[0][0, 0]) in [pytest.approx(v) for v in c.sampler_levels()[1]]
    with pytest.raises(ValueError, match="context=noised is an option of the paper's NFT"):
        AFDMethodConfig(context="noised", update="reward-filtered")

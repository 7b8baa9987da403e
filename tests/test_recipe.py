"""The DiffusionNFT reference recipe's options (docs/recipe.md): each one's effect on the loss or the
loop, checked directly."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from afd.losses import Guidance, velocity
from afd.methods.afd_config import AFDMethodConfig
from afd.methods.nft import nft_student_loss, sampler_guidance, sampler_timesteps
from afd.student.backbones.transformer import CausalVideoTransformer
from afd.student.backbones.transformer_config import StudentConfig
from afd.student.rollout import rollout, rollout_noise
from afd.train.config import AdaptConfig, LoopConfig, StudentInitConfig
from test_nft_loss import fake_text, perturb, rollouts, tiny_model


def test_old_decay_ramp_follows_the_reference_schedule():
    paper = LoopConfig(old_decay=0.99)
    assert [paper.old_decay_at(n) for n in (1, 50, 500)] == [0.99] * 3
    ref = LoopConfig(old_decay=0.5, old_decay_ramp=0.001)
    assert ref.old_decay_at(1) == pytest.approx(0.001)
    assert ref.old_decay_at(300) == pytest.approx(0.3)
    assert ref.old_decay_at(5000) == 0.5
    with pytest.raises(ValueError, match="old_decay_ramp must be >= 0"):
        LoopConfig(old_decay_ramp=-1)


def test_old_decay_zero_makes_v_old_the_current_model():
    """With decay 0 the old policy is the student after every update, so the next NFT step starts
    at theta = theta_old: v_old equals v_theta and neutral weights give no gradient."""
    from afd.train.ema import ema_update

    model = tiny_model()
    old = perturb(copy.deepcopy(model), 5)
    ema_update(old, model, LoopConfig(old_decay=0.0).old_decay_at(1))
    out = nft_student_loss(model, old, None, rollouts(model), fake_text(), torch.full((2,), 0.5),
                           torch.Generator().manual_seed(0), AFDMethodConfig(beta=0.1, lambda_prior=0.0))
    assert out["old_dev"].item() == 0


def test_sampler_timesteps_visit_every_level_of_every_block():
    cfg = StudentConfig(frames=12, block_frames=4, height=16, width=16, patch=4, dim=32, depth=1, heads=2,
                        steps=4, shift=5.0, first_steps=8)
    first, levels = cfg.sampler_levels()
    t = sampler_timesteps(3, cfg, torch.Generator().manual_seed(0))
    assert t.shape == (len(levels), 3, 12)
    blocks = t.view(len(levels), 3, 3, 4)
    assert (blocks == blocks[..., :1]).all()  # one level per block
    for b in range(3):
        for k in (1, 2):
            assert sorted(blocks[:, b, k, 0].tolist()) == pytest.approx(sorted(levels))
        assert set(blocks[:, b, 0, 0].tolist()) <= set(torch.tensor(first).tolist())  # block 0: its own list
    assert t.min() > 0.2  # 4 steps at shift 5 never go below 0.625: no low-noise draws


def test_loss_scale_multiplies_the_nft_term():
    model = tiny_model()
    old = perturb(copy.deepcopy(model), 1, 0.02)
    args = (model, old, None, rollouts(model), fake_text(), torch.tensor([0.2, 0.9]))
    a = nft_student_loss(*args, torch.Generator().manual_seed(0), AFDMethodConfig(beta=0.1, lambda_prior=0.0))
    cfg = AFDMethodConfig(beta=0.1, lambda_prior=0.0, loss_scale="reference")  # a_max / beta = 50
    b = nft_student_loss(*args, torch.Generator().manual_seed(0), cfg)
    assert b["loss"].item() == pytest.approx(50 * a["loss"].item(), rel=1e-5)


def test_explicit_timesteps_are_used():
    model = tiny_model()
    old = perturb(copy.deepcopy(model), 1, 0.02)
    x0 = rollouts(model)
    t = torch.full((2, 12), 0.5)
    a = nft_student_loss(model, old, None, x0, fake_text(), torch.tensor([0.2, 0.9]),
                         torch.Generator().manual_seed(0), AFDMethodConfig(beta=0.1, lambda_prior=0.0), t=t)
    gen = torch.Generator().manual_seed(0)
    eps = torch.randn(x0.shape, generator=gen)  # no timestep draw before the noise when t is given
    x_t = 0.5 * x0 + 0.5 * eps
    v = model.to_velocity(model.forward_train(x0, x_t, t, fake_text()), x_t, t)
    assert a["fm_loss"].item() == pytest.approx((v - (eps - x0)).pow(2).mean().item(), rel=1e-4)


def test_guided_velocity_is_the_samplers_combination():
    model = tiny_model()
    x0 = rollouts(model)
    t = torch.full((2, 12), 0.6)
    x_t = 0.4 * x0 + 0.6 * torch.randn_like(x0)
    text, null = fake_text(), fake_text()
    null = type(null)(null.tokens.flip(0), null.mask, null.pooled.flip(0))
    scale = torch.full((2, 12), 1.5)
    scale[:, :4] = 2.0
    cond_v = velocity(model, x0, x_t, t, text)
    null_v = velocity(model, x0, x_t, t, null)
    guided = velocity(model, x0, x_t, t, text, Guidance(null, scale))
    assert torch.allclose(guided, null_v + scale[..., None, None, None] * (cond_v - null_v), atol=1e-4)
    # scale 1 is the conditional velocity
    assert torch.allclose(velocity(model, x0, x_t, t, text, Guidance(null, torch.ones(2, 12))), cond_v, atol=1e-5)


def test_sampler_guidance_follows_the_student_config():
    model = tiny_model()
    assert sampler_guidance(model, 3) is None  # guidance 1: the conditional velocity is the sampler's
    model.config.guidance, model.config.first_guidance = 1.5, 2.0
    g = sampler_guidance(model, 3)
    assert g.scale.shape == (3, 12) and len(g.null_text) == 3
    assert (g.scale[:, :4] == 2.0).all() and (g.scale[:, 4:] == 1.5).all()


def test_project_blocks_makes_the_cache_hold_what_is_returned():
    """Without projection the cache holds the raw block and the returned clip is what the trainer
    clamps; with it the cached and the cache-free rollouts agree on the clamped blocks."""
    torch.manual_seed(0)
    cfg = StudentConfig(frames=8, block_frames=4, height=16, width=16, patch=4, dim=32, depth=1, heads=2,
                        steps=2, shift=1.0, project_blocks=True)
    model = CausalVideoTransformer(cfg).eval()
    torch.nn.init.normal_(model.patch_out.weight, std=2.0)  # raw predictions well outside [-1, 1]
    text = fake_text()
    noise = rollout_noise(["a", "b"], [0, 1], model, 2)
    with torch.no_grad():
        a = rollout(model, text, noise, amp=False)
        b = rollout(model, text, noise, amp=False, use_cache=False)
        model.config.project_blocks = False
        raw = rollout(model, text, noise, amp=False)
    assert a.abs().max() <= 1 and raw.abs().max() > 1
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(a[:, :4], raw[:, :4].clamp(-1, 1))  # block 0 is the same block, clamped


def test_student_overrides_apply_to_the_loaded_student():
    model = tiny_model()
    model.config.first_guidance = 2.0
    StudentInitConfig(guidance=1.0, project_blocks=True).apply(model)
    assert model.config.guidance == 1.0 and model.config.first_guidance == 0.0 and model.config.project_blocks
    with pytest.raises(ValueError, match="student.guidance must be > 0"):
        StudentInitConfig(guidance=0.0)


def test_student_sampler_overrides_change_the_levels():
    """student.steps / shift / renoise replace the checkpoint's sampler, block 0 included."""
    model = tiny_model()
    model.config.first_steps = 8
    StudentInitConfig(steps=16, shift=1.0, renoise="ddim").apply(model)
    first, levels = model.config.sampler_levels()
    assert len(first) == len(levels) == 16 and model.config.renoise == "ddim"
    assert levels[-1] == pytest.approx(1 / 16)  # unshifted: 1 - 15/16
    for bad, match in (({"steps": 0}, "student.steps"), ({"shift": 0.0}, "student.shift")):
        with pytest.raises(ValueError, match=match):
            StudentInitConfig(**bad)
    from afd.config import config_from_dict
    with pytest.raises(ValueError, match="renoise"):
        config_from_dict(AdaptConfig, {"student": {"renoise": "sde"}})


@pytest.mark.parametrize("bad, match", [
    ({"timesteps": "grid"}, "timesteps"),
    ({"loss_scale": "big"}, "loss_scale"),
    ({"guidance": "both"}, "guidance"),
    ({"noise": "prompt"}, "noise"),
])
def test_recipe_choices_are_checked(bad, match):
    from afd.config import config_from_dict

    with pytest.raises(ValueError, match=match):
        config_from_dict(AdaptConfig, {"afd": bad})
    assert AFDMethodConfig().timesteps == "uniform"


@pytest.mark.parametrize("method", ["oracle", "gan", "dmd", "sft"])
def test_tiny_train_on_a_state_student_with_the_reference_recipe(tiny_state_student, tmp_path, method):
    """`afd train` end to end on a state student: the oracle with every recipe option on, GAN and
    DMD, whose gradients go through the state decoder (the renderer), and SFT and DMD, which encode
    the teacher's clips into states."""
    import json

    from afd.cli import main
    from train_util import tiny_args

    run = tmp_path / "run"
    recipe = ["afd.timesteps=sampler", "afd.nft_space=x0", "afd.loss_scale=reference", "afd.guidance=sampler",
              "train.old_decay=0.5", "train.old_decay_ramp=0.001", "afd.advantage.std_over=residuals",
              "afd.noise=group"]
    code = main(["train", "--config", "configs/train/afd.yaml", "--no-progress",
                 *tiny_args(tiny_state_student, run, tmp_path / "cache", "train.steps=2", f"train.method={method}",
                            *recipe)])
    assert code == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["grad_norm"] > 0 and np.isfinite(r["grad_norm"]) for r in rows)
    trained = CausalVideoTransformer.from_pretrained(run / "student")
    assert trained.config.codec == "state"
    assert json.loads((run / "eval.json").read_text())["n_videos"] == 4


def test_nft_on_the_first_block_ignores_later_blocks():
    """nft_frames=F: L_NFT sees block 0 only, which attends to nothing before it, so what the
    rollout did afterwards cannot change it."""
    model = tiny_model()
    old = perturb(copy.deepcopy(model), 1, 0.02)
    x0 = rollouts(model)
    x0_changed = x0.clone()
    x0_changed[:, 4:] += 1.0
    w = torch.tensor([0.2, 0.9])
    assert model.config.block_frames == 4
    first = AFDMethodConfig(beta=0.1, lambda_prior=0.0, nft_blocks="first")
    a, b = (nft_student_loss(model, old, None, x, fake_text(), w, torch.Generator().manual_seed(0), first)
            for x in (x0, x0_changed))
    full = nft_student_loss(model, old, None, x0_changed, fake_text(), w, torch.Generator().manual_seed(0),
                            AFDMethodConfig(beta=0.1, lambda_prior=0.0))
    assert a["loss"].item() == pytest.approx(b["loss"].item(), rel=1e-6)
    assert full["loss"].item() != pytest.approx(b["loss"].item(), rel=1e-3)


def test_group_noise_shares_eps_and_levels_within_a_prompt():
    """noise_index: samples with one index get the same eps and levels, other indices their own;
    without it every sample draws its own (the draws are unchanged from before the option)."""
    from afd.losses import forward_noise

    cfg = tiny_model().config
    x0 = torch.zeros(4, cfg.frames, cfg.channels, cfg.height, cfg.width)
    t, eps, _ = forward_noise(x0, cfg, torch.Generator().manual_seed(0), noise_index=torch.tensor([0, 0, 1, 1]))
    assert torch.equal(eps[0], eps[1]) and torch.equal(eps[2], eps[3]) and not torch.equal(eps[0], eps[2])
    assert torch.equal(t[0], t[1]) and not torch.equal(t[0], t[2])
    t_own, eps_own, _ = forward_noise(x0, cfg, torch.Generator().manual_seed(0))
    assert not torch.equal(eps_own[0], eps_own[1])


def test_group_noise_cancels_the_noise_only_part_of_the_gradient():
    """Two identical rollouts with weights 0.5 +- d pull in exactly opposite directions when they
    share their noise, so the NFT term at v_theta = v_old vanishes; with their own noise it does not."""
    model = tiny_model()
    x0 = rollouts(model)[:1].repeat(2, 1, 1, 1, 1)
    text = fake_text()
    text = text.index(torch.tensor([0, 0]))
    w = torch.tensor([0.3, 0.7])
    grads = {}
    for name in ("group", "sample"):
        model.zero_grad()
        out = nft_student_loss(model, model, None, x0, text, w, torch.Generator().manual_seed(0),
                               AFDMethodConfig(beta=0.1, lambda_prior=0.0, noise=name), group_ids=torch.tensor([0, 0]))
        out["loss"].backward()
        grads[name] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).norm()
    assert grads["group"] < 1e-6 * max(1.0, float(grads["sample"]))
    assert grads["sample"] > 1e-4

"""DiffusionNFT student losses (docs/method.md section 6): gradient identities, minimiser, prior, wiring."""

from __future__ import annotations

import copy

import pytest
import torch

from afd.losses import block_timesteps
from afd.methods.afd_config import AFDMethodConfig
from afd.methods.nft import nft_loss, nft_student_loss, prior_loss
from afd.student.backbones.transformer import CausalVideoTransformer
from afd.student.backbones.transformer_config import StudentConfig
from afd.student.schedule import add_noise
from afd.text.encoder import TextEncoding

SHAPE = (3, 4, 2, 3, 3)  # (B, T, C, H, W)
W = torch.tensor([0.0, 0.3, 1.0])


def randn(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def mse(a, b):
    return (a - b).pow(2).flatten(1).mean(1)


def bcast(x, like):
    return x.reshape(-1, *([1] * (like.dim() - 1)))


def grad_of(loss, x):
    (g,) = torch.autograd.grad(loss, x)
    return g


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_gradient_at_old_policy_is_scaled_flow_matching(beta):
    v_old, v = randn(*SHAPE, seed=1), randn(*SHAPE, seed=2)
    v_theta = v_old.clone().requires_grad_()
    g_nft = grad_of(nft_loss(v_theta, v_old, v, W, beta)[0], v_theta)
    g_fm = grad_of(mse(v_theta, v).mean(), v_theta)
    assert torch.allclose(g_nft, bcast(beta * (2 * W - 1), g_fm).double() * g_fm, atol=1e-12)


def test_gradient_at_old_policy_x0_space():
    v_old, v, x0 = randn(*SHAPE, seed=1), randn(*SHAPE, seed=2), randn(*SHAPE, seed=3)
    t = torch.rand(3, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 0.9 + 0.05
    x_t = x0 + t[..., None, None, None] * v  # consistent with v = eps - x0
    v_theta = v_old.clone().requires_grad_()
    beta = 0.1
    loss, _ = nft_loss(v_theta, v_old, v, W, beta, x_t=x_t, t=t, x0=x0, space="x0")
    g_nft = grad_of(loss, v_theta)
    # the same normalised x0 loss on v_theta itself, normaliser held fixed
    err = x_t - t[..., None, None, None] * v_theta - x0
    scale = err.detach().abs().flatten(1).mean(1)
    g_ref = grad_of((err.pow(2).flatten(1).mean(1) / scale).mean(), v_theta)
    assert torch.allclose(g_nft, bcast(beta * (2 * W - 1), g_ref) * g_ref, atol=1e-12)


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_per_sample_minimiser(beta):
    v_old, v = randn(*SHAPE, seed=5), randn(*SHAPE, seed=6)
    w = torch.tensor([0.1, 0.5, 0.8], dtype=torch.float64)
    closed = v_old + bcast(2 * w - 1, v) * (v - v_old) / beta
    # zero gradient at the closed form (the loss is a convex quadratic in v_theta) ...
    at = closed.clone().requires_grad_()
    assert grad_of(nft_loss(at, v_old, v, w, beta)[0], at).abs().max() < 1e-12
    # ... and an optimiser started elsewhere finds it
    x = v_old.clone().requires_grad_()
    opt = torch.optim.LBFGS([x], lr=1, max_iter=200, tolerance_grad=1e-14, tolerance_change=1e-16,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nft_loss(x, v_old, v, w, beta)[0]
        loss.backward()
        return loss

    opt.step(closure)
    assert torch.allclose(x.detach(), closed, atol=1e-6)
    # w = 0.5 cannot move the policy
    assert torch.allclose(closed[1], v_old[1])


def test_limits_w1_w0():
    v_theta, v_old, v = randn(*SHAPE, seed=7), randn(*SHAPE, seed=8), randn(*SHAPE, seed=9)
    beta = 0.3
    plus = (1 - beta) * v_old + beta * v_theta
    minus = (1 + beta) * v_old - beta * v_theta
    loss1, per1 = nft_loss(v_theta, v_old, v, torch.ones(3), beta)
    loss0, per0 = nft_loss(v_theta, v_old, v, torch.zeros(3), beta)
    assert torch.allclose(per1, mse(plus, v)) and torch.allclose(loss1, mse(plus, v).mean())
    assert torch.allclose(per0, mse(minus, v)) and torch.allclose(loss0, mse(minus, v).mean())
    # beta = 1, w = 1: plain flow matching on v_theta; w = 0: pushes v_theta through 2 v_old - v
    assert torch.allclose(nft_loss(v_theta, v_old, v, torch.ones(3), 1.0)[0], mse(v_theta, v).mean())
    assert torch.allclose(nft_loss(v_theta, v_old, v, torch.zeros(3), 1.0)[0], mse(2 * v_old - v_theta, v).mean())
    # a mixture interpolates the two per sample
    w = torch.tensor([0.25, 0.5, 0.75])
    _, per = nft_loss(v_theta, v_old, v, w, beta)
    assert torch.allclose(per, w.double() * per1 + (1 - w.double()) * per0)


def test_old_velocity_gets_no_gradient():
    v_theta = randn(*SHAPE, seed=1).requires_grad_()
    v_old = randn(*SHAPE, seed=2).requires_grad_()
    nft_loss(v_theta, v_old, randn(*SHAPE, seed=3), W, 0.1)[0].backward()
    assert v_old.grad is None and v_theta.grad is not None


def test_prior_weighting():
    v_theta, v_ref = randn(*SHAPE, seed=1).requires_grad_(), randn(*SHAPE, seed=2).requires_grad_()
    w = torch.tensor([0.0, 0.5, 1.0])
    loss = prior_loss(v_theta, v_ref, w)
    assert torch.allclose(loss, (w.double() * mse(v_theta, v_ref)).mean())
    loss.backward()
    assert v_ref.grad is None
    assert v_theta.grad[0].abs().max() == 0  # w = 0: neither loss nor gradient
    assert v_theta.grad[2].abs().max() > 0
    v_theta.grad = None
    zero = prior_loss(v_theta, v_ref, torch.zeros(3))
    zero.backward()
    assert zero.item() == 0 and v_theta.grad.abs().max() == 0


def test_x0_space_value_and_finite_gradients():
    v_theta = randn(*SHAPE, seed=1).float().requires_grad_()
    v_old, x0, eps = (randn(*SHAPE, seed=s).float() for s in (2, 3, 4))
    t = torch.rand(3, 4, generator=torch.Generator().manual_seed(5))
    t[0] = 0.0  # a noiseless sample: its error is 0, the floored normaliser keeps it finite
    x_t = add_noise(x0, eps, t)
    loss, per = nft_loss(v_theta, v_old, eps - x0, W, 0.1, x_t=x_t, t=t, x0=x0, space="x0")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(v_theta.grad).all()
    assert per[0] == 0
    tt = t[..., None, None, None]
    with torch.no_grad():
        e_pos = x_t - tt * (0.9 * v_old + 0.1 * v_theta) - x0
        e_neg = x_t - tt * (1.1 * v_old - 0.1 * v_theta) - x0
        n_pos = e_pos.pow(2).flatten(1).mean(1) / e_pos.abs().flatten(1).mean(1).clamp_min(1e-5)
        n_neg = e_neg.pow(2).flatten(1).mean(1) / e_neg.abs().flatten(1).mean(1).clamp_min(1e-5)
    assert torch.allclose(per, W * n_pos + (1 - W) * n_neg, atol=1e-6)


@pytest.mark.parametrize("call, match", [
    (lambda a: nft_loss(a, a[:2], a, W, 0.1), "same shape"),
    (lambda a: nft_loss(a, a, a, W[:2], 0.1), r"\(B,\)"),
    (lambda a: nft_loss(a, a, a, W + 0.5, 0.1), r"\[0, 1\]"),
    (lambda a: nft_loss(a, a, a, W, 0.0), "beta"),
    (lambda a: nft_loss(a, a, a, W, 0.1, space="eps"), "space"),
    (lambda a: nft_loss(a, a, a, W, 0.1, space="x0"), "needs x_t"),
    (lambda a: nft_loss(a, a, a, W, 0.1, x_t=a, x0=a, t=torch.rand(3, 5), space="x0"), "leading"),
    (lambda a: prior_loss(a, a[:, :2], W), "same shape"),
])
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call(randn(*SHAPE).float())


# ----- nft_student_loss on a tiny student -----

def tiny_model(prediction="x0", seed=0):
    torch.manual_seed(seed)
    cfg = StudentConfig(frames=12, block_frames=4, height=16, width=16, patch=4, dim=32, depth=2, heads=2,
                        prediction=prediction)
    model = CausalVideoTransformer(cfg).eval()
    perturb(model, seed)
    return model


def perturb(model, seed, scale=0.05):
    g = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


def fake_text(B=2):
    """Random prompt encodings: the losses only need the shapes (no encoder load in unit tests)."""
    g = torch.Generator().manual_seed(3)
    pooled = torch.randn(B, 384, generator=g)
    mask = torch.zeros(B, 32, dtype=torch.bool)
    mask[:, :6] = True
    return TextEncoding(tokens=torch.randn(B, 32, 384, generator=g) * mask[..., None],
                        mask=mask, pooled=pooled / pooled.norm(dim=-1, keepdim=True))


def rollouts(model, seed=0):
    c = model.config
    return torch.randn(2, c.frames, c.channels, c.height, c.width, generator=torch.Generator().manual_seed(seed))


def grads(model):
    return [p.grad for p in model.parameters()]


@pytest.mark.parametrize("space", ["velocity", "x0"])
def test_student_loss_gradients_only_reach_the_trained_model(space):
    model = tiny_model()
    old = perturb(copy.deepcopy(model), 1, 0.02)
    ref = perturb(copy.deepcopy(model), 2, 0.02)
    x0 = rollouts(model).requires_grad_()
    out = nft_student_loss(model, old, ref, x0, fake_text(), torch.tensor([0.2, 0.9]),
                           torch.Generator().manual_seed(0),
                           AFDMethodConfig(beta=0.1, lambda_prior=1.0, nft_space=space))
    out["loss"].backward()
    assert all(g is None for g in grads(old) + grads(ref))
    assert x0.grad is None
    gs = [g for g in grads(model) if g is not None]
    assert gs and all(torch.isfinite(g).all() for g in gs)
    assert sum(float(g.abs().sum()) for g in gs) > 0
    for k in ("loss_nft", "loss_prior", "fm_loss", "old_dev", "ref_dev"):
        assert out[k].dim() == 0 and torch.isfinite(out[k]) and not out[k].requires_grad
    assert out["loss"].item() == pytest.approx(out["loss_nft"].item() + out["loss_prior"].item(), rel=1e-5)
    assert out["nft_per_sample"].shape == (2,)


@pytest.mark.parametrize("space", ["velocity", "x0"])
def test_student_loss_neutral_weights_at_old_policy_give_zero_gradient(space):
    model = tiny_model()
    old, ref = copy.deepcopy(model), copy.deepcopy(model)
    out = nft_student_loss(model, old, ref, rollouts(model), fake_text(), torch.full((2,), 0.5),
                           torch.Generator().manual_seed(0),
                           AFDMethodConfig(beta=0.1, lambda_prior=1e-4, nft_space=space))
    out["loss"].backward()
    total = sum(float(p.grad.abs().max()) for p in model.parameters() if p.grad is not None)
    assert total < 1e-6
    assert out["old_dev"].item() == 0 and out["ref_dev"].item() == 0 and out["loss_prior"].item() == 0
    if space == "velocity":
        # v+ = v- = v_theta, so the NFT value is the plain flow-matching loss on the rollouts
        assert out["loss_nft"].item() == pytest.approx(out["fm_loss"].item(), rel=1e-5)


@pytest.mark.parametrize("prediction", ["x0", "velocity"])
def test_student_loss_gradient_matches_weighted_flow_matching(prediction):
    """At old == model the parameter gradient is that of sum_i beta (2 w_i - 1) ||v_theta - v||^2 / B,
    evaluated on the same t, eps and teacher-forced view."""
    model = tiny_model(prediction)
    old = copy.deepcopy(model)
    x0, text, w, beta = rollouts(model), fake_text(), torch.tensor([0.1, 0.85]), 0.1
    out = nft_student_loss(model, old, None, x0, text, w, torch.Generator().manual_seed(7),
                           AFDMethodConfig(beta=beta, lambda_prior=0.0))
    assert out["loss_prior"].item() == 0
    out["loss"].backward()
    g_nft = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()

    gen = torch.Generator().manual_seed(7)  # replay the same draws
    t = block_timesteps(2, model.config, gen)
    eps = torch.randn(x0.shape, generator=gen)
    x_t = add_noise(x0, eps, t)
    v_hat = model.to_velocity(model.forward_train(x0, x_t, t, text), x_t, t)
    (beta * (2 * w - 1) * mse(v_hat, eps - x0)).mean().backward()
    for a, p in zip(g_nft, model.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-6, rtol=1e-4)

"""The causal Wan student (afd.student.backbones.wan) on tiny random configs: cache vs recomputation,
frame-index RoPE, parity with a plain-torch reference, persistence, LoRA, the optional extra."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from afd.config import ConfigError, config_from_dict, config_to_dict
from afd.student.backbones.wan_config import WanStudentConfig
from afd.student.base import load_student_model
from afd.student.codec import make_codec
from afd.student.rollout import context_blocks, rollout
from afd.text.encoder import TextEncoding

os.environ["HF_HUB_OFFLINE"] = "1"  # a random init never needs the hub; make sure nothing reaches it

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wan():
    pytest.importorskip("diffusers")
    import afd.student.backbones.wan as wan

    return wan


def tiny_config(**kw) -> WanStudentConfig:
    """4 latent channels, 8x8 frames (16 tokens each at patch 2x2), 8 frames in 2-frame blocks,
    Self-Forcing's 4-step sampler at shift 5."""
    base = dict(channels=4, height=8, width=8, frames=8, block_frames=2, heads=2, head_dim=12, layers=2,
                ffn_dim=32, text_dim=16, freq_dim=16, rope_max_seq_len=16, steps=4, shift=5.0)
    return WanStudentConfig(**{**base, **kw})


def tiny_model(wan, **kw):
    """A random tiny student; every weight is perturbed so that none sits at its init value
    (RMSNorm weights of one, zero biases) and a reference that ignored it would be caught."""
    torch.manual_seed(0)
    model = wan.CausalWanStudent(tiny_config(**kw))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def tiny_text(B: int, cfg: WanStudentConfig, L: int = 5) -> TextEncoding:
    torch.manual_seed(1)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[-1, L - 2:] = False
    tokens = torch.randn(B, L, cfg.text_dim) * mask[..., None]
    return TextEncoding(tokens, mask, torch.randn(B, cfg.text_dim))


def rollout_noise(cfg: WanStudentConfig, B: int) -> torch.Tensor:
    torch.manual_seed(2)
    return torch.randn(B, cfg.n_blocks, cfg.steps, cfg.block_frames, cfg.channels, cfg.height, cfg.width)


# ----- cache vs recomputation -----


@pytest.mark.parametrize("block_frames", [2, 1], ids=["chunk-wise", "frame-wise"])
def test_cached_rollout_equals_masked_recomputation(wan, block_frames):
    model = tiny_model(wan, block_frames=block_frames)
    cfg = model.config
    text, noise = tiny_text(2, cfg), rollout_noise(cfg, 2)
    with torch.no_grad():
        cached = rollout(model, text, noise, amp=False)
        recomputed = rollout(model, text, noise, amp=False, use_cache=False)
    assert cached.shape == (2, cfg.frames, cfg.channels, cfg.height, cfg.width)
    torch.testing.assert_close(cached, recomputed, atol=1e-5, rtol=1e-5)
    # the blocks really read their context: a different first block changes the second
    with torch.no_grad():
        other = rollout(model, text, noise, amp=False, prefix=cached[:, :block_frames] + 1.0, n_blocks=2)
    assert (other[:, block_frames:2 * block_frames] - cached[:, block_frames:2 * block_frames]).abs().max() > 1e-3


@pytest.mark.parametrize("sink", [False, True], ids=["window", "sink"])
def test_streamed_rollout_past_the_training_length(wan, sink):
    """20 frames from an 8-frame student: each block's frame-index RoPE is offset by its
    window's start (docs/long-videos.md), and the re-encoded rolling cache gives the clip that
    recomputing every window gives."""
    model = tiny_model(wan, sink=sink)
    cfg = model.config
    text = tiny_text(2, cfg)
    noise = torch.randn(2, 10, cfg.steps, cfg.block_frames, cfg.channels, cfg.height, cfg.width,
                        generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        cached = rollout(model, text, noise, amp=False, n_blocks=10)
        recomputed = rollout(model, text, noise, amp=False, n_blocks=10, use_cache=False)
    assert cached.shape[1] == 20 and cached[:, 8:].abs().mean() > 0.1
    torch.testing.assert_close(cached, recomputed, atol=1e-5, rtol=1e-5)


def long_noise(cfg, n_blocks: int) -> torch.Tensor:
    return torch.randn(2, n_blocks, cfg.steps, cfg.block_frames, cfg.channels, cfg.height, cfg.width,
                       generator=torch.Generator().manual_seed(4))


@pytest.mark.parametrize("block_frames,sink", [(2, False), (2, True), (1, False)], ids=["window", "sink", "frame-wise"])
def test_rolling_cache_equals_the_windowed_recomputation(wan, block_frames, sink):
    """stream_cache "roll": past the window the stale blocks' keys are dropped, the rest kept as
    written at their clip indices. The clip equals the cache-free pass over the whole clip so
    far under the windowed mask; it opens as the re-encoded clip does and differs from it past
    the window (where re-encoding recomputes the window's keys); the cache holds at most the
    window and the block just written, however long the clip."""
    model = tiny_model(wan, block_frames=block_frames, sink=sink, stream_cache="roll", rope_max_seq_len=48)
    cfg = model.config
    text, K = tiny_text(2, cfg), 24 // block_frames
    noise = long_noise(cfg, K)
    stats: dict = {}
    with torch.no_grad():
        rolled = rollout(model, text, noise, amp=False, n_blocks=K, stats=stats)
        recomputed = rollout(model, text, noise, amp=False, n_blocks=K, use_cache=False)
        cfg.stream_cache = "reencode"
        reencoded = rollout(model, text, noise, amp=False, n_blocks=K)
        cfg.stream_cache = "roll"
        stats_long: dict = {}
        rollout(model, text, long_noise(cfg, 2 * K), amp=False, n_blocks=2 * K, stats=stats_long)
    assert rolled.shape[1] == 24 and rolled[:, 8:].abs().mean() > 0.1
    torch.testing.assert_close(rolled, recomputed, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rolled[:, :8], reencoded[:, :8], atol=1e-5, rtol=1e-5)
    assert (rolled[:, 12:] - reencoded[:, 12:]).abs().max() > 1e-3
    assert stats["cache_frames_max"] == stats_long["cache_frames_max"] == cfg.context_window() + block_frames


@pytest.mark.parametrize("kw", [{}, {"sink": True}, {"block_frames": 1, "window": 3}],
                         ids=["window", "sink", "frame-wise"])
def test_rolling_cache_training_view_is_the_rollout_s(wan, kw):
    """The teacher-forced pass of a 20-frame clip under a rolling cache is one pass with the
    windowed mask: noised block k equals the cache-free pass over the clean blocks < k under
    the same mask, which the rollout test above checks against the cache. The window matters:
    in 2 layers a clean frame reaches a block only through the windows of its window."""
    model = tiny_model(wan, stream_cache="roll", rope_max_seq_len=32, **kw)
    cfg, F_ = model.config, model.config.block_frames
    K, w = 20 // F_, cfg.context_window() // F_
    g = torch.Generator().manual_seed(3)
    x_clean = torch.randn((2, 20, cfg.channels, cfg.height, cfg.width), generator=g)
    x_noised = torch.randn_like(x_clean)
    t = torch.rand((2, K), generator=g).repeat_interleave(F_, dim=1)
    text = tiny_text(2, cfg)
    with torch.no_grad():
        train = model.forward_train(x_clean, x_noised, t, text)
        for k in range(K):
            s = slice(k * F_, (k + 1) * F_)
            alone = model.forward_with_prefix(x_clean[:, :k * F_] if k else None, x_noised[:, s], t[:, s], text)
            torch.testing.assert_close(train[:, s], alone, atol=1e-5, rtol=1e-5)
        # in 2 layers, block k reads its window and its window's windows (context_blocks), nothing older
        k = 2 * w + 1
        reach = set(context_blocks(k, cfg)).union(*(context_blocks(b, cfg) for b in context_blocks(k, cfg)))
        assert reach != set(range(k))  # some earlier block is out of reach
        for j in range(k):
            moved = x_clean.clone()
            moved[:, j * F_:(j + 1) * F_] += 1.0
            s = slice(k * F_, (k + 1) * F_)
            delta = (model.forward_train(moved, x_noised, t, text)[:, s] - train[:, s]).abs().max()
            assert (delta > 1e-4) == (j in reach), (j, sorted(reach))


def test_rolling_cache_errors_are_clear(wan):
    from afd.student.backbones.transformer_config import StudentConfig
    from afd.student.sample import blocks_for_frames

    with pytest.raises(ValueError, match="needs rotary frame positions"):
        StudentConfig(frames=16, block_frames=4, stream_cache="roll")
    cfg = tiny_config(stream_cache="roll", rope_max_seq_len=16)
    assert blocks_for_frames(cfg, 16) == 8
    with pytest.raises(ValueError, match="past the 16 frame positions a rolling cache can number"):
        blocks_for_frames(cfg, 18)
    model = tiny_model(wan, stream_cache="roll", rope_max_seq_len=16)
    x = torch.zeros(1, 18, cfg.channels, cfg.height, cfg.width)
    with pytest.raises(ValueError, match=r"beyond the model's 16 frames \(rope_max_seq_len"):
        model.forward_with_prefix(x[:, :16], x[:, 16:], torch.zeros(1, 2), tiny_text(1, model.config))


def test_forward_train_sees_what_the_rollout_shows(wan):
    """Noised block k of the teacher-forced ``[clean | noised]`` pass equals the cache-free pass
    over the clean blocks < k followed by that noised block (its copies share frame positions)."""
    model = tiny_model(wan)
    cfg, F_ = model.config, model.config.block_frames
    torch.manual_seed(3)
    x_clean = torch.randn(2, cfg.frames, cfg.channels, cfg.height, cfg.width)
    x_noised = torch.randn_like(x_clean)
    t = torch.rand(2, cfg.n_blocks).repeat_interleave(F_, dim=1)
    text = tiny_text(2, cfg)
    with torch.no_grad():
        train = model.forward_train(x_clean, x_noised, t, text)
        for k in range(cfg.n_blocks):
            s = slice(k * F_, (k + 1) * F_)
            prefix = x_clean[:, :k * F_] if k else None
            alone = model.forward_with_prefix(prefix, x_noised[:, s], t[:, s], text)
            torch.testing.assert_close(train[:, s], alone, atol=1e-5, rtol=1e-5)


def test_the_noised_context_view_is_causal_over_noised_blocks(wan):
    """Astrolabe's view (afd.context=noised): block k's prediction is that of the clip cut after
    block k, and it reads the noised blocks before it."""
    model = tiny_model(wan)
    cfg, F_ = model.config, model.config.block_frames
    torch.manual_seed(4)
    x = torch.randn(2, cfg.frames, cfg.channels, cfg.height, cfg.width)
    t = torch.rand(2, cfg.n_blocks).repeat_interleave(F_, dim=1)
    text = tiny_text(2, cfg)
    with torch.no_grad():
        whole = model.forward_noised_context(x, t, text)
        cut = model.forward_noised_context(x[:, :2 * F_], t[:, :2 * F_], text)
        moved = x.clone()
        moved[:, :F_] += 1.0
        other = model.forward_noised_context(moved, t, text)
    torch.testing.assert_close(whole[:, :2 * F_], cut, atol=1e-5, rtol=1e-5)
    assert (other[:, F_:2 * F_] - whole[:, F_:2 * F_]).abs().max() > 1e-3


def test_a_missing_rope_offset_is_caught(wan, monkeypatch):
    """With diffusers' numbering (every call's frames from 0), cached frames and new frames
    collide in position: the cached rollout no longer equals recomputation, nor forward_train
    the cache-free pass."""
    model = tiny_model(wan)
    cfg, F_ = model.config, model.config.block_frames
    text, noise = tiny_text(2, cfg), rollout_noise(cfg, 2)
    true_rope = wan.frame_rope
    monkeypatch.setattr(wan, "frame_rope", lambda rope, positions, rows, cols: true_rope(
        rope, torch.arange(len(positions), device=positions.device), rows, cols))
    with torch.no_grad():
        cached = rollout(model, text, noise, amp=False)
        recomputed = rollout(model, text, noise, amp=False, use_cache=False)
        x = torch.randn(2, 2 * F_, cfg.channels, cfg.height, cfg.width)
        t = torch.full((2, 2 * F_), 0.5)
        train = model.forward_train(x, x, t, text)[:, F_:]
        alone = model.forward_with_prefix(x[:, :F_], x[:, F_:], t[:, F_:], text)
    assert (cached - recomputed).abs().max() > 1e-3
    assert (train - alone).abs().max() > 1e-3


# ----- parity with an independent reference -----


def _lin(x, m):
    return x @ m.weight.T + m.bias


def _rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _attend(q, k, v, allowed=None):
    """q (B, H, Nq, d), k/v (B, H, Nk, d); allowed (Nq, Nk) bool."""
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    return logits.softmax(-1) @ v


def _heads(x, H):
    B, N, D = x.shape
    return x.view(B, N, H, D // H).transpose(1, 2)


def _rope_angles(frames, rows, cols, head_dim, theta=10000.0):
    """(N, head_dim / 2) angles: channel pairs split over frame, row and column as in Wan
    (row and column get 2 * (head_dim // 6) channels each, the frame the rest)."""
    hw = 2 * (head_dim // 6)
    dims = (head_dim - 2 * hw, hw, hw)

    def angles(p, d):
        return p.double()[:, None] * theta ** (-torch.arange(0, d, 2).double() / d)[None]

    per_token = []
    for f in frames.tolist():
        for r in range(rows):
            for c in range(cols):
                per_token.append(torch.cat([angles(torch.tensor([f]), dims[0]), angles(torch.tensor([r]), dims[1]),
                                            angles(torch.tensor([c]), dims[2])], dim=1))
    return torch.cat(per_token).float()


def _rotate(x, ang):
    """Rotate channel pairs (2i, 2i + 1) of x (B, H, N, d) by ang (N, d / 2)."""
    out = torch.empty_like(x)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out[..., 0::2] = x1 * ang.cos() - x2 * ang.sin()
    out[..., 1::2] = x1 * ang.sin() + x2 * ang.cos()
    return out


def _allowed(frames, clean, block_frames, tokens):
    """The attention rule written out slot by slot, then per token."""
    S = len(frames)
    rule = torch.zeros(S, S, dtype=torch.bool)
    for i in range(S):
        for j in range(S):
            bi, bj = frames[i] // block_frames, frames[j] // block_frames
            if clean[j]:
                rule[i, j] = bool(bj < bi or (bj == bi and clean[i]))
            else:
                rule[i, j] = bool(bj == bi and not clean[i])
    return rule.repeat_interleave(tokens, 0).repeat_interleave(tokens, 1)


def reference_forward(model, x, t, frames, clean, text):
    """The student's forward written from its weights in plain torch, over the whole sequence
    with a mask: patch embedding, timestep and text embedding, each block (adaLN, RMS QK-norm,
    RoPE at the slots' frame indices, masked self-attention, cross-attention, FFN), the output
    head. x (B, S, C, H, W), t (B, S), frames/clean (S,). Returns (raw (B, S, C, H, W), the last
    block's tokens (B, S * tokens, D))."""
    cfg, tr = model.config, model.transformer
    B, S, C = x.shape[:3]
    _, ph, pw = cfg.patch_size
    rows, cols = cfg.height // ph, cfg.width // pw
    D, H, eps = cfg.heads * cfg.head_dim, cfg.heads, cfg.eps
    # patch embedding: one linear map per (ph x pw) patch of all channels
    w = tr.patch_embedding.weight.view(D, C * ph * pw)
    h = torch.empty(B, S, rows, cols, D)
    for r in range(rows):
        for c in range(cols):
            patch = x[:, :, :, r * ph:(r + 1) * ph, c * pw:(c + 1) * pw].reshape(B, S, -1)
            h[:, :, r, c] = patch @ w.T + tr.patch_embedding.bias
    h = h.reshape(B, S * rows * cols, D)
    tokens = rows * cols
    # timestep embedding of 1000 t: [cos, sin] of geometric frequencies, MLP, then 6 modulations
    half = cfg.freq_dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half) / half)
    arg = (1000.0 * t)[..., None] * freqs
    ce = tr.condition_embedder
    temb = _lin(F.silu(_lin(torch.cat([arg.cos(), arg.sin()], -1), ce.time_embedder.linear_1)),
                ce.time_embedder.linear_2)
    mod6 = _lin(F.silu(temb), ce.time_proj).view(B, S, 6, D).repeat_interleave(tokens, dim=1)
    ctx = text.tokens * text.mask[..., None]
    ctx = _lin(F.gelu(_lin(ctx, ce.text_embedder.linear_1), approximate="tanh"), ce.text_embedder.linear_2)
    ang = _rope_angles(frames, rows, cols, cfg.head_dim)
    allowed = _allowed(frames.tolist(), clean.tolist(), cfg.block_frames, tokens)
    for blk in tr.blocks:
        sh, sc, g, csh, csc, cg = (blk.scale_shift_table[0] + mod6).unbind(2)
        a = F.layer_norm(h, (D,), eps=eps) * (1 + sc) + sh
        at = blk.attn1
        q = _rotate(_heads(_rms(_lin(a, at.to_q), at.norm_q.weight, eps), H), ang)
        k = _rotate(_heads(_rms(_lin(a, at.to_k), at.norm_k.weight, eps), H), ang)
        o = _attend(q, k, _heads(_lin(a, at.to_v), H), allowed)
        h = h + _lin(o.transpose(1, 2).reshape(B, -1, D), at.to_out[0]) * g
        n = F.layer_norm(h, (D,), blk.norm2.weight, blk.norm2.bias, eps=eps)
        at = blk.attn2
        q = _heads(_rms(_lin(n, at.to_q), at.norm_q.weight, eps), H)
        k = _heads(_rms(_lin(ctx, at.to_k), at.norm_k.weight, eps), H)
        o = _attend(q, k, _heads(_lin(ctx, at.to_v), H))
        h = h + _lin(o.transpose(1, 2).reshape(B, -1, D), at.to_out[0])
        f = F.layer_norm(h, (D,), eps=eps) * (1 + csc) + csh
        f = _lin(F.gelu(_lin(f, blk.ffn.net[0].proj), approximate="tanh"), blk.ffn.net[2])
        h = h + f * cg
    feats = h
    shift, scale = (tr.scale_shift_table[0] + temb.repeat_interleave(tokens, dim=1)[:, :, None]).unbind(2)
    out = _lin(F.layer_norm(h, (D,), eps=eps) * (1 + scale) + shift, tr.proj_out)
    out = out.view(B, S, rows, cols, ph * pw * C)
    raw = torch.empty(B, S, C, cfg.height, cfg.width)
    for r in range(rows):
        for c in range(cols):
            for i in range(ph):
                for j in range(pw):
                    lo = (i * pw + j) * C
                    raw[:, :, :, r * ph + i, c * pw + j] = out[:, :, r, c, lo:lo + C]
    return raw, feats


def test_one_block_matches_a_plain_torch_reference(wan):
    """One block (plus embeddings and head) against the reference, on the training sequence
    ``[clean | noised]`` (shared positions, the full attention rule) with per-frame t."""
    model = tiny_model(wan, layers=1)
    cfg, F_ = model.config, model.config.block_frames
    T = cfg.frames
    torch.manual_seed(4)
    x_clean = torch.randn(2, T, cfg.channels, cfg.height, cfg.width)
    x_noised = torch.randn_like(x_clean)
    t = torch.rand(2, T // F_).repeat_interleave(F_, dim=1)
    text = tiny_text(2, cfg)
    with torch.no_grad():
        raw, feats = model.forward_train(x_clean, x_noised, t, text, return_features=True)
        frames = torch.arange(T).repeat(2)
        clean = torch.cat([torch.ones(T, dtype=torch.bool), torch.zeros(T, dtype=torch.bool)])
        ref_raw, ref_feats = reference_forward(model, torch.cat([x_clean, x_noised], 1),
                                               torch.cat([torch.zeros_like(t), t], 1), frames, clean, text)
    torch.testing.assert_close(feats, ref_feats[:, ref_feats.shape[1] // 2:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(raw, ref_raw[:, T:], atol=1e-5, rtol=1e-5)


def test_velocity_parametrisation(wan):
    model = tiny_model(wan)
    torch.manual_seed(5)
    x0, eps = torch.randn(2, 2, 4, 8, 8), torch.randn(2, 2, 4, 8, 8)
    t = torch.tensor([[0.25, 0.25], [0.75, 0.75]])
    x_t = (1 - t[..., None, None, None]) * x0 + t[..., None, None, None] * eps
    v = eps - x0
    assert torch.equal(model.to_velocity(v, x_t, t), v)
    torch.testing.assert_close(model.to_x0(v, x_t, t), x0)


# ----- persistence, LoRA -----


def test_save_and_load_round_trip_through_the_registry(wan, tmp_path):
    model = tiny_model(wan)
    model.save_pretrained(tmp_path / "wan")
    meta = json.loads((tmp_path / "wan" / "config.json").read_text())
    assert meta["format"] == "afd-wan-student"
    loaded = load_student_model(tmp_path / "wan")
    assert type(loaded) is wan.CausalWanStudent and not loaded.training
    assert loaded.config == model.config
    for (n, a), (m, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n == m and torch.equal(a, b), n
    text, noise = tiny_text(2, model.config), rollout_noise(model.config, 2)
    with torch.no_grad():
        assert torch.equal(rollout(model, text, noise, amp=False), rollout(loaded, text, noise, amp=False))


def test_loading_is_strict_and_needs_every_config_field(wan, tmp_path):
    from afd.io_utils import load_safetensors, save_safetensors_atomic

    d = tiny_model(wan).save_pretrained(tmp_path / "wan")
    weights = load_safetensors(d / "model.safetensors")
    weights.pop("transformer.blocks.0.attn1.to_q.weight")
    save_safetensors_atomic(weights, d / "model.safetensors")
    with pytest.raises(ValueError, match=r"missing \['transformer.blocks.0.attn1.to_q.weight'\]"):
        load_student_model(d)
    meta = json.loads((d / "config.json").read_text())
    del meta["config"]["block_frames"]
    (d / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"config.json: missing required key 'block_frames'"):
        load_student_model(d)


def test_lora_trains_only_the_adapters(wan):
    from afd.student.lora import add_lora, merged_copy

    model = tiny_model(wan)
    cfg = model.config
    targets = model.lora_target_modules()
    assert len(targets) == 10 * cfg.layers
    add_lora(model, 2, 4.0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".lora_")[0].replace(".base_layer", "") for n in trainable} == set(targets)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    torch.manual_seed(6)
    x0, eps = torch.randn(2, cfg.frames, 4, 8, 8), torch.randn(2, cfg.frames, 4, 8, 8)
    t = torch.rand(2, cfg.n_blocks).repeat_interleave(cfg.block_frames, dim=1)
    x_t = (1 - t[..., None, None, None]) * x0 + t[..., None, None, None] * eps
    text = tiny_text(2, cfg)
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    before = model.forward_train(x0, x_t, t, text).detach()
    loss = (model.to_velocity(model.forward_train(x0, x_t, t, text), x_t, t) - (eps - x0)).pow(2).mean()
    loss.backward()
    opt.step()
    with torch.no_grad():
        after = model.forward_train(x0, x_t, t, text)
        assert (after - before).abs().max() > 1e-4
        for n, p in model.named_parameters():
            if n in frozen:
                assert torch.equal(p, frozen[n]), n
        merged = merged_copy(model).eval()
        torch.testing.assert_close(merged.forward_train(x0, x_t, t, text), after, atol=1e-5, rtol=1e-5)


# ----- config, codec, the optional extra -----


def test_config_round_trip_and_clear_errors():
    cfg = tiny_config()
    assert config_from_dict(WanStudentConfig, config_to_dict(cfg)) == cfg
    assert cfg.sampler_levels() == ([1.0, 0.9375, 5 / 6, 0.625], [1.0, 0.9375, 5 / 6, 0.625])
    assert (cfg.n_blocks, cfg.tokens_per_frame, cfg.dim) == (4, 16, 24)
    with pytest.raises(ValueError, match=r"patch_size must be \(1, ph, pw\)"):
        tiny_config(patch_size=(2, 2, 2))
    with pytest.raises(ValueError, match="block_frames 3 must divide frames 8"):
        tiny_config(block_frames=3)
    with pytest.raises(ValueError, match="rope_max_seq_len 4 is below the 8 positions"):
        tiny_config(rope_max_seq_len=4)
    with pytest.raises(ValueError, match="expected one of 'pixel', 'wan-vae'"):
        tiny_config(codec="vae")
    with pytest.raises(ValueError,
                       match="codec 'pixel' decodes RGB frames as they are, but the student models 4 channels"):
        make_codec(cfg)
    assert make_codec(tiny_config(channels=3)).fmt.height == 8


def test_loading_without_diffusers_names_the_extra(tmp_path, monkeypatch):
    d = tmp_path / "wan"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"format": "afd-wan-student", "config": {}}))
    monkeypatch.setitem(sys.modules, "diffusers", None)  # what an import sees when it is not installed
    monkeypatch.delitem(sys.modules, "afd.student.backbones.wan", raising=False)
    with pytest.raises(ValueError,
                       match=r"config.json: cannot load a 'afd-wan-student' student: .*pip install 'afd\[wan\]'"):
        load_student_model(d)


def test_the_default_import_path_does_not_import_diffusers():
    code = ("import sys, afd.cli, afd.student.base, afd.student.backbones.transformer, afd.student.rollout, "
            "afd.student.sample, afd.losses, afd.student.backbones.wan_config; "
            "print(sorted(m for m in ('diffusers', 'afd.student.backbones.wan') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"

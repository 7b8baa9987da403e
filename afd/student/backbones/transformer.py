"""The causal AR student: a block-causal pixel-space video transformer.

Frames are cut into ``patch x patch`` patches (16 tokens per 32x32 frame at the default 8x8).
Each transformer layer does, DiT-style: adaLN-modulated self-attention (block-causal), plain
pre-norm cross-attention to the prompt's token states, adaLN-modulated MLP. The modulation comes
from a per-frame conditioning vector: the frame's noise level t plus the prompt's pooled vector,
so every frame of a block can sit at its own t and clean context frames sit at t = 0.

Attention rule (docs/method.md sections 3 and 6): tokens are either *clean* context or *noised*
frames being denoised. A clean frame in block b sees clean frames of blocks <= b; a noised frame
in block b sees clean frames of blocks < b and the noised frames of block b. One rule serves
inference with a KV cache (which holds clean frames only), recomputation without a cache, and the
training sequence ``[clean blocks | noised blocks]`` in one forward pass.

The model keeps no state between calls: the KV cache is passed in and returned (``cache.py``).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from afd.student.backbones.transformer_config import StudentConfig
from afd.student.cache import KVCache
from afd.student.causal import BlockCausalModel
from afd.student.mask import attention_mask
from afd.text.encoder import TextEncoding

FORMAT_NAME = "afd-student"
T_MIN = 1e-3  # smallest t used to turn an x0 prediction into a velocity


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1] (scaled to [0, 1000] like diffusion timesteps)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * 1000.0)[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class Layer(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        head_dim = dim // heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        # QK-norm keeps attention logits bounded at the high learning rates a small model wants.
        self.q_norm = nn.RMSNorm(head_dim, eps=1e-6)
        self.k_norm = nn.RMSNorm(head_dim, eps=1e-6)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.cross_q = nn.Linear(dim, dim)
        self.cross_kv = nn.Linear(dim, 2 * dim)
        self.cross_proj = nn.Linear(dim, dim)
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.ada = nn.Linear(dim, 6 * dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        return x.view(B, N, self.heads, D // self.heads).transpose(1, 2)

    def forward(self, h, c, text_h, text_mask, attn_mask, past):
        """h: (B, N, D) tokens in ``c.shape[1]`` frame slots; c: (B, slots, D) conditioning.

        Returns the new h and this call's (keys, values), each (B, heads, N, head_dim).
        """
        B, N, D = h.shape
        slots = c.shape[1]
        mod = self.ada(F.silu(c)).unsqueeze(2)  # (B, slots, 1, 6D)
        sh1, sc1, g1, sh2, sc2, g2 = mod.chunk(6, dim=-1)

        def per_slot(x):
            return x.view(B, slots, N // slots, D)

        a = _modulate(self.norm1(per_slot(h)), sh1, sc1).view(B, N, D)
        q, k, v = (self._heads(x) for x in self.qkv(a).chunk(3, dim=-1))
        # RMSNorm in fp32 (its weight is fp32; a bf16 input would miss the fused kernel).
        q, k = self.q_norm(q.float()).to(v.dtype), self.k_norm(k.float()).to(v.dtype)
        if past is not None:
            k_all = torch.cat([past[0].to(k.dtype), k], dim=2)
            v_all = torch.cat([past[1].to(v.dtype), v], dim=2)
        else:
            k_all, v_all = k, v
        o = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=attn_mask)
        o = self.proj(o.transpose(1, 2).reshape(B, N, D))
        h = h + (g1 * per_slot(o)).view(B, N, D)

        cq = self._heads(self.cross_q(self.norm2(h)))
        ck, cv = (self._heads(x) for x in self.cross_kv(text_h).chunk(2, dim=-1))
        co = F.scaled_dot_product_attention(cq, ck.to(cq.dtype), cv.to(cq.dtype), attn_mask=text_mask)
        h = h + self.cross_proj(co.transpose(1, 2).reshape(B, N, D))

        m = self.mlp(_modulate(self.norm3(per_slot(h)), sh2, sc2))
        h = h + (g2 * m).view(B, N, D)
        # v is a transposed view of the qkv output; a copy keeps views out of what the layer
        # returns, since an in-place op on an FSDP2 unit's output view would skip its all-gather.
        return h, (k, v.clone(memory_format=torch.contiguous_format))


class RefineHead(nn.Module):
    """Per-frame residual convolutions on the raw prediction (``StudentConfig.refine``).

    Input per noised frame, at full resolution: the un-patchified prediction, the frame the model
    was given, its noise level (a constant plane), the newest clean frame it may see (the end of
    its context: zeros in block 0) and a plane saying whether there is one. Four 3x3 convolutions
    (receptive field 9x9, so it spans every patch seam and a few pixels of motion) add a
    correction. The last convolution starts at zero: the identity.
    """

    def __init__(self, channels: int, width: int):
        super().__init__()
        pad = dict(padding=1, padding_mode="replicate")
        act = nn.GELU(approximate="tanh")
        self.net = nn.Sequential(
            nn.Conv2d(3 * channels + 2, width, 3, **pad), act,
            nn.Conv2d(width, width, 3, **pad), act,
            nn.Conv2d(width, width, 3, **pad), act,
            nn.Conv2d(width, channels, 3, **pad),
        )

    def forward(self, raw: torch.Tensor, x: torch.Tensor, t: torch.Tensor, prev: torch.Tensor,
                has_prev: torch.Tensor) -> torch.Tensor:
        """raw, x, prev: (B, S, C, H, W); t: (B, S); has_prev: (S,) bool. Returns the refined raw
        prediction (B, S, C, H, W) float32."""
        B, S, C, H, W = raw.shape
        dt = raw.dtype
        t_plane = t.to(dt)[..., None, None, None].expand(B, S, 1, H, W)
        p_plane = has_prev.to(dt)[None, :, None, None, None].expand(B, S, 1, H, W)
        inp = torch.cat([raw, x.to(dt), t_plane, prev.to(dt), p_plane], dim=2).flatten(0, 1)
        return raw + self.net(inp).view(B, S, C, H, W).float()


class CausalVideoTransformer(BlockCausalModel, nn.Module):
    """Block-causal flow model over ``(B, T, C, H, W)`` clips (see the module docstring); its
    views of the clip (``forward``, ``forward_train``, ``forward_with_prefix``) and persistence
    come from ``BlockCausalModel``."""

    def __init__(self, config: StudentConfig):
        super().__init__()
        self.config = cfg = config
        D = cfg.dim
        self.patch_dim = cfg.channels * cfg.patch * cfg.patch
        self.patch_in = nn.Linear(self.patch_dim, D)
        self.pos_frame = nn.Parameter(torch.randn(cfg.frames, D) * 0.02)
        self.pos_row = nn.Parameter(torch.randn(cfg.height // cfg.patch, D) * 0.02)
        self.pos_col = nn.Parameter(torch.randn(cfg.width // cfg.patch, D) * 0.02)
        self.t_mlp = nn.Sequential(nn.Linear(256, D), nn.SiLU(), nn.Linear(D, D))
        self.pooled_proj = nn.Linear(cfg.text_dim, D)
        self.text_proj = nn.Linear(cfg.text_dim, D)
        self.layers = nn.ModuleList(Layer(D, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.final_norm = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Linear(D, 2 * D)
        self.patch_out = nn.Linear(D, self.patch_dim)
        self.refine = RefineHead(cfg.channels, cfg.refine) if cfg.refine else None
        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        # adaLN-Zero: every residual branch and the output start at zero, so the untrained
        # network is the identity on its tokens and training starts stable.
        for layer in self.layers:
            nn.init.zeros_(layer.ada.weight)
            nn.init.zeros_(layer.ada.bias)
        for m in (self.final_ada, self.patch_out):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        if self.refine is not None:
            nn.init.zeros_(self.refine.net[-1].weight)
            nn.init.zeros_(self.refine.net[-1].bias)

    # ----- tokens <-> frames -----
    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) -> (B, T * tokens_per_frame, C * P * P)."""
        B, T, C, H, W = x.shape
        P = self.config.patch
        x = x.reshape(B, T, C, H // P, P, W // P, P).permute(0, 1, 3, 5, 2, 4, 6)
        return x.reshape(B, T * (H // P) * (W // P), C * P * P)

    def unpatchify(self, tokens: torch.Tensor, T: int) -> torch.Tensor:
        cfg = self.config
        P, B = cfg.patch, tokens.shape[0]
        h, w = cfg.height // P, cfg.width // P
        x = tokens.reshape(B, T, h, w, cfg.channels, P, P).permute(0, 1, 4, 2, 5, 3, 6)
        return x.reshape(B, T, cfg.channels, cfg.height, cfg.width)

    # ----- core -----
    def _run(self, x, t, frames, clean, text: TextEncoding, cache: KVCache | None, features: bool = False):
        """x: (B, slots, C, H, W); t: (B, slots); frames/clean: (slots,) long/bool.

        Returns raw predictions (B, slots, C, H, W) and per-layer (keys, values) of x's tokens;
        with ``features`` also the last layer's tokens (B, slots * tokens_per_frame, dim).
        """
        cfg = self.config
        B, slots = x.shape[:2]
        text = text.to(x.device)
        if int(frames.max()) >= cfg.frames:
            raise ValueError(f"frame index {int(frames.max())} beyond the model's {cfg.frames} frames")
        pos = (self.pos_frame[frames][:, None, :]
               + (self.pos_row[:, None, :] + self.pos_col[None, :, :]).flatten(0, 1)[None])
        h = self.patch_in(self.patchify(x)) + pos.flatten(0, 1)[None]
        # The sinusoids are computed in fp32; under FSDP2's bf16 parameters without autocast the
        # linear maps need them in their own dtype (a no-op in fp32 and under autocast).
        dtype = self.t_mlp[0].weight.dtype
        c = self.t_mlp(timestep_embedding(t, 256).to(dtype)) + self.pooled_proj(text.pooled.to(dtype))[:, None, :]
        text_h = self.text_proj(text.tokens.to(dtype))
        text_mask = text.mask[:, None, None, :]
        n_past = cache.n_frames if cache is not None else 0
        mask = attention_mask(frames, clean, n_past, cfg.block_frames, cfg.tokens_per_frame, h)
        new_k, new_v = [], []
        for i, layer in enumerate(self.layers):
            h, (k, v) = layer(h, c, text_h, text_mask, mask, cache.layer(i) if cache is not None else None)
            new_k.append(k)
            new_v.append(v)
        feats = h
        sh, sc = self.final_ada(F.silu(c)).unsqueeze(2).chunk(2, dim=-1)
        S = cfg.tokens_per_frame
        h = _modulate(self.final_norm(h.view(B, slots, S, -1)), sh, sc).view(B, slots * S, -1)
        out = self.unpatchify(self.patch_out(h), slots).float()
        if self.refine is not None:
            # Only noised frames: a clean slot's prediction is never used (it fills the cache).
            idx = torch.nonzero(~clean).squeeze(1)
            if len(idx):
                prev, has_prev = self._newest_clean(x, frames, clean, cache, idx)
                out = out.index_copy(1, idx, self.refine(out[:, idx], x[:, idx], t[:, idx], prev, has_prev))
        if features:
            return out, new_k, new_v, feats
        return out, new_k, new_v

    def _newest_clean(self, x, frames, clean, cache: KVCache | None, idx):
        """For the noised slots ``idx``: the newest clean frame each may attend to (the same
        rule as the attention mask: clean frames of earlier blocks, in x or in the cache).
        Returns (B, len(idx), C, H, W) pixels (zeros where there is none) and (len(idx),) bool."""
        F_ = self.config.block_frames
        n_past = cache.n_frames if cache is not None else 0
        zeros = torch.zeros_like(x[:, 0])
        prevs, has = [], []
        for i in idx.tolist():
            start = int(frames[i]) // F_ * F_
            visible = torch.nonzero(clean & (frames < start)).squeeze(1)
            if len(visible):
                prevs.append(x[:, int(visible[torch.argmax(frames[visible])])])
            elif n_past:  # the cache holds whole blocks before this call's frames
                prevs.append(cache.last_frame.to(x.dtype))
            else:
                prevs.append(zeros)
            has.append(len(visible) > 0 or n_past > 0)
        return torch.stack(prevs, dim=1), torch.tensor(has, device=x.device)

    # ----- prediction <-> velocity / x0 -----
    def to_x0(self, raw: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Clean estimate from a raw prediction; t: (B, T) broadcast over pixels."""
        if self.config.prediction == "x0":
            return raw
        return x_t - t[..., None, None, None] * raw

    def to_velocity(self, raw: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Velocity ``eps - x0`` from a raw prediction; t: (B, T) broadcast over pixels."""
        if self.config.prediction == "velocity":
            return raw
        return (x_t - raw) / t[..., None, None, None].clamp_min(T_MIN)

    # The config.json "format" tag (afd.student.formats.STUDENT_FORMATS maps it back to this class).
    FORMAT = FORMAT_NAME
    CONFIG = StudentConfig
    # Linear maps of each transformer layer that get LoRA adapters (self-attention, cross-attention, MLP).
    LORA_TARGETS = ("qkv", "proj", "cross_q", "cross_kv", "cross_proj", "mlp.0", "mlp.2")

    def repeated_blocks(self) -> list[nn.Module]:
        """The transformer layers: the units of FSDP2 sharding and activation checkpointing."""
        return list(self.layers)

    def lora_target_modules(self) -> list[str]:
        """Names of the layers' linear maps that LoRA adapts (``afd.student.lora.add_lora``)."""
        return [n for n, m in self.named_modules()
                if isinstance(m, nn.Linear) and n.startswith("layers.") and n.split(".", 2)[2] in self.LORA_TARGETS]


def read_student_config(directory: str | Path) -> StudentConfig:
    """The ``StudentConfig`` of a saved ``afd-student`` folder."""
    return CausalVideoTransformer.read_config(directory)

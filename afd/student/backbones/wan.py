"""A causal student over diffusers' ``WanTransformer3DModel`` (Self-Forcing / Causal-Forcing's backbone).

The transformer's own modules and weights are used as they are (patch embedding, timestep and
text embedding, blocks, output head), so its state-dict keys are diffusers' under
``transformer.``. What diffusers' forward cannot do for an autoregressive student is done here:

- **Block-causal attention with afd's KV cache.** Each block's self-attention runs
  ``CausalSelfAttention``, a processor that takes the mask, the cached keys/values and this call's
  RoPE tables from a ``SelfAttentionCall`` handed to it where diffusers passes ``rotary_emb``
  (diffusers passes no mask to the processor). The call object, not the processor, holds them,
  so the model keeps no state between calls and a recomputed block (activation checkpointing)
  sees the same inputs as its forward. Keys are cached after the QK-norm and RoPE, as they were
  attended to. The attention rule is ``afd.student.mask``'s, the same as ``CausalVideoTransformer``.
- **Frame-index RoPE.** ``WanRotaryPosEmbed`` numbers frames from 0 in every call; here each frame
  slot gets its true index, so new frames after a cache of n frames sit at n, n + 1, ... and the
  ``[clean | noised]`` copies of a frame in ``forward_train`` share its position.
- **Per-frame timesteps.** Each frame slot has its own t; the timestep embedding is computed per
  frame and expanded to that frame's tokens (diffusers' ``(B, seq_len)`` timestep path).
- **Flow parametrisation (Self-Forcing's).** The network predicts the flow velocity
  ``v = eps - x0`` of ``x_t = (1 - t) x0 + t eps`` from timesteps ``1000 t``; so
  ``to_velocity`` is the raw prediction and ``to_x0 = x_t - t v``.
- **Text.** afd's ``TextEncoding.tokens`` (B, L, text_dim) are the ``encoder_hidden_states``;
  tokens outside ``mask`` are zeroed and still attended, as Wan attends to its zero-padded text.

Importing this module imports diffusers (the ``wan`` extra); nothing else in afd imports it,
``afd.student.base.load_student_model`` does when a folder's format tag is "afd-wan-student".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

try:
    from diffusers import WanTransformer3DModel
except ImportError as e:
    raise ImportError(f"the Wan student needs diffusers, which is not installed ({e}): "
                      f"pip install 'afd[wan]'") from None

from afd.student.backbones.wan_config import WanStudentConfig
from afd.student.cache import KVCache
from afd.student.causal import BlockCausalModel
from afd.student.mask import attention_mask
from afd.text.encoder import TextEncoding

FORMAT_NAME = "afd-wan-student"
TIMESTEP_SCALE = 1000.0  # Wan's timesteps run over [0, 1000]


def frame_rope(rope: nn.Module, positions: torch.Tensor, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE tables of ``WanRotaryPosEmbed`` for frame slots at ``positions`` (S,) long (any
    frame index, not only 0, 1, ...) of ``rows x cols`` patches each.

    Returns (cos, sin), each (S * rows * cols, head_dim / 2) float32: one angle per channel pair,
    token order frame-major then row then column (the patch embedding's)."""
    split = [rope.t_dim, rope.h_dim, rope.w_dim]
    # diffusers stores each pair's angle twice (interleaved); one copy per pair is enough.
    tables = []
    for freqs in (rope.freqs_cos, rope.freqs_sin):
        f, h, w = (part[:, 0::2] for part in freqs.split(split, dim=1))
        S = len(positions)
        grid = torch.cat([f[positions.to(f.device)].view(S, 1, 1, -1).expand(S, rows, cols, -1),
                          h[:rows].view(1, rows, 1, -1).expand(S, rows, cols, -1),
                          w[:cols].view(1, 1, cols, -1).expand(S, rows, cols, -1)], dim=-1)
        tables.append(grid.reshape(S * rows * cols, -1).float())
    return tables[0], tables[1]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (2i, 2i + 1) of x (B, N, heads, head_dim) by the angles of cos/sin
    (N, head_dim / 2), in float32; returns x's dtype."""
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    c, s = cos[None, :, None], sin[None, :, None]
    return torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).flatten(-2).type_as(x)


class SelfAttentionCall:
    """One block's self-attention inputs for one call. cos/sin: (N, head_dim / 2) RoPE tables of
    the call's tokens; mask: additive (N, n_past * tokens + N) or None; past: the cached
    (keys, values), each (B, heads, n_past * tokens, head_dim), or None. The processor sets
    ``kv``: this call's keys and values, same layout.

    A plain object, not a dataclass or tuple, on purpose: FSDP2's mixed-precision policy rebuilds
    every dataclass among a block's forward inputs to cast its tensors, so the processor would set
    ``kv`` on a copy the caller never sees (and the RoPE tables, kept fp32, would arrive in bf16)."""

    __slots__ = ("cos", "sin", "mask", "past", "kv")

    def __init__(self, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                 past: tuple[torch.Tensor, torch.Tensor] | None):
        self.cos, self.sin, self.mask, self.past = cos, sin, mask, past
        self.kv: tuple[torch.Tensor, torch.Tensor] | None = None


class CausalSelfAttention:
    """Attention processor of a ``WanAttention`` self-attention: block-causal, with a KV cache.

    Installed on every block's ``attn1``; it reads a ``SelfAttentionCall`` from the
    ``rotary_emb`` argument (see the module docstring), so it only runs under
    ``CausalWanStudent``."""

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states=None, attention_mask=None,
                 rotary_emb=None) -> torch.Tensor:
        call = rotary_emb
        if not isinstance(call, SelfAttentionCall):
            raise TypeError("this Wan transformer's self-attention is block-causal: run it through "
                            "CausalWanStudent, not the diffusers forward")
        if getattr(attn, "fused_projections", False):
            raise ValueError("fused QKV projections are not supported by the causal Wan student")
        v = attn.to_v(hidden_states).unflatten(2, (attn.heads, -1))
        # QK-norm in fp32, as Wan's own RMSNorm: its weight is fp32 and a bf16 input would miss
        # the fused kernel.
        q = attn.norm_q(attn.to_q(hidden_states).float()).to(v.dtype).unflatten(2, (attn.heads, -1))
        k = attn.norm_k(attn.to_k(hidden_states).float()).to(v.dtype).unflatten(2, (attn.heads, -1))
        q, k = apply_rope(q, call.cos, call.sin), apply_rope(k, call.cos, call.sin)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))
        call.kv = (k, v)
        if call.past is not None:
            k = torch.cat([call.past[0].to(k.dtype), k], dim=2)
            v = torch.cat([call.past[1].to(v.dtype), v], dim=2)
        mask = call.mask.to(q.dtype) if call.mask is not None else None
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        o = o.transpose(1, 2).flatten(2, 3).type_as(q)
        return attn.to_out[1](attn.to_out[0](o))


class CausalWanStudent(BlockCausalModel, nn.Module):
    """Block-causal flow model over ``(B, T, C, H, W)`` clips around a randomly initialised
    ``WanTransformer3DModel`` built from a ``WanStudentConfig`` (see the module docstring); its
    views of the clip and persistence come from ``BlockCausalModel``."""

    FORMAT = FORMAT_NAME
    CONFIG = WanStudentConfig
    # Linear maps of each block that get LoRA adapters: self- and cross-attention, feed-forward.
    LORA_TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                    "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ffn.net.0.proj", "ffn.net.2")

    def __init__(self, config: WanStudentConfig):
        super().__init__()
        self.config = cfg = config
        self.transformer = WanTransformer3DModel(
            patch_size=tuple(cfg.patch_size), num_attention_heads=cfg.heads, attention_head_dim=cfg.head_dim,
            in_channels=cfg.channels, out_channels=cfg.channels, text_dim=cfg.text_dim, freq_dim=cfg.freq_dim,
            ffn_dim=cfg.ffn_dim, num_layers=cfg.layers, cross_attn_norm=cfg.cross_attn_norm, eps=cfg.eps,
            rope_max_seq_len=cfg.rope_max_seq_len)
        for block in self.transformer.blocks:
            block.attn1.set_processor(CausalSelfAttention())

    def _run(self, x, t, frames, clean, text: TextEncoding, cache: KVCache | None, features: bool = False):
        cfg, tr = self.config, self.transformer
        B, slots = x.shape[:2]
        text = text.to(x.device)
        # A rolling cache numbers frames by clip index, so the rotary table bounds it (max_frames).
        limit = cfg.max_frames() or cfg.frames
        if int(frames.max()) >= limit:
            raise ValueError(f"frame index {int(frames.max())} beyond the model's {limit} frames"
                             + (" (rope_max_seq_len: a rolling cache's positions)" if cfg.rolls() else ""))
        if text.tokens.shape[-1] != cfg.text_dim:
            raise ValueError(f"the Wan student reads {cfg.text_dim}-dim text tokens, got {text.tokens.shape[-1]}")
        _, ph, pw = cfg.patch_size
        rows, cols = cfg.height // ph, cfg.width // pw
        S = rows * cols
        h = tr.patch_embedding(x.transpose(1, 2)).flatten(2).transpose(1, 2).contiguous()  # (B, slots * S, D)
        context = text.tokens * text.mask[..., None].to(text.tokens.dtype)
        temb, proj, context, _ = tr.condition_embedder((t * TIMESTEP_SCALE).flatten(), context, None,
                                                       timestep_seq_len=slots)
        # temb (B, slots, D), proj (B, slots, 6D): each frame's modulation, copied to its tokens.
        proj = proj.repeat_interleave(S, dim=1).unflatten(2, (6, -1))
        cos, sin = frame_rope(tr.rope, frames, rows, cols)
        n_past = cache.n_frames if cache is not None else 0
        mask = attention_mask(frames, clean, n_past, cfg.block_frames, S, h, self.window_rule())
        new_k, new_v = [], []
        for i, block in enumerate(tr.blocks):
            call = SelfAttentionCall(cos, sin, mask, cache.layer(i) if cache is not None else None)
            h = block(h, context, proj, call)
            new_k.append(call.kv[0])
            new_v.append(call.kv[1])
        feats = h
        shift, scale = (tr.scale_shift_table + temb[:, :, None]).chunk(2, dim=2)  # (B, slots, 1, D) each
        D = h.shape[-1]
        h = (tr.norm_out(h.float()).view(B, slots, S, D) * (1 + scale) + shift).type_as(h)
        out = tr.proj_out(h)  # (B, slots, S, ph * pw * C), patch layout (ph, pw, C) as diffusers'
        out = out.view(B, slots, rows, cols, ph, pw, cfg.channels).permute(0, 1, 6, 2, 4, 3, 5)
        out = out.reshape(B, slots, cfg.channels, cfg.height, cfg.width).float()
        if features:
            return out, new_k, new_v, feats
        return out, new_k, new_v

    # ----- prediction <-> velocity / x0 -----
    def to_x0(self, raw: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Clean estimate ``x_t - t v`` of a velocity prediction; raw, x_t: (B, T, C, H, W); t: (B, T)."""
        return x_t - t[..., None, None, None] * raw

    def to_velocity(self, raw: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The velocity ``eps - x0``: the raw prediction itself (B, T, C, H, W)."""
        return raw

    def repeated_blocks(self) -> list[nn.Module]:
        """The transformer's blocks: the units of FSDP2 sharding and activation checkpointing."""
        return list(self.transformer.blocks)

    def lora_target_modules(self) -> list[str]:
        """Names of the blocks' attention and feed-forward linear maps (``afd.student.lora.add_lora``)."""
        return [n for n, m in self.named_modules()
                if isinstance(m, nn.Linear) and n.startswith("transformer.blocks.")
                and n.split(".", 3)[3] in self.LORA_TARGETS]

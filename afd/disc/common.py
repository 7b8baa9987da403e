"""Pieces both backbones share: prompt embedding, FiLM, the projection head, motion inputs."""

from __future__ import annotations

import math

import torch
from torch import nn

from afd.text import TextEncoding


class TextEmbed(nn.Module):
    """Prompt encoding -> (B, hidden) conditioning vector.

    "pooled" reads the encoder's L2-normalised sentence vector; "attn" lets one learned query
    attend over the token states (masked), so a single differing token (left vs right) is not
    averaged away among the 10+ shared ones.
    """

    def __init__(self, hidden: int, pooling: str = "pooled", text_dim: int = 384):
        super().__init__()
        self.pooling, self.text_dim = pooling, text_dim
        if pooling == "attn":
            self.norm = nn.LayerNorm(text_dim)
            self.query = nn.Parameter(torch.randn(hidden) / math.sqrt(hidden))
            self.key = nn.Linear(text_dim, hidden)
        self.mlp = nn.Sequential(nn.Linear(text_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, text: TextEncoding) -> torch.Tensor:
        if self.pooling == "attn":
            tok = self.norm(text.tokens.float())  # (B, L, text_dim)
            logits = self.key(tok) @ self.query / math.sqrt(self.query.numel())  # (B, L)
            logits = logits.masked_fill(~text.mask.bool(), float("-inf"))
            x = (logits.softmax(-1)[..., None] * tok).sum(1)
        else:
            # the sentence vector has unit norm, i.e. entries ~ 1/sqrt(text_dim): rescale to unit scale
            x = text.pooled.float() * math.sqrt(self.text_dim)
        return self.mlp(x)


class FiLM(nn.Module):
    """Feature-wise affine modulation x * (1 + gamma(e)) + beta(e) on channel dim 1.

    Zero-initialised so that an untrained D starts unconditional on this path and the prompt
    enters through the projection head first.
    """

    def __init__(self, hidden: int, channels: int):
        super().__init__()
        self.proj = nn.Linear(hidden, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(emb).chunk(2, dim=-1)
        shape = (x.shape[0], -1) + (1,) * (x.ndim - 2)
        return x * (1 + gamma.view(shape)) + beta.view(shape)


class ProjectionHead(nn.Module):
    """Pooled clip features (B, C) + prompt embedding (B, hidden) -> (B,) logits.

    score = psi(phi(h)) + <V e(y), phi(h)>: the inner-product term is the projection
    discriminator, which makes "does this clip match this prompt" a first-class feature.
    """

    def __init__(self, channels: int, hidden: int, dropout: float, use_proj: bool):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(channels, channels), nn.LeakyReLU(0.2), nn.Dropout(dropout))
        self.out = nn.Linear(channels, 1)
        self.embed = nn.Linear(hidden, channels, bias=False) if use_proj else None

    def forward(self, h: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        h = self.mlp(h)
        score = self.out(h).squeeze(-1)
        if self.embed is not None:
            score = score + (self.embed(emb) * h).sum(-1) / math.sqrt(h.shape[-1])
        return score


def frame_differences(x: torch.Tensor, dim: int) -> torch.Tensor:
    """x[t] - x[t-1] along ``dim`` with a zero difference at t = 0 (same shape as x)."""
    d = torch.diff(x, dim=dim)
    zero = torch.zeros_like(x.narrow(dim, 0, 1))
    return torch.cat([zero, d], dim=dim)


def coordinate_channels(h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """(2, H, W) maps of x and y in [-1, 1] (y = +1 at the bottom row, the floor)."""
    ys = torch.linspace(-1, 1, h, dtype=like.dtype, device=like.device)
    xs = torch.linspace(-1, 1, w, dtype=like.dtype, device=like.device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy])

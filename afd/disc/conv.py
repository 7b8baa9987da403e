"""The default discriminator backbone: a small factorised (2+1)D CNN trained from scratch.

Layout: clips (B, T, 3, H, W) in [-1, 1] become (B, C, T, H, W). A strided per-frame stem
halves the resolution; each stage is a residual block of a per-frame 3x3 spatial convolution
followed by a 1D temporal convolution over the same pixel (factorised, so temporal kernels
see motion at every scale for a third of a 3D convolution's cost), then FiLM from the prompt,
then a strided spatial downsampling (and, from ``temporal_stride_from`` on, 2x temporal
average pooling). Features are averaged over space and time and scored by a projection head.

No normalisation layers: batch statistics would let D compare teacher and student clips
inside a batch, and at this depth plain residual blocks train stably.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from afd.disc.common import FiLM, ProjectionHead, TextEmbed, coordinate_channels, frame_differences
from afd.disc.config import DiscConfig
from afd.text import TextEncoding


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2)


class FactorisedBlock(nn.Module):
    """Residual (1x3x3 spatial -> act -> kx1x1 temporal -> act) block on (B, C, T, H, W)."""

    def __init__(self, channels: int, temporal_kernel: int):
        super().__init__()
        self.spatial = nn.Conv3d(channels, channels, (1, 3, 3), padding=(0, 1, 1))
        self.temporal = nn.Conv3d(channels, channels, (temporal_kernel, 1, 1), padding=(temporal_kernel // 2, 0, 0))
        self.act = _act()
        # a small last layer keeps the residual stack near identity at init (stable from scratch)
        nn.init.normal_(self.temporal.weight, std=0.3 / (channels * temporal_kernel) ** 0.5)
        nn.init.zeros_(self.temporal.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.temporal(self.act(self.spatial(x))))


class ConvDiscriminatorBackbone(nn.Module):
    """(video (B, T, 3, H, W) in [-1, 1], text) -> (B,) float32 logits."""

    def __init__(self, config: DiscConfig):
        super().__init__()
        self.config = c = config
        use_text = c.text_conditioning != "none"
        self.use_film = c.text_conditioning in ("both", "film")
        in_ch = 3 + (3 * c.motion_order if c.motion_input else 0) + (2 if c.coord_input else 0)
        self.text = TextEmbed(c.hidden, c.text_pooling, c.text_dim) if use_text else None
        self.stem = nn.Conv3d(in_ch, c.width, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.blocks = nn.ModuleList()
        self.films = nn.ModuleList()
        self.downs = nn.ModuleList()
        ch = c.width
        for i in range(c.depth):
            self.blocks.append(FactorisedBlock(ch, c.temporal_kernel))
            self.films.append(FiLM(c.hidden, ch) if self.use_film else nn.Identity())
            if i < c.depth - 1:
                self.downs.append(nn.Conv3d(ch, 2 * ch, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)))
                ch *= 2
        self.out_channels = ch
        self.act = _act()
        self.head = ProjectionHead(ch, c.hidden, c.dropout, use_proj=c.text_conditioning in ("both", "proj"))

    def features(self, video: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        """(B, T, 3, H, W) -> pooled clip features (B, C_out)."""
        c = self.config
        x = video.permute(0, 2, 1, 3, 4)  # (B, 3, T, H, W)
        parts = [x]
        if c.motion_input:
            parts.append(frame_differences(x, dim=2))
            if c.motion_order == 2:
                parts.append(frame_differences(parts[-1], dim=2))
        if c.coord_input:
            b, _, t, h, w = x.shape
            parts.append(coordinate_channels(h, w, x)[None, :, None].expand(b, 2, t, h, w))
        x = self.act(self.stem(torch.cat(parts, dim=1)))
        for i, block in enumerate(self.blocks):
            x = block(x)
            if self.use_film:
                x = self.films[i](x, emb)
            if i < len(self.downs):
                x = self.act(self.downs[i](x))
                if i >= c.temporal_stride_from and x.shape[2] >= 2:
                    x = F.avg_pool3d(x, (2, 1, 1), ceil_mode=True)
        return x.mean(dim=(2, 3, 4))

    def forward(self, video: torch.Tensor, text: TextEncoding) -> torch.Tensor:
        emb = self.text(text) if self.text is not None else None
        return self.head(self.features(video, emb), emb).float()

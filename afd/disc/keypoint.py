"""A trajectory discriminator backbone: D sees only where learned keypoints are in each frame.

Layout: a per-frame CNN at full resolution (prompt FiLM after its first layer, so it can look
for the prompt's object) ends in K heatmaps; a spatial softmax turns each into an expected
(x, y) position (soft-argmax). The head sees, per keypoint, the positions of every frame and
their first and second differences (velocity, acceleration, in pixels per frame) - nothing else
of the pixels - and scores that trajectory with the prompt through the shared projection head.

Why: the from-scratch conv D separates teacher from student clips almost perfectly, yet its
ranking of the student's own rollouts is unrelated to their physics (the `afd probe-disc` runs in
reports/discriminator/report.md, held-out `fidelity` <= 0.09): it keys on a rendering signature
every rollout shares. Physics is a property of the trajectory; a head that can only read
trajectories cannot key on texture, and jitter, wrong curvature and missing bounces are exactly
what it can see. It stays black-box: nothing of the world's simulator or evaluator is used, only
pixels.
"""

from __future__ import annotations

import torch
from torch import nn

from afd.disc.common import FiLM, ProjectionHead, TextEmbed, coordinate_channels
from afd.disc.config import DiscConfig
from afd.text import TextEncoding


class KeypointDiscriminatorBackbone(nn.Module):
    """(video (B, T, 3, H, W) in [-1, 1], text) -> (B,) float32 logits."""

    def __init__(self, config: DiscConfig):
        super().__init__()
        self.config = c = config
        use_text = c.text_conditioning != "none"
        in_ch = 3 + (2 if c.coord_input else 0)
        self.text = TextEmbed(c.hidden, c.text_pooling, c.text_dim) if use_text else None
        self.conv1 = nn.Conv2d(in_ch, c.width, 3, padding=1)
        self.film = FiLM(c.hidden, c.width) if c.text_conditioning in ("both", "film") else None
        self.conv2 = nn.Conv2d(c.width, c.width, 3, padding=1)
        self.heat = nn.Conv2d(c.width, c.keypoints, 1)
        # a learned sharpness per keypoint: a flat softmax would average the object with the background
        self.log_sharpness = nn.Parameter(torch.zeros(c.keypoints))
        self.act = nn.LeakyReLU(0.2)
        T, K = c.frames, c.keypoints
        traj = K * 2 * (T + (T - 1) + (T - 2))  # positions, velocities, accelerations
        self.trunk = nn.Sequential(nn.Linear(traj, c.hidden * 2), nn.LeakyReLU(0.2),
                                   nn.Linear(c.hidden * 2, c.hidden * 2), nn.LeakyReLU(0.2))
        self.head = ProjectionHead(c.hidden * 2, c.hidden, c.dropout, use_proj=c.text_conditioning in ("both", "proj"))

    def keypoints(self, video: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        """(B, T, 3, H, W) -> (B, T, K, 2) soft-argmax positions in pixels (x, y), origin top-left."""
        c = self.config
        B, T, _, H, W = video.shape
        x = video.reshape(B * T, 3, H, W)
        if c.coord_input:
            x = torch.cat([x, coordinate_channels(H, W, x)[None].expand(B * T, 2, H, W)], dim=1)
        x = self.act(self.conv1(x))
        if self.film is not None:
            x = self.film(x, emb.repeat_interleave(T, dim=0))
        x = self.act(self.conv2(x))
        logits = self.heat(x).flatten(2) * self.log_sharpness.exp()[None, :, None]  # (BT, K, HW)
        p = logits.float().softmax(-1)
        ys, xs = torch.meshgrid(torch.arange(H, dtype=p.dtype, device=p.device),
                                torch.arange(W, dtype=p.dtype, device=p.device), indexing="ij")
        pos = torch.stack([(p * xs.flatten()).sum(-1), (p * ys.flatten()).sum(-1)], dim=-1)  # (BT, K, 2)
        return pos.view(B, T, c.keypoints, 2)

    def forward(self, video: torch.Tensor, text: TextEncoding) -> torch.Tensor:
        emb = self.text(text) if self.text is not None else None
        pos = self.keypoints(video, emb)  # pixels
        c = self.config
        centre = (torch.tensor([c.size, c.size], dtype=pos.dtype, device=pos.device) - 1) / 2
        vel = torch.diff(pos, dim=1)
        acc = torch.diff(vel, dim=1)
        # positions scaled to about [-1, 1]; velocity and acceleration stay in pixels per frame
        # (per frame^2): gravity is ~0.5 px/frame^2 here, so unit scale without rescaling
        feats = torch.cat([((pos - centre) / centre).flatten(1), vel.flatten(1), acc.flatten(1)], dim=1)
        return self.head(self.trunk(feats), emb).float()

"""Anti-aliased renderer: object centres -> video frames.

Coverage is analytic: for a ball, ``clamp(R - d + 1/2, 0, 1)`` with ``d`` the distance from
the pixel centre (symmetric about the centre, so the coverage-weighted centroid is the true
centre); for an axis-aligned square, the exact product of the per-axis pixel overlaps.
"""

from __future__ import annotations

import torch


def render(
    cx: torch.Tensor,
    cy: torch.Tensor,
    radius: torch.Tensor,
    is_square: torch.Tensor,
    color: torch.Tensor,
    background: torch.Tensor,
    size: int,
) -> torch.Tensor:
    """Render B clips of N frames.

    cx, cy: (B, N) centres in frame heights; radius: (B,) in frame heights; is_square: (B,)
    bool; color, background: (B, 3) RGB in [0, 1]. Returns (B, N, 3, size, size) float32 in
    [-1, 1].
    """
    B, N = cx.shape
    px = cx.float() * size  # (B, N) centres in pixels
    py = cy.float() * size
    R = (radius.float() * size).view(B, 1, 1, 1)
    # Coverage is zero beyond R + 1/2 from the centre, so compute it in a K x K window around
    # each centre (clamped inside the frame) and scatter: ~15x less work than full frames.
    K = min(size, int(torch.ceil(2 * R.max() + 2).item()))
    ar = torch.arange(K)
    x0 = (px - K / 2).floor().clamp(0, size - K).long()  # (B, N)
    y0 = (py - K / 2).floor().clamp(0, size - K).long()
    dx = (x0[..., None] + ar + 0.5) - px[..., None]  # (B, N, K)
    dy = (y0[..., None] + ar + 0.5) - py[..., None]
    d = torch.sqrt(dy[..., :, None] ** 2 + dx[..., None, :] ** 2)  # (B, N, K, K)
    a_ball = (R - d + 0.5).clamp_(0, 1)
    # Square: exact overlap of the pixel [x-1/2, x+1/2] with [c-R, c+R] per axis (R >= 1/2).
    ox = (R[..., 0] + 0.5 - dx.abs()).clamp(0, 1)
    oy = (R[..., 0] + 0.5 - dy.abs()).clamp(0, 1)
    a_sq = oy[..., :, None] * ox[..., None, :]
    a_win = torch.where(is_square.view(-1, 1, 1, 1), a_sq, a_ball)
    alpha = torch.zeros(B, N, size, size)
    bi = torch.arange(B).view(B, 1, 1, 1)
    ni = torch.arange(N).view(1, N, 1, 1)
    rows = (y0[..., None] + ar).view(B, N, K, 1)
    cols = (x0[..., None] + ar).view(B, N, 1, K)
    alpha[bi, ni, rows, cols] = a_win
    col = (color.float() * 2 - 1).view(B, 1, 3, 1, 1)
    bg = (background.float() * 2 - 1).view(B, 1, 3, 1, 1)
    return torch.addcmul(bg, alpha[:, :, None], col - bg)

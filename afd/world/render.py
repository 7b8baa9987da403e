"""Anti-aliased renderer: object states -> video frames.

Coverage is analytic: for a ball, ``clamp(R - d + 1/2, 0, 1)`` with ``d`` the distance from
the pixel centre (symmetric about the centre, so the coverage-weighted centroid is the true
centre); for an axis-aligned square, the exact product of the per-axis pixel overlaps.

The same function draws the world's clips and decodes the state student's latents
(``afd.world.state_codec``), so the two draw identically. It is differentiable in every
continuous input (centre, radius, shape mix, colours), which the GAN and DMD baselines need when
they backpropagate through a state student's decoder.
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

    cx, cy: (B, N) centres in frame heights; radius: (B,) or (B, N) in frame heights; is_square:
    (B,) or (B, N), bool or a float mix in [0, 1] (0 = ball, 1 = square, between: the blend of the
    two coverages); color, background: (B, 3) or (B, N, 3) RGB in [0, 1]. Returns
    (B, N, 3, size, size) float32 in [-1, 1].
    """
    B, N = cx.shape

    def per_frame(x: torch.Tensor, *trail: int) -> torch.Tensor:
        """(B, *trail) per clip or (B, N, *trail) per frame -> (B, N, *trail) float."""
        x = x.float()
        if tuple(x.shape) == (B, *trail):
            return x[:, None].expand(B, N, *trail)
        if tuple(x.shape) != (B, N, *trail):
            raise ValueError(f"expected shape {(B, *trail)} or {(B, N, *trail)}, got {tuple(x.shape)}")
        return x

    px = cx.float() * size  # (B, N) centres in pixels
    py = cy.float() * size
    R = (per_frame(radius) * size).view(B, N, 1, 1)
    mix = per_frame(is_square).view(B, N, 1, 1)
    # Coverage is zero beyond R + 1/2 from the centre, so compute it in a K x K window around
    # each centre (clamped inside the frame) and scatter: ~15x less work than full frames.
    K = min(size, int(torch.ceil(2 * R.detach().max() + 2).item()))
    ar = torch.arange(K, device=cx.device)
    x0 = (px.detach() - K / 2).floor().clamp(0, size - K).long()  # (B, N)
    y0 = (py.detach() - K / 2).floor().clamp(0, size - K).long()
    dx = (x0[..., None] + ar + 0.5) - px[..., None]  # (B, N, K)
    dy = (y0[..., None] + ar + 0.5) - py[..., None]
    # The floor keeps the gradient finite where a pixel centre sits exactly on the object's
    # centre (coverage is 1 there whatever d is, so the value is unchanged).
    d = torch.sqrt((dy[..., :, None] ** 2 + dx[..., None, :] ** 2).clamp_min(1e-12))  # (B, N, K, K)
    a_ball = (R - d + 0.5).clamp(0, 1)
    # Square: exact overlap of the pixel [x-1/2, x+1/2] with [c-R, c+R] per axis (R >= 1/2).
    ox = (R[..., 0] + 0.5 - dx.abs()).clamp(0, 1)
    oy = (R[..., 0] + 0.5 - dy.abs()).clamp(0, 1)
    a_sq = oy[..., :, None] * ox[..., None, :]
    a_win = mix * a_sq + (1 - mix) * a_ball
    alpha = torch.zeros(B, N, size, size, dtype=a_win.dtype, device=a_win.device)
    bi = torch.arange(B, device=cx.device).view(B, 1, 1, 1)
    ni = torch.arange(N, device=cx.device).view(1, N, 1, 1)
    rows = (y0[..., None] + ar).view(B, N, K, 1)
    cols = (x0[..., None] + ar).view(B, N, 1, K)
    alpha = alpha.index_put((bi, ni, rows, cols), a_win)
    col = (per_frame(color, 3) * 2 - 1).view(B, N, 3, 1, 1)
    bg = (per_frame(background, 3) * 2 - 1).view(B, N, 3, 1, 1)
    return torch.addcmul(bg, alpha[:, :, None], col - bg)

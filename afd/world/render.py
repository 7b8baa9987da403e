"""Anti-aliased renderer: object states -> video frames.

Coverage is analytic: for a ball, ``clamp(R - d + 1/2, 0, 1)`` with ``d`` the distance from
the pixel centre (symmetric about the centre, so the coverage-weighted centroid is the true
centre); for an axis-aligned square, the exact product of the per-axis pixel overlaps.

The same function draws the world's clips and decodes the state student's latents
(``afd.world.state_codec``), so the two draw identically. It is differentiable in every
continuous input (centre, radius, shape mix, colours), which the GAN and DMD baselines need when
they backpropagate through a state student's decoder.

The stylised ("cartoon") rendering adds three strengths in [0, 1], each 0 for the plain look
(docs/style.md):

- ``outline``: a band of width ``OUTLINE_WIDTH`` inside the object's edge blends toward the dark
  ``OUTLINE_RGB`` (the object's extent is unchanged, so its coverage and centroid are the plain ones);
- ``shading``: the fill darkens linearly from the object's top to its bottom, by ``SHADE_DEPTH``
  at the bottom (lit from above);
- ``gradient``: the background lightens toward white by ``GRADIENT_TOP`` at the frame's top and
  ``GRADIENT_BOTTOM`` at its bottom, linearly in y.

Every term is a coverage times a colour, so the stylised frame is as differentiable as the plain one.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

OUTLINE_WIDTH = 0.035  # frame heights (1.1 px at 32x32)
OUTLINE_RGB = (0.08, 0.08, 0.08)
SHADE_DEPTH = 0.3
GRADIENT_TOP, GRADIENT_BOTTOM = 0.6, 0.25


class Style(NamedTuple):
    """Strengths of the cartoon look, each (B,) or (B, N) in [0, 1] (0: plain)."""

    outline: torch.Tensor
    shading: torch.Tensor
    gradient: torch.Tensor


def background_rows(background: torch.Tensor, gradient: torch.Tensor, size: int) -> torch.Tensor:
    """The background colour of each pixel row: background (..., 3) in [0, 1] and gradient (...)
    strength -> (..., size, 3) in [0, 1]; row centres at (i + 1/2) / size frame heights."""
    y = (torch.arange(size, device=background.device, dtype=torch.float32) + 0.5) / size
    lift = GRADIENT_TOP + (GRADIENT_BOTTOM - GRADIENT_TOP) * y  # (size,)
    amount = gradient.float()[..., None, None] * lift[:, None]  # (..., size, 1)
    bg = background.float()[..., None, :]
    return bg + amount * (1 - bg)


def _per_frame(x: torch.Tensor, B: int, N: int, *trail: int) -> torch.Tensor:
    """(B, *trail) per clip or (B, N, *trail) per frame -> (B, N, *trail) float."""
    x = x.float()
    if tuple(x.shape) == (B, *trail):
        return x[:, None].expand(B, N, *trail)
    if tuple(x.shape) != (B, N, *trail):
        raise ValueError(f"expected shape {(B, *trail)} or {(B, N, *trail)}, got {tuple(x.shape)}")
    return x


class Layers(NamedTuple):
    """What a frame is composed from: ``alpha`` (B, N, size, size), the object's coverage; ``inner``
    (B, N, size, size), the coverage of the object shrunk by ``OUTLINE_WIDTH`` (None unless asked);
    ``depth`` (B, N, size, 1), 0 at the object's top edge and 1 at its bottom edge per pixel row
    (None unless asked)."""

    alpha: torch.Tensor
    inner: torch.Tensor | None
    depth: torch.Tensor | None


def layers(cx: torch.Tensor, cy: torch.Tensor, radius: torch.Tensor, is_square: torch.Tensor, size: int,
           styled: bool = False) -> Layers:
    """The coverages ``render`` composes (arguments as in ``render``); ``styled`` adds ``inner`` and
    ``depth``."""
    B, N = cx.shape
    px = cx.float() * size  # (B, N) centres in pixels
    py = cy.float() * size
    R = (_per_frame(radius, B, N) * size).view(B, N, 1, 1)
    mix = _per_frame(is_square, B, N).view(B, N, 1, 1)
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

    def coverage(R: torch.Tensor) -> torch.Tensor:
        """(B, N, K, K) coverage of the shape of radius (half side) R (B, N, 1, 1) px."""
        a_ball = (R - d + 0.5).clamp(0, 1)
        # Square: exact overlap of the pixel [x-1/2, x+1/2] with [c-R, c+R] per axis (R >= 1/2).
        ox = (R[..., 0] + 0.5 - dx.abs()).clamp(0, 1)
        oy = (R[..., 0] + 0.5 - dy.abs()).clamp(0, 1)
        a_sq = oy[..., :, None] * ox[..., None, :]
        return mix * a_sq + (1 - mix) * a_ball

    bi = torch.arange(B, device=cx.device).view(B, 1, 1, 1)
    ni = torch.arange(N, device=cx.device).view(1, N, 1, 1)
    rows = (y0[..., None] + ar).view(B, N, K, 1)
    cols = (x0[..., None] + ar).view(B, N, 1, K)

    def scatter(win: torch.Tensor) -> torch.Tensor:
        """(B, N, K, K) window values -> (B, N, size, size) frames, zero outside the window."""
        full = torch.zeros(B, N, size, size, dtype=win.dtype, device=win.device)
        return full.index_put((bi, ni, rows, cols), win)

    alpha = scatter(coverage(R))
    if not styled:
        return Layers(alpha, None, None)
    inner = scatter(coverage((R - OUTLINE_WIDTH * size).clamp_min(0.5)))
    ys = torch.arange(size, device=cx.device, dtype=torch.float32) + 0.5
    depth = ((ys.view(1, 1, size, 1) - (py.view(B, N, 1, 1) - R)) / (2 * R)).clamp(0, 1)
    return Layers(alpha, inner, depth)


def compose(lay: Layers, color: torch.Tensor, background: torch.Tensor, style: Style | None) -> torch.Tensor:
    """Frames from their layers: color, background (B, N, 3) in [0, 1]; style strengths (B, N) or
    None -> (B, N, 3, size, size) in [-1, 1]."""
    B, N, size = lay.alpha.shape[:3]
    col = (color.float() * 2 - 1).view(B, N, 3, 1, 1)
    if style is None:
        bg = (background.float() * 2 - 1).view(B, N, 3, 1, 1)
        return torch.addcmul(bg, lay.alpha[:, :, None], col - bg)
    outline, shading, gradient = (x.float().view(B, N, 1, 1) for x in style)
    fill = color.float().view(B, N, 3, 1, 1) * (1 - shading * SHADE_DEPTH * lay.depth)[:, :, None]  # (B, N, 3, size, 1)
    ink = torch.tensor(OUTLINE_RGB, device=col.device).view(1, 1, 3, 1, 1)
    band = fill + outline[:, :, None] * (ink - fill)
    bg = background_rows(background, gradient[..., 0, 0], size).transpose(2, 3)[..., None]  # (B, N, 3, size, 1)
    out = bg + lay.alpha[:, :, None] * (band - bg) + lay.inner[:, :, None] * (fill - band)
    return out * 2 - 1


def render(
    cx: torch.Tensor,
    cy: torch.Tensor,
    radius: torch.Tensor,
    is_square: torch.Tensor,
    color: torch.Tensor,
    background: torch.Tensor,
    size: int,
    style: Style | None = None,
) -> torch.Tensor:
    """Render B clips of N frames.

    cx, cy: (B, N) centres in frame heights; radius: (B,) or (B, N) in frame heights; is_square:
    (B,) or (B, N), bool or a float mix in [0, 1] (0 = ball, 1 = square, between: the blend of the
    two coverages); color, background: (B, 3) or (B, N, 3) RGB in [0, 1]; style: the cartoon
    strengths (module docstring), each (B,) or (B, N), None for the plain look. Returns
    (B, N, 3, size, size) float32 in [-1, 1].
    """
    B, N = cx.shape
    lay = layers(cx, cy, radius, is_square, size, styled=style is not None)
    if style is not None:
        style = Style(*(_per_frame(x, B, N) for x in style))
    return compose(lay, _per_frame(color, B, N, 3), _per_frame(background, B, N, 3), style)

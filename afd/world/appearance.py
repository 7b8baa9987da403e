"""Reading the cartoon look back from pixels, given where the object is.

The stylised frame (``afd.world.render``) is linear in the background gradient and nearly linear
in the fill colour and the outline and shading strengths, so with the object's coverages known
(``layers``) they follow from least squares. The state codec's encoder recovers a 13-channel
state with these (``afd.world.state_codec``), and the style measures score a clip with them
(``afd.eval.style``): one reading of the look, used on both sides.
"""

from __future__ import annotations

import torch

from afd.world.render import GRADIENT_BOTTOM, GRADIENT_TOP, OUTLINE_RGB, SHADE_DEPTH, Layers

_TINY = 1e-8


def fit_gradient(top: torch.Tensor, bottom: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The background colour and gradient strength from the colours of the frame's top and bottom
    pixel rows: top, bottom (..., 3) in [0, 1] -> (background (..., 3) in [0, 1], strength (...),
    0 for a flat background, 1 for the cartoon one; unclamped, so a measure can see an overshoot).
    Exact on rendered rows (``background_rows``)."""
    lift_top = GRADIENT_TOP + (GRADIENT_BOTTOM - GRADIENT_TOP) * (0.5 / size)
    lift_bottom = GRADIENT_TOP + (GRADIENT_BOTTOM - GRADIENT_TOP) * ((size - 0.5) / size)
    q = (top - bottom) / (lift_top - lift_bottom)  # strength * (1 - background), per channel
    background = (top - lift_top * q).clamp(0, 1)
    room = 1 - background
    strength = (q * room).sum(-1) / (room * room).sum(-1).clamp_min(_TINY)
    return background, strength


def fit_look(frames: torch.Tensor, lay: Layers, bg_rows: torch.Tensor, iters: int = 8,
             start: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None):
    """The fill colour and the outline and shading strengths of each frame, given its layers.

    frames: (N, 3, H, W) in [0, 1]; lay: ``layers(..., styled=True)`` of the same N frames laid out
    as (N, 1, ...); bg_rows: (N, H, 3) in [0, 1]. Returns (fill (N, 3), outline (N,), shading (N,));
    the strengths are unclamped, about 0 for the plain look and 1 for the cartoon one, NaN in a
    frame without the object. What the object adds to the background,
    ``fill (1 - shading k depth) (alpha - band outline) + outline band ink`` (band: the outline
    band's coverage), is bilinear in the five unknowns: Gauss-Newton from the middle of the range,
    or from ``start`` (a previous fit's (fill, outline, shading)).
    """
    a, a_in = lay.alpha[:, 0], lay.inner[:, 0]  # (N, H, W)
    n = len(frames)
    D = lay.depth[:, 0].expand_as(a).reshape(n, 1, -1)  # (N, 1, P)
    bg = bg_rows.permute(0, 2, 1)[..., None]  # (N, 3, H, 1)
    y = (frames - bg * (1 - a[:, None])).reshape(n, 3, -1)  # what the object adds, (N, 3, P)
    e = (a - a_in).reshape(n, 1, -1)  # outline band coverage
    a = a.reshape(n, 1, -1)
    ink = torch.tensor(OUTLINE_RGB, device=frames.device).view(1, 3, 1)
    k = SHADE_DEPTH
    if start is None:
        p = torch.full((n, 5), 0.5).to(frames)  # fill rgb, outline, shading
    else:
        p = torch.cat([start[0], start[1][:, None], start[2][:, None]], 1).to(frames)
    eye = torch.eye(5, device=frames.device, dtype=frames.dtype)
    for _ in range(iters):
        F, so, sh = p[:, :3, None], p[:, 3, None, None], p[:, 4, None, None]
        lit = 1 - sh * k * D  # (N, 1, P)
        cov = a - e * so
        res = F * lit * cov + so * e * ink - y  # (N, 3, P)
        J = torch.zeros(n, 3, y.shape[-1], 5, dtype=frames.dtype, device=frames.device)
        for c in range(3):
            J[:, c, :, c] = (lit * cov)[:, 0]
        J[..., 3] = (-F * lit * e + e * ink)
        J[..., 4] = (-F * k * D * cov)
        J = J.reshape(n, -1, 5)
        JtJ = J.transpose(1, 2) @ J + 1e-6 * eye
        p = p - torch.linalg.solve(JtJ, J.transpose(1, 2) @ res.reshape(n, -1, 1))[..., 0]
    empty = a.sum((1, 2)) < 0.25
    nan = torch.full((n,), float("nan"), dtype=frames.dtype, device=frames.device)
    return p[:, :3].clamp(0, 1), torch.where(empty, nan, p[:, 3]), torch.where(empty, nan, p[:, 4])

"""The state codec: a frame's latent is the state of the one object in it (docs/state-student.md).

Latent channels (each frame is one ``(STATE_CHANNELS, 1, 1)`` token), scaled so that every channel
spans about [-2, 2] and a pixel of motion is a sizeable step:

====  =========================  ===========================================================
ch    what                       latent value
====  =========================  ===========================================================
0, 1  centre x, y                ``(c - 0.5) * POS_GAIN``, c in frame heights (y downward)
2     radius (half side)         ``(r - RADIUS_MID) / RADIUS_HALF``: the world's small / large
                                 sizes (0.07 / 0.12) sit at -1 / +1
3     shape                      -1 ball, +1 square (between: a blend of the two coverages)
4-6   object colour              RGB in [-1, 1], the pixel value of a fully covered pixel
7-9   background colour          RGB in [-1, 1]
10    outline strength           ``2 s - 1``: -1 plain, +1 the cartoon outline (styled states only)
11    shading strength           the same scale
12    background gradient        the same scale
====  =========================  ===========================================================

A styled student (``channels: 13``) draws the cartoon look (``afd.world.render``) to the extent
its last three channels say, so it can express the second domain without being told the style: it
must produce the strengths from the prompt. A 10-channel student always draws the plain look.

``decode`` draws with the world's own anti-aliased renderer (``afd.world.render``), which is
differentiable in every channel, so the GAN and DMD baselines can backpropagate through it.
``encode`` recovers the state from pixels of any source (a teacher's clips after resampling to
the student format, the student's own decodes): background from the border, colour from the most
distinct pixel, coverage by projecting each pixel onto the object-background colour axis, centre
and size from the coverage moments, the shape by redrawing both candidates, then a few
Gauss-Newton steps of the renderer against the frame (which also places objects cut by the frame
edge). A frame with no visible object gets a position just outside the border it left through,
so it decodes to an empty frame too.
"""

from __future__ import annotations

import numpy as np
import torch

from afd.world.appearance import fit_gradient, fit_look
from afd.world.render import Style, background_rows, compose, layers, render

STATE_CHANNELS = 10
STYLED_CHANNELS = 13  # the state plus the three cartoon strengths
POS_GAIN = 4.0
RADIUS_MID, RADIUS_HALF = 0.095, 0.025
RADIUS_RANGE = (0.01, 0.5)  # what decode clamps a radius to, frame heights
MIN_AREA = 0.25  # coverage (px^2) below which a frame holds no object
BORDER_TOUCH = 0.02  # coverage on the border pixels above which the object is cut by the frame


def _state_to_params(z: torch.Tensor):
    """(B, T, 10 | 13, 1, 1) latents -> renderer inputs, clamped to drawable values (the style None
    for 10 channels, else its strengths (B, T) in [0, 1])."""
    s = z[..., 0, 0].float()
    style = None
    if s.shape[-1] == STYLED_CHANNELS:
        style = Style(*(((s[..., c] + 1) / 2).clamp(0, 1) for c in (10, 11, 12)))
    cx = 0.5 + s[..., 0] / POS_GAIN
    cy = 0.5 + s[..., 1] / POS_GAIN
    radius = (RADIUS_MID + RADIUS_HALF * s[..., 2]).clamp(*RADIUS_RANGE)
    mix = ((s[..., 3] + 1) / 2).clamp(0, 1)
    color = ((s[..., 4:7] + 1) / 2).clamp(0, 1)
    background = ((s[..., 7:10] + 1) / 2).clamp(0, 1)
    return cx, cy, radius, mix, color, background, style


def params_to_state(cx, cy, radius, mix, color, background, style: Style | None = None) -> torch.Tensor:
    """Renderer inputs (centres (B, T) in frame heights, radius (B, T), mix (B, T) in [0, 1],
    colours (B, T, 3) in [0, 1], style strengths (B, T) in [0, 1] or None) -> latents
    (B, T, 10, 1, 1), or (B, T, 13, 1, 1) with a style."""
    parts = [((cx - 0.5) * POS_GAIN)[..., None], ((cy - 0.5) * POS_GAIN)[..., None],
             ((radius - RADIUS_MID) / RADIUS_HALF)[..., None], (2 * mix - 1)[..., None],
             2 * color - 1, 2 * background - 1]
    if style is not None:
        parts += [(2 * x.to(cx.dtype) - 1)[..., None] for x in style]
    return torch.cat(parts, dim=-1)[..., None, None].float()


class StateCodec:
    """Pixels (B, T, 3, size, size) in [-1, 1] <-> object states (B, T, 10, 1, 1)."""

    name = "state"

    @classmethod
    def for_student(cls, config) -> StateCodec:
        """The codec of a state student: one (STATE_CHANNELS or STYLED_CHANNELS, 1, 1) token per
        frame, decoded to ``video_size`` square frames."""
        got = (config.channels, config.height, config.width, config.patch)
        if got not in ((STATE_CHANNELS, 1, 1, 1), (STYLED_CHANNELS, 1, 1, 1)) or config.video_size < 1:
            raise ValueError(f"codec 'state' needs channels, height, width, patch = ({STATE_CHANNELS} or "
                             f"{STYLED_CHANNELS} with the cartoon strengths), 1, 1, 1 and video_size >= 1 "
                             f"(the decoded frame side), got {got} and video_size {config.video_size}")
        if config.refine:
            raise ValueError("refine (a pixel refinement head) does not apply to codec 'state'")
        return cls(config.video_size, channels=config.channels)

    def __init__(self, size: int = 32, gn_steps: int = 4, channels: int = STATE_CHANNELS):
        if channels not in (STATE_CHANNELS, STYLED_CHANNELS):
            raise ValueError(f"a state has {STATE_CHANNELS} channels ({STYLED_CHANNELS} with the cartoon "
                             f"strengths), got {channels}")
        self.size = size
        self.gn_steps = gn_steps
        self.channels = channels

    # ----- decode: the renderer -----
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, T, C, 1, 1) -> (B, T, 3, size, size) float32 in [-1, 1]; differentiable (C: the codec's
        channels)."""
        if latent.dim() != 5 or tuple(latent.shape[2:]) != (self.channels, 1, 1):
            raise ValueError(f"state latents must be (B, T, {self.channels}, 1, 1), got {tuple(latent.shape)}")
        cx, cy, radius, mix, color, background, style = _state_to_params(latent)
        return render(cx, cy, radius, mix, color, background, self.size, style=style)

    def project(self, latent: torch.Tensor) -> torch.Tensor:
        """The drawable latent nearest to ``latent`` (the clamps ``decode`` applies), same shape."""
        return params_to_state(*_state_to_params(latent))

    # ----- encode: analysis by synthesis -----
    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, size, size) in [-1, 1] -> (B, T, C, 1, 1) states (see the module docstring)."""
        if video.dim() != 5 or video.shape[2] != 3 or tuple(video.shape[3:]) != (self.size, self.size):
            raise ValueError(f"the state codec encodes (B, T, 3, {self.size}, {self.size}) clips in [-1, 1] "
                             f"(resample to the student format first), got {tuple(video.shape)}")
        if self.channels == STYLED_CHANNELS:
            return encode_styled(video, self.size, self.gn_steps)
        return self._encode_plain(video)

    def _encode_plain(self, video: torch.Tensor) -> torch.Tensor:
        B, T = video.shape[:2]
        H = self.size
        x = (video.float().clamp(-1, 1) + 1) / 2  # [0, 1]
        frames = x.flatten(0, 1)  # (N, 3, H, H)
        border = torch.cat([frames[:, :, 0], frames[:, :, -1], frames[:, :, :, 0], frames[:, :, :, -1]], dim=2)
        bg = border.median(dim=2).values  # (N, 3)
        diff = frames - bg[:, :, None, None]
        dist = diff.norm(dim=1).flatten(1)  # (N, H*H)
        peak, where = dist.max(dim=1)
        color = frames.flatten(2).gather(2, where.view(-1, 1, 1).expand(-1, 3, 1))[..., 0]  # (N, 3)
        # A frame whose most distinct pixel is not fully covered (the object cut by the edge)
        # takes the colour of its clip's most distinct frame: the object keeps its colour.
        peak_bt, color_bt = peak.view(B, T), color.view(B, T, 3)
        best = peak_bt.argmax(dim=1)
        clip_color = color_bt[torch.arange(B, device=best.device), best]  # (B, 3)
        weak = peak_bt < 0.97 * peak_bt.max(dim=1, keepdim=True).values
        color_bt = torch.where(weak[..., None], clip_color[:, None].expand(B, T, 3), color_bt)
        color = color_bt.reshape(-1, 3)
        axis = color - bg
        alpha = ((diff * axis[:, :, None, None]).sum(1) / axis.pow(2).sum(1).clamp_min(1e-8)[:, None, None]).clamp(0, 1)
        alpha = torch.where(axis.pow(2).sum(1)[:, None, None] > 1e-4, alpha, torch.zeros_like(alpha))
        area = alpha.flatten(1).sum(1)  # px^2
        visible = area > MIN_AREA
        centre = torch.arange(H, dtype=torch.float32, device=alpha.device) + 0.5
        a_sum = area.clamp_min(1e-8)
        cx = (alpha.sum(1) * centre).sum(1) / a_sum / H  # frame heights
        cy = (alpha.sum(2) * centre).sum(1) / a_sum / H
        cut = border_mass(alpha) > BORDER_TOUCH
        r_ball = (area / torch.pi - 1 / 12).clamp_min(0.25).sqrt() / H
        r_square = area.sqrt() / 2 / H

        def per_clip(v: torch.Tensor, use: torch.Tensor) -> torch.Tensor:
            """Median over a clip's frames where ``use`` (all visible frames if none): (B,)."""
            v, use, vis = v.view(B, T), use.view(B, T), visible.view(B, T)
            use = torch.where(use.any(1, keepdim=True), use, vis)
            filled = torch.where(use, v, torch.full_like(v, float("nan")))
            out = filled.nanmedian(dim=1).values
            return torch.where(torch.isnan(out), torch.full_like(out, RADIUS_MID), out)

        inside = visible & ~cut
        radii = {0.0: per_clip(r_ball, inside), 1.0: per_clip(r_square, inside)}
        # The shape: whichever candidate redraws the clip's uncut frames better.
        errs = {}
        for m, r in radii.items():
            fit = render(cx[:, None], cy[:, None], r.repeat_interleave(T)[:, None],
                         torch.full((B * T, 1), m, device=cx.device), color[:, None], bg[:, None], H)[:, 0]
            e = (fit - (2 * frames - 1)).pow(2).flatten(1).sum(1)
            errs[m] = torch.where(inside, e, torch.zeros_like(e)).view(B, T).sum(1)
        square = errs[1.0] < errs[0.0]  # (B,)
        mix = square.float().repeat_interleave(T)
        radius = torch.where(square, radii[1.0], radii[0.0]).repeat_interleave(T)

        target = 2 * frames - 1
        # The radius is the clip's: fit it freely (with the centre) on the clip's two largest uncut
        # frames (all of its visible frames are cut when a ball rolls along the floor: then its two
        # largest visible ones) and take the median.
        pool = torch.where(inside.view(B, T).any(1, keepdim=True), inside.view(B, T), visible.view(B, T))
        ranked = torch.where(pool, area.view(B, T),
                             torch.full((B, T), -1.0, device=area.device)).argsort(dim=1, descending=True)[:, :2]
        pick = torch.zeros(B, T, dtype=torch.bool, device=pool.device).scatter_(1, ranked, True) & pool
        _, _, r_fit = self._gauss_newton(target, cx, cy, radius, mix, color, bg, pick.flatten(), self.gn_steps, True)
        radius = per_clip(r_fit, pick.flatten()).repeat_interleave(T)
        # Then the centre of every visible frame the coverage centroid does not already redraw
        # exactly (frames cut by the edge, clips resampled from another resolution).
        fit = render(cx[:, None], cy[:, None], radius[:, None], mix[:, None], color[:, None], bg[:, None], H)[:, 0]
        off = (fit - target).abs().flatten(1).amax(1) > 1e-4
        cx, cy, _ = self._gauss_newton(target, cx, cy, radius, mix, color, bg, visible & off, 2 * self.gn_steps, False)
        cx, cy = _place_missing(cx.view(B, T), cy.view(B, T), radius.view(B, T), visible.view(B, T), H)
        return params_to_state(cx, cy, radius.view(B, T), mix.view(B, T), color.view(B, T, 3), bg.view(B, T, 3))

    def _gauss_newton(self, target, cx, cy, radius, mix, color, bg, which, steps: int, fit_radius: bool):
        """Refine per-frame centres (and radii) so the renderer reproduces ``target`` (N, 3, H, W)
        on the frames ``which`` (N,) bool; returns (cx, cy, radius), each (N,)."""
        H = self.size
        idx = torch.nonzero(which).squeeze(1)
        if not len(idx):
            return cx, cy, radius
        p = torch.stack([cx[idx], cy[idx]] + ([radius[idx]] if fit_radius else []), dim=1)
        tgt = target[idx].flatten(1)
        fixed = dict(mix=mix[idx], color=color[idx], bg=bg[idx])
        r_fixed = radius[idx]

        def draw(q: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            r = q[:, 2] if fit_radius else r_fixed[rows]
            out = render(q[:, :1], q[:, 1:2], r.clamp(*RADIUS_RANGE)[:, None], fixed["mix"][rows, None],
                         fixed["color"][rows, None], fixed["bg"][rows, None], H)
            return out.flatten(1)

        p = gauss_newton_fd(p, draw, tgt, steps)
        cx, cy, radius = cx.clone(), cy.clone(), radius.clone()
        cx[idx], cy[idx] = p[:, 0], p[:, 1]
        if fit_radius:
            radius[idx] = p[:, 2].clamp(*RADIUS_RANGE)
        return cx, cy, radius


def gauss_newton_fd(p: torch.Tensor, draw, target: torch.Tensor, steps: int, stop_when_exact: bool = True):
    """Gauss-Newton on per-frame parameters p (n, k) so that ``draw(q, rows)`` -> (len(rows), pixels)
    reproduces ``target`` (n, pixels); returns the refined p (a new tensor). Forward differences:
    coverage is piecewise linear in the parameters at this scale. With ``stop_when_exact``, frames
    already redrawn to 1e-5 take no further step."""
    p = p.clone()
    h = 2e-4  # frame heights
    eye = torch.eye(p.shape[1], device=p.device)
    active = torch.arange(len(p), device=p.device)
    for _ in range(steps):
        q = p[active]
        base = draw(q, active)
        res = base - target[active]
        if stop_when_exact:
            done = res.abs().amax(1) < 1e-5
            active, q, base, res = active[~done], q[~done], base[~done], res[~done]
            if not len(active):
                break
        J = torch.stack([(draw(q + h * e, active) - base) / h for e in eye], dim=2)  # (n, pixels, k)
        JtJ = J.transpose(1, 2) @ J + 1e-6 * eye
        step = torch.linalg.solve(JtJ, -(J.transpose(1, 2) @ res[..., None]))[..., 0]
        p[active] = q + step.clamp(-0.05, 0.05)
    return p


def border_mass(alpha: torch.Tensor) -> torch.Tensor:
    """Coverage on the one-pixel border of each frame: (N, H, W) -> (N,)."""
    inner = alpha[:, 1:-1, 1:-1].flatten(1).sum(1)
    return alpha.flatten(1).sum(1) - inner


def _place_missing(cx: torch.Tensor, cy: torch.Tensor, radius: torch.Tensor, visible: torch.Tensor, size: int):
    """Centres for frames without a visible object: beyond the border nearest to the closest
    visible frame's centre (above the frame when a clip shows no object at all), far enough that
    nothing is drawn. All (B, T)."""
    cx, cy = cx.clone(), cy.clone()
    B, T = cx.shape
    for b in torch.nonzero(~visible.all(1)).squeeze(1).tolist():
        seen = torch.nonzero(visible[b]).squeeze(1)
        for t in torch.nonzero(~visible[b]).squeeze(1).tolist():
            if not len(seen):
                cx[b, t], cy[b, t] = 0.5, -0.5
                continue
            j = int(seen[(seen - t).abs().argmin()])
            x, y = float(cx[b, j]), float(cy[b, j])
            off = float(radius[b, t]) + 1.0 / size
            # distance to the left, right, top and bottom borders
            gaps = [x, 1 - x, y, 1 - y]
            side = min(range(4), key=lambda i: gaps[i])
            if side == 0:
                x = -off
            elif side == 1:
                x = 1 + off
            elif side == 2:
                y = -off
            else:
                y = 1 + off
            cx[b, t], cy[b, t] = x, y
    return cx, cy


_FG = 0.12  # colour distance (RGB in [0, 1]) from the background gradient that counts as object


def encode_styled(video: torch.Tensor, size: int, gn_steps: int = 4) -> torch.Tensor:
    """(B, T, 3, size, size) in [-1, 1] -> (B, T, 13, 1, 1) states with the cartoon strengths.

    Analysis by synthesis with the stylised renderer: the background and its gradient from the top
    and bottom rows (``fit_gradient``, per clip); the object's mask (holes filled: the outline
    encloses a fill that shading can bring close to the background) gives each frame's centre and
    a first radius; then rounds of the look given the geometry (``fit_look``: fill, outline,
    shading) and a Gauss-Newton step of the centre and radius given the look, for a ball and for a
    square, keeping the shape that redraws the clip better. The radius, shape, colours and
    strengths are the clip's (medians over its frames with the object whole), and a last round
    refits the centres under them. A frame without the object is placed as in the plain encoder.
    On clean renders of random scenes: centres within about 0.003 frame heights, every pixel
    redrawn within 0.05 of [-1, 1]; a small object's shading strength trades off against its fill
    colour (error up to 0.2 in strength). Tolerances held by tests/test_style.py."""
    from scipy import ndimage

    B, T = video.shape[:2]
    H = size
    x = (video.float().clamp(-1, 1) + 1) / 2
    top = x[:, :, :, 0].permute(0, 2, 1, 3).reshape(B, 3, -1).median(-1).values
    bottom = x[:, :, :, -1].permute(0, 2, 1, 3).reshape(B, 3, -1).median(-1).values
    bg, grad = fit_gradient(top, bottom, H)
    grad = grad.clamp(0, 1)
    rows = background_rows(bg, grad, H).repeat_interleave(T, 0)  # (N, H, 3)
    frames = x.flatten(0, 1)  # (N, 3, H, H)
    N = len(frames)
    d = (frames - rows.permute(0, 2, 1)[..., None]).norm(dim=1)  # (N, H, H)
    mask = torch.from_numpy(np.stack([ndimage.binary_fill_holes(m) for m in (d > _FG).numpy()])).float()
    area = mask.sum((1, 2))  # px^2
    visible = area > MIN_AREA
    centre = torch.arange(H, dtype=torch.float32) + 0.5
    a_sum = area.clamp_min(1e-8)
    cx0 = (mask.sum(1) * centre).sum(1) / a_sum / H
    cy0 = (mask.sum(2) * centre).sum(1) / a_sum / H
    inside = visible & (border_mass(mask) == 0)
    bg_n = bg.repeat_interleave(T, 0)
    grad_n = grad.repeat_interleave(T, 0)

    def draw(cx, cy, r, mix, fill, so, sh, which):
        lay = layers(cx[:, None], cy[:, None], r.clamp(*RADIUS_RANGE)[:, None], mix[which, None], H, styled=True)
        style = Style(so[which, None], sh[which, None], grad_n[which, None])
        return (compose(lay, fill[which, None], bg_n[which, None], style)[:, 0] + 1) / 2

    def look(cx, cy, r, mix, start=None):
        lay = layers(cx[:, None], cy[:, None], r.clamp(*RADIUS_RANGE)[:, None], mix[:, None], H, styled=True)
        fill, so, sh = fit_look(frames, lay, rows, iters=8 if start is None else 2, start=start)
        return fill, so.nan_to_num(0.0), sh.nan_to_num(0.0)

    def refine(p, r_fixed, mix, fill, so, sh, which, steps):
        """Gauss-Newton on p (N, k): centre (k = 2, radius ``r_fixed``) or centre and radius (k = 3)
        of the frames ``which``; the rest of the drawing fixed."""
        idx = torch.nonzero(which).squeeze(1)
        if not len(idx):
            return p

        def render_q(q, rows):
            at = idx[rows]
            r = q[:, 2] if q.shape[1] == 3 else r_fixed[at]
            return draw(q[:, 0], q[:, 1], r, mix, fill, so, sh, at).flatten(1)

        out = p.clone()
        out[idx] = gauss_newton_fd(p[idx], render_q, frames[idx].flatten(1), steps, stop_when_exact=False)
        return out

    fits = {}
    for m in (0.0, 1.0):
        mix = torch.full((N,), m)
        r0 = (area.sqrt() / 2 if m else (area / torch.pi).sqrt()) / H
        p = torch.stack([cx0, cy0, r0.clamp(*RADIUS_RANGE)], 1)
        fit = None
        for _ in range(3 * gn_steps):
            fit = look(p[:, 0], p[:, 1], p[:, 2], mix, fit)
            p = refine(p, None, mix, *fit, visible, 1)
        fill, so, sh = look(p[:, 0], p[:, 1], p[:, 2], mix, fit)
        err = (draw(p[:, 0], p[:, 1], p[:, 2], mix, fill, so, sh, torch.arange(N)) - frames).pow(2).flatten(1).sum(1)
        err = torch.where(visible, err, torch.zeros_like(err)).view(B, T).sum(1)
        fits[m] = (p, fill, so, sh, err)
    square = fits[1.0][4] < fits[0.0][4]  # (B,)
    p, fill, so, sh = (torch.where(square.repeat_interleave(T).view(-1, *[1] * (a.dim() - 1)), b, a)
                       for a, b in zip(fits[0.0][:4], fits[1.0][:4]))
    mix = square.float().repeat_interleave(T)

    def per_clip(v: torch.Tensor) -> torch.Tensor:
        """Median over each clip's whole-object frames (its visible ones if none) -> (N, ...)."""
        use = torch.where(inside.view(B, T).any(1, keepdim=True), inside.view(B, T), visible.view(B, T))
        vv = v.view(B, T, -1)
        filled = torch.where(use[..., None], vv, torch.full_like(vv, float("nan")))
        med = filled.nanmedian(dim=1).values.nan_to_num(0.0)  # (B, k)
        return med.repeat_interleave(T, 0).view(v.shape)

    r = per_clip(p[:, 2]).clamp(*RADIUS_RANGE)
    fill, so, sh = per_clip(fill).clamp(0, 1), per_clip(so).clamp(0, 1), per_clip(sh).clamp(0, 1)
    p = refine(torch.stack([p[:, 0], p[:, 1]], 1), r, mix, fill, so, sh, visible, 2 * gn_steps)
    cx, cy = _place_missing(p[:, 0].view(B, T), p[:, 1].view(B, T), r.view(B, T), visible.view(B, T), H)
    style = Style(so.view(B, T), sh.view(B, T), grad.repeat_interleave(T).view(B, T))
    return params_to_state(cx, cy, r.view(B, T), mix.view(B, T), fill.view(B, T, 3),
                           bg_n.view(B, T, 3), style)

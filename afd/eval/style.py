"""Style adherence: how much of the cartoon look a clip of a stylised prompt shows, from pixels.

Three parts, each the strength of one element of the look read back from the pixels by least
squares (``afd.world.appearance``; 0 is the plain look, 1 the cartoon one), scored
``100 * max(0, 1 - |strength - 1|)`` so that missing and overdone both lose:

- ``outline``: how far the band of width ``OUTLINE_WIDTH`` inside the object's edge is darkened
  toward the outline ink (an outline of the wrong width reads as a partial strength);
- ``shading``: how far the fill darkens from the object's top to its bottom;
- ``gradient``: how far the background lightens from the bottom row to the top row.

The object's geometry is the tracked one (centroid; radius from the tracked area and the prompt's
shape). Outline and shading are fitted once over the pixels of every frame where the object is
found whole, not cut by the frame's edge (tracked area at least ``CUT_AREA`` of the prompt's
object's): one fill and two strengths per clip, since a small object's fill spans two or three
pixel rows. ``style_adherence`` is the mean of the three. On renders drawn at the eval
size the strengths come back to 1e-3; the world's own cartoon clips (rendered at 64x64 and
resampled) read about 96 and plain clips about 2 (docs/style.md, tests/test_style.py).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from afd.eval.general import expected_area
from afd.eval.tracker import Track
from afd.world.appearance import fit_gradient, fit_look
from afd.world.grammar import PromptAttrs
from afd.world.render import Layers, layers

STYLE_KEYS = ("style_adherence", "outline", "shading", "gradient")
CUT_AREA = 0.9  # a frame whose tracked area is under this share of the prompt's object's is cut by the edge


def strength_score(strength: float) -> float:
    """A measured strength as a 0-100 score: 100 at the cartoon strength 1, 0 at the plain 0 (or at 2)."""
    return 0.0 if not math.isfinite(strength) else 100.0 * max(0.0, 1.0 - abs(strength - 1.0))


def style_strengths(tr: Track, attrs: PromptAttrs) -> dict[str, float]:
    """The three measured strengths of one tracked clip (tracked with its prompt's style):
    {"outline", "shading", "gradient"}, about 0 for the plain look and 1 for the cartoon one;
    outline and shading are NaN when no frame shows the object clear of the border."""
    frames = torch.from_numpy(tr.frames / 255.0).float().permute(0, 3, 1, 2)  # (T, 3, H, W)
    T, _, H, W = frames.shape
    _, gradient = fit_gradient(frames[:, :, 0].permute(1, 0, 2).reshape(3, -1).median(1).values,
                               frames[:, :, -1].permute(1, 0, 2).reshape(3, -1).median(1).values, H)
    # A frame whose object is cut by the frame's edge shows less than the object's area.
    full = expected_area(attrs, H)
    clear = [t for t in range(T) if tr.found[t] and tr.n_objects[t] == 1 and tr.area[t] >= CUT_AREA * full]
    out = {"outline": float("nan"), "shading": float("nan"), "gradient": float(gradient)}
    if not clear:
        return out
    idx = torch.tensor(clear)
    square = attrs.object == "square"
    area = torch.from_numpy(tr.area[clear]).float()
    radius = (area.sqrt() / 2 if square else (area / math.pi).sqrt()) / H
    cx = torch.from_numpy(tr.cx[clear]).float()[:, None] / W
    cy = torch.from_numpy(tr.cy[clear]).float()[:, None] / H
    lay = layers(cx, cy, radius[:, None], torch.full((len(clear), 1), float(square)), H, styled=True)
    rows = tr.background_rows if tr.background_rows is not None else np.tile(tr.background, (H, 1))
    bg_rows = torch.from_numpy(rows / 255.0).float()[None]

    def side_by_side(x: torch.Tensor) -> torch.Tensor:
        """(n, C, H, W) frames -> (1, C, H, n W): the clip's frames as one wide frame."""
        return x.permute(1, 2, 0, 3).reshape(1, x.shape[1], H, -1)

    n = len(clear)
    wide = Layers(side_by_side(lay.alpha), side_by_side(lay.inner), side_by_side(lay.depth.expand(n, 1, H, W)))
    _, outline, shading = fit_look(side_by_side(frames[idx]), wide, bg_rows)
    out["outline"], out["shading"] = float(outline[0]), float(shading[0])
    return out


def style_scores(tr: Track, attrs: PromptAttrs) -> dict[str, float]:
    """``STYLE_KEYS`` of one tracked clip, each 0-100 (module docstring)."""
    parts = {k: strength_score(v) for k, v in style_strengths(tr, attrs).items()}
    return {"style_adherence": float(np.mean(list(parts.values()))), **parts}

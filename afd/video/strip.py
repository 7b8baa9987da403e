"""PNG strips: clips side by side, one row per clip, frames left to right, captions above."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from afd.video.core import Video
from afd.video.io import atomic_write_bytes


def _caption_lines(text: str, font, max_width: int, draw: ImageDraw.ImageDraw) -> list[str]:
    words, lines, cur = text.split(), [], ""
    for w in words:
        trial = f"{cur} {w}".strip()
        if draw.textlength(trial, font=font) <= max_width or not cur:
            cur = trial
        else:
            lines.append(cur)
            cur = w
    if cur:
        lines.append(cur)
    return lines


def save_strip(
    path: str | os.PathLike,
    videos: list[Video],
    captions: list[str] | None = None,
    n_frames: int = 8,
    cell: int = 64,
) -> Path:
    """Write a PNG grid: row i shows ``n_frames`` evenly spaced frames of ``videos[i]``, each
    scaled (nearest neighbour) to ``cell`` pixels high, with ``captions[i]`` above the row
    (wrapped to the row width; omitted when there is no caption)."""
    if not videos:
        raise ValueError("save_strip needs at least one video")
    if captions is not None and len(captions) != len(videos):
        raise ValueError(f"got {len(captions)} captions for {len(videos)} videos")
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = 12
    rows = []
    for i, v in enumerate(videos):
        frames = v.to_uint8()
        T, H, W, _ = frames.shape
        idx = np.linspace(0, T - 1, min(n_frames, T)).round().astype(int)
        cw = max(1, round(cell * W / H))
        tiles = [Image.fromarray(frames[j]).resize((cw, cell), Image.NEAREST) for j in idx]
        row_w = len(tiles) * (cw + 2)
        lines = _caption_lines(captions[i], font, row_w - 4, probe) if captions else []
        row = Image.new("RGB", (row_w, cell + 2 + line_h * len(lines)), (255, 255, 255))
        d = ImageDraw.Draw(row)
        for k, line in enumerate(lines):
            d.text((2, k * line_h), line, fill=(0, 0, 0), font=font)
        top = line_h * len(lines)
        for k, tile in enumerate(tiles):
            row.paste(tile, (k * (cw + 2), top))
        rows.append(row)
    width = max(r.width for r in rows)
    grid = Image.new("RGB", (width, sum(r.height + 4 for r in rows)), (255, 255, 255))
    y = 0
    for r in rows:
        grid.paste(r, (0, y))
        y += r.height + 4
    import io

    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)

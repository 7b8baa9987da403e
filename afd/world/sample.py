"""The world as a sampler: (prompt, seed, mode) -> a clip with its simulation record."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np
import torch

from afd.video.core import TEACHER_NATIVE, Video, VideoFormat
from afd.world.grammar import PLAIN, PromptAttrs, grammar, parse_prompt
from afd.world.physics import (
    LOOSE,
    MODES,
    Constants,
    InitialState,
    LooseSpec,
    draw_constants,
    draw_initial,
    object_radius,
    simulate,
)
from afd.world.render import Style, render

WORLD_VERSION = 1


@dataclass
class SimRecord:
    """Ground truth of one world clip. Positions in frame heights; times in seconds."""

    prompt: str
    seed: int
    mode: str
    centers: list[list[float]]  # per frame [x, y]
    radius: float
    color: list[int]  # RGB 0-255
    background: list[int]
    constants: dict
    floor_bounces: list[float]
    wall_bounces: list[float]
    fps: float
    style: str = PLAIN  # the rendering (afd.world.render); physics never depends on it

    def to_json(self) -> str:
        return json.dumps(asdict(self))


@dataclass
class WorldClip:
    video: Video
    record: SimRecord


def clip_rng(prompt: str, seed: int, stream: str) -> np.random.Generator:
    """A per-clip random stream: a function of (normalised prompt, seed, stream name) only.
    Initial conditions use the stream "initial" in every mode, so a real and a loose clip of the
    same (prompt, seed) start identically and differ only in their physical constants. The style is
    not part of the key: a stylised prompt's clip moves exactly as the plain prompt's."""
    key = json.dumps([WORLD_VERSION, parse_prompt(prompt).plain_text, int(seed), stream])
    digest = hashlib.sha256(key.encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def _rgb01(rgb) -> list[float]:
    return [c / 255.0 for c in rgb]


def style_strengths(styles: list[str]) -> Style | None:
    """The renderer's strengths for each clip's style name: None when every clip is plain (the plain
    renderer, bit for bit), else each strength (B,) float, 1 for "cartoon", 0 for plain."""
    if all(s == PLAIN for s in styles):
        return None
    on = torch.tensor([float(s != PLAIN) for s in styles])
    return Style(on, on, on)


def sample_world(
    prompts: list[str],
    seeds: list[int],
    mode: str = "real",
    fmt: VideoFormat = TEACHER_NATIVE,
    loose: LooseSpec = LOOSE,
) -> list[WorldClip]:
    """Simulate and render one clip per (prompt, seed), vectorised over the batch.

    ``fmt`` must be square. Deterministic: the same (prompt, seed, mode, fmt) gives the same
    clip bit for bit, whatever else is in the batch.
    """
    if mode not in MODES:
        raise ValueError(f"unknown physics mode {mode!r}; valid modes: {', '.join(MODES)}")
    if len(prompts) != len(seeds):
        raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds")
    if fmt.height != fmt.width:
        raise ValueError(f"the world renders square frames, got {fmt.height}x{fmt.width}")
    if not prompts:
        return []
    g = grammar()
    attrs: list[PromptAttrs] = [parse_prompt(p) for p in prompts]
    inits, consts = [], []
    for a, p, s in zip(attrs, prompts, seeds):
        inits.append(draw_initial(a, clip_rng(p, s, "initial")))
        # General-domain motions are identical in both modes (constants unused there).
        physics = a.domain == "physics"
        consts.append(draw_constants(mode, clip_rng(p, s, f"constants-{mode}"), loose) if physics else Constants())
    ini = np.array(inits, dtype=np.float64)
    radius = np.array([object_radius(a) for a in attrs])
    ballistic = np.array([a.domain == "physics" for a in attrs])
    traj = simulate(
        InitialState(ini[:, 0], ini[:, 1], ini[:, 2], ini[:, 3]),
        radius=radius,
        g=np.array([c.g for c in consts]),
        restitution=np.array([c.restitution for c in consts]),
        friction=np.array([c.friction for c in consts]),
        ballistic=ballistic,
        n_frames=fmt.frames,
        fps=fmt.fps,
    )
    frames = torch.empty(len(attrs), fmt.frames, 3, fmt.height, fmt.width)
    # Plain and stylised clips are drawn apart, so a plain clip is the plain renderer's bit for bit
    # whatever else is in the batch.
    for styled in (False, True):
        idx = [i for i, a in enumerate(attrs) if (a.style != PLAIN) == styled]
        if not idx:
            continue
        frames[idx] = render(
            torch.from_numpy(traj.x[idx]),
            torch.from_numpy(traj.y[idx]),
            torch.from_numpy(radius[idx]),
            torch.tensor([attrs[i].object == "square" for i in idx]),
            torch.tensor([_rgb01(g.colors[attrs[i].color]) for i in idx]),
            torch.tensor([_rgb01(g.backgrounds[attrs[i].background]) for i in idx]),
            fmt.height,
            style=style_strengths([attrs[i].style for i in idx]),
        )
    out = []
    for i, (a, p, s) in enumerate(zip(attrs, prompts, seeds)):
        rec = SimRecord(
            prompt=p, seed=int(s), mode=mode,
            centers=np.stack([traj.x[i], traj.y[i]], 1).tolist(),
            radius=float(radius[i]),
            color=list(g.colors[a.color]), background=list(g.backgrounds[a.background]),
            constants=asdict(consts[i]) if a.domain == "physics" else {},
            floor_bounces=traj.floor_bounces[i], wall_bounces=traj.wall_bounces[i],
            fps=fmt.fps, style=a.style,
        )
        out.append(WorldClip(Video(frames[i], fmt.fps), rec))
    return out

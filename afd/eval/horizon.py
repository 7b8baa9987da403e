"""Long-horizon evaluation: clips longer than the judge's 2-second format, scored per window and
over the whole clip (docs/long-videos.md).

The exact measures are defined on 2-second clips (the evaluation format, 16 frames at 8 fps),
so a long clip is cut into consecutive 2-second windows and every window is scored as a clip of
its own; the drift curves are the window metrics by window index. What a window cannot show is
measured over the whole clip: one fit of the real world to the whole track (physical
consistency), and how many frames show the one object.

Two window metrics need care past the first window, for the world's own clips too: a ball that
has come to rest shows no free flight (its gravity error is averaged over the windows that show
some, and ``free_flight`` says how many do), and a general-prompt object that moves at constant
speed leaves the frame after 2-4 seconds (general persistence falls for the world itself). So the
ball's persistence (``ball_persistence``: physics prompts, whose ball never leaves the frame) is
the object-persistence curve, and every curve is read against the world's (``afd eval --world
real --frames N``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from afd.eval import general as gen
from afd.eval import physics as phy
from afd.eval.fit import fit_rmse
from afd.eval.score import EVAL_FORMAT, PC_SCALE_PX, ClipScore, parse_prompts, score_tracks, to_eval_format
from afd.eval.tracker import track
from afd.video.core import Video, VideoFormat, resample
from afd.world.physics import object_radius

WINDOW_S = EVAL_FORMAT.frames / EVAL_FORMAT.fps  # 2 s: the evaluation format's length
# Drift-curve keys: (group, metric of that group's window report) or a metric of this module.
DRIFT_KEYS = ("physics_total", "physical_consistency", "gravity_error", "free_flight", "ball_persistence",
              "general_total", "persistence", "size_accuracy", "background_accuracy")


def windows_of(video: Video, name: str = "clip") -> int:
    """How many whole 2-second windows a clip spans (an error naming the clip if it is not a
    whole number of them)."""
    duration = video.frames.shape[0] / video.fps
    n = int(round(duration / WINDOW_S))
    if n < 1 or abs(n * WINDOW_S - duration) > 0.5 / video.fps:
        raise ValueError(f"{name}: {video.frames.shape[0]} frames at {video.fps:g} fps last {duration:.3g} s, "
                         f"not a whole number of {WINDOW_S:g}-second windows")
    return n


def window(video: Video, w: int) -> Video:
    """Window w (seconds 2w .. 2w + 2) of a clip, as a clip of its own."""
    per = int(round(WINDOW_S * video.fps))
    return Video(video.frames[w * per:(w + 1) * per], video.fps)


def horizon_evaluate(videos: list[Video], prompts: list[str],
                     progress: Callable[[int], None] | None = None) -> tuple[dict, list[ClipScore]]:
    """Score long clips (all of the same length, a whole number of 2-second windows).

    Returns the ``afd eval`` report of the first window (``n_videos``, ``groups``, ``stderr``:
    comparable with a 2-second eval) with a ``horizon`` entry: ``seconds``, ``windows`` (each
    window's groups and stderr), ``drift`` ({key: one value per window}, ``DRIFT_KEYS``) and
    ``whole`` (measures over the whole clip); and the first window's per-clip scores.
    ``progress``: told 1 per clip-window tracked."""
    if len(videos) != len(prompts):
        raise ValueError(f"got {len(videos)} videos but {len(prompts)} prompts")
    if not videos:
        raise ValueError("no clips to score")
    names = [f"clip {i}" for i in range(len(videos))]
    counts = {windows_of(v, n) for v, n in zip(videos, names)}
    if len(counts) != 1:
        raise ValueError(f"clips of different lengths ({sorted(counts)} windows of {WINDOW_S:g} s); score them apart")
    n_windows = counts.pop()
    attrs = parse_prompts(prompts, names)
    size, fps = EVAL_FORMAT.height, EVAL_FORMAT.fps
    phys = [i for i, a in enumerate(attrs) if a.domain == "physics"]
    windows, drift, first_scores = [], {k: [] for k in DRIFT_KEYS}, []
    for w in range(n_windows):
        tracks = []
        for v, n, a in zip(videos, names, attrs):
            tracks.append(track(to_eval_format(window(v, w), f"{n}, window {w}"), a.style))
            if progress is not None:
                progress(1)
        report, scores = score_tracks(tracks, prompts, attrs)
        first_scores = first_scores or scores
        windows.append({"start_s": w * WINDOW_S, "groups": report["groups"], "stderr": report["stderr"]})
        P, G = report["groups"]["physics"] or {}, report["groups"]["general"] or {}
        drift["physics_total"].append(P.get("total"))
        drift["physical_consistency"].append(P.get("physical_consistency"))
        bouncing = [i for i in phys if phy.expects_bounce(attrs[i])]
        flying = [i for i in bouncing if phy.gravity_estimate(tracks[i], attrs[i], size, fps) is not None]
        drift["gravity_error"].append(float(np.mean([scores[i].gravity_error for i in flying])) if flying else None)
        drift["free_flight"].append(100.0 * len(flying) / len(bouncing) if bouncing else None)
        drift["ball_persistence"].append(
            float(np.mean([100 * gen.persistence(tracks[i], attrs[i], size) for i in phys])) if phys else None)
        for key in ("general_total", "persistence", "size_accuracy", "background_accuracy"):
            drift[key].append(G.get("total" if key == "general_total" else key))
    first = windows[0]
    report = {"n_videos": len(videos), "groups": first["groups"], "stderr": first["stderr"],
              "horizon": {"seconds": n_windows * WINDOW_S, "window_s": WINDOW_S, "windows": windows,
                          "drift": drift, "whole": whole_clip(videos, attrs)}}
    return report, first_scores


def whole_clip(videos: list[Video], attrs) -> dict:
    """Measures over each whole clip at the evaluation format's size and rate: the real world
    fitted to the whole track of each physics clip (physical consistency, 0-100, with its standard
    error over clips, ``physical_consistency_se``) and the share
    of frames showing the one object (physics clips: ``ball_persistence``; general clips:
    ``persistence``), each a mean over clips (None without clips of that group)."""
    size = EVAL_FORMAT.height
    fmt = VideoFormat(frames=windows_of(videos[0]) * EVAL_FORMAT.frames, height=size, width=size, fps=EVAL_FORMAT.fps)
    tracks = [track(resample(v, fmt), a.style) for v, a in zip(videos, attrs)]
    phys = [i for i, a in enumerate(attrs) if a.domain == "physics"]
    genr = [i for i, a in enumerate(attrs) if a.domain == "general"]
    out = {"physical_consistency": None, "physical_consistency_se": None, "ball_persistence": None,
           "persistence": None}
    if phys:
        obs = np.stack([np.stack([tracks[i].cx, tracks[i].cy], -1) for i in phys]) / size
        valid = np.stack([tracks[i].found for i in phys])
        radius = np.array([object_radius(attrs[i]) for i in phys])
        rmse, _ = fit_rmse(obs, valid, radius, EVAL_FORMAT.fps, size)
        pc = 100.0 * np.exp(-rmse / PC_SCALE_PX)
        out["physical_consistency"] = float(np.mean(pc))
        out["physical_consistency_se"] = float(pc.std(ddof=1) / np.sqrt(len(pc))) if len(pc) > 1 else None
        out["ball_persistence"] = float(np.mean([100 * gen.persistence(tracks[i], attrs[i], size) for i in phys]))
    if genr:
        out["persistence"] = float(np.mean([100 * gen.persistence(tracks[i], attrs[i], size) for i in genr]))
    return out


def format_drift(report: dict) -> str:
    """The drift curves of a ``horizon_evaluate`` report as a table: one row per metric, one
    column per 2-second window, then the whole-clip measures."""
    h = report["horizon"]
    n = len(h["windows"])
    head = "| metric | " + " | ".join(f"{w * h['window_s']:g}-{(w + 1) * h['window_s']:g} s" for w in range(n)) + " |"
    lines = [head, "|---|" + "---|" * n]
    for key, values in h["drift"].items():
        lines.append(f"| {key} | " + " | ".join("-" if v is None else f"{v:.3f}" if key == "gravity_error"
                                                 else f"{v:.1f}" for v in values) + " |")
    whole = ", ".join(f"{k} {v:.1f}" for k, v in h["whole"].items() if v is not None and not k.endswith("_se"))
    return "\n".join(lines) + f"\nwhole clip ({h['seconds']:g} s): {whole}"

"""How faithfully a codec round-trips world clips: pixel error, the tracker's view, and the physics
score itself (``afd codec eval``).

A latent student can be no better than its codec's round trip: physical consistency charges a
tenth of a pixel of jitter, so the card of a codec gives the centroid error the tracker sees after
encode -> decode, and the physical consistency of round-tripped loose-world clips next to the
clips' own (docs/latent-student.md).
"""

from __future__ import annotations

import numpy as np
import torch

from afd.eval.defects import physics_defects
from afd.eval.student import eval_prompts, score_clips
from afd.eval.tracker import track
from afd.student.codec import Codec
from afd.video.core import Video
from afd.world.sample import sample_world


def round_trip(codec: Codec, clips: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """``decode(encode(clips))`` for clips (B, T, 3, S, S) in [-1, 1], ``batch`` clips at a time."""
    out = []
    with torch.no_grad():
        for i in range(0, clips.shape[0], batch):
            out.append(codec.decode(codec.encode(clips[i:i + batch])).float())
    return torch.cat(out)


def centroid_errors(originals: list[Video], decoded: list[Video]) -> dict:
    """Per-frame tracker agreement of two equally long lists of clips: centroid distance (px) on
    frames where both hold an object, and the share of frames where only one does."""
    dists, mismatched, frames = [], 0, 0
    for a, b in zip(originals, decoded):
        ta, tb = track(a), track(b)
        both = ta.found & tb.found
        dists.append(np.hypot(ta.cx[both] - tb.cx[both], ta.cy[both] - tb.cy[both]))
        mismatched += int((ta.found != tb.found).sum())
        frames += len(ta.found)
    d = np.concatenate(dists) if dists else np.zeros(0)
    return {"frames": frames, "found_mismatch": mismatched / max(1, frames),
            "centroid_mean_px": float(d.mean()) if d.size else float("nan"),
            "centroid_p99_px": float(np.quantile(d, 0.99)) if d.size else float("nan"),
            "centroid_max_px": float(d.max()) if d.size else float("nan")}


def codec_report(codec: Codec, per_prompt: int = 2, seed: int = 3000, prompts_per_split: int | None = None,
                 modes: tuple[str, ...] = ("loose", "real"), progress: bool = False) -> dict:
    """Round-trip the world's clips of the eval splits (``per_prompt`` seeds from ``seed`` per
    prompt) in each physics mode through ``codec`` (whose ``fmt`` is the clip format). Returns,
    per mode: pixel errors (on [-1, 1]), ``centroid_errors``, and physical consistency, general
    total and drawing defects of the originals and the round trips."""
    prompts = eval_prompts(prompts_per_split)
    all_prompts = [p for p in prompts for _ in range(per_prompt)]
    seeds = [seed + k % per_prompt for k in range(len(all_prompts))]
    report = {"clips_per_mode": len(all_prompts), "per_prompt": per_prompt, "seed": seed}
    for mode in modes:
        clips = sample_world(all_prompts, seeds, mode, codec.fmt)
        x = torch.stack([c.video.frames for c in clips]).float()
        y = round_trip(codec, x)
        err = (y - x).abs()
        originals = [c.video for c in clips]
        decoded = [Video(v, c.video.fps) for v, c in zip(y, clips)]
        row = {"pixel_mean_abs": float(err.mean()), "pixel_max_abs": float(err.max()),
               "psnr_db": float(10 * torch.log10(4 / (y - x).pow(2).mean())),
               **centroid_errors(originals, decoded)}
        for name, videos in (("original", originals), ("round_trip", decoded)):
            summary, scores = score_clips(videos, all_prompts, progress, f"{mode}:{name}")
            pcs = [s.physical_consistency for s in scores if s.physical_consistency is not None]
            defects = physics_defects(videos, scores)
            row[name] = {"physical_consistency": float(np.mean(pcs)) if pcs else float("nan"),
                         "general_total": summary["groups"]["general"]["total"] if summary["groups"]["general"]
                         else float("nan"),
                         "defect_fraction": 1 - defects["clean"]["fraction"]}
        report[mode] = row
    return report


def format_codec_report(report: dict) -> str:
    """``codec_report`` as a few lines of text."""
    lines = [f"codec round trip: {report['clips_per_mode']} clips per mode (eval splits, {report['per_prompt']} "
             f"seeds from {report['seed']})"]
    for mode in ("loose", "real"):
        if mode not in report:
            continue
        r = report[mode]
        o, t = r["original"], r["round_trip"]
        lines.append(f"  {mode}: pixel mean |err| {r['pixel_mean_abs']:.4f}, max {r['pixel_max_abs']:.3f}, "
                     f"PSNR {r['psnr_db']:.1f} dB; centroid error mean {r['centroid_mean_px']:.3f} px, p99 "
                     f"{r['centroid_p99_px']:.3f}, max {r['centroid_max_px']:.2f}; found mismatch "
                     f"{100 * r['found_mismatch']:.2f}% of frames")
        lines.append(f"  {mode}: physical consistency {o['physical_consistency']:.1f} -> "
                     f"{t['physical_consistency']:.1f}, "
                     f"general total {o['general_total']:.1f} -> {t['general_total']:.1f}, defective physics clips "
                     f"{100 * o['defect_fraction']:.0f}% -> {100 * t['defect_fraction']:.0f}%")
    return "\n".join(lines)

"""World render throughput: native teacher clips (64x64, 32 frames) per second."""

from __future__ import annotations

import json
import time

import torch

from afd.video.core import TEACHER_NATIVE
from afd.world.sample import sample_world
from afd.world.splits import load_split


def run(n_clips: int = 1000, chunk: int = 125, mode: str = "real") -> dict:
    prompts = load_split("pretrain")
    jobs = [(prompts[i % len(prompts)], i) for i in range(n_clips)]
    sample_world([jobs[0][0]], [0], mode)  # warm-up (imports, allocator)
    t0 = time.perf_counter()
    for start in range(0, n_clips, chunk):
        part = jobs[start:start + chunk]
        sample_world([p for p, _ in part], [s for _, s in part], mode)
    dt = time.perf_counter() - t0
    f = TEACHER_NATIVE
    return {"clips": n_clips, "seconds": round(dt, 3), "clips_per_s": round(n_clips / dt, 1),
            "format": f"{f.height}x{f.width}x{f.frames}@{f.fps:g}fps", "mode": mode,
            "threads": torch.get_num_threads()}


def main(args) -> int:
    r = run(args.clips, args.chunk, args.mode)
    print(f"rendered {r['clips']} native clips ({r['format']}, {r['mode']} physics) in {r['seconds']:.2f} s "
          f"on {r['threads']} threads: {r['clips_per_s']:.0f} clips/s (target >= 200)")
    print(json.dumps(r))
    return 0

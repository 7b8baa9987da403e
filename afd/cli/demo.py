"""``afd demo``: the main job on the embedded default.

For now (before a student exists) it shows the testbed itself: the real world (the teacher) next
to the loose world (what the base student will learn from), as clips and a PNG strip, and scores
both on the eval splits side by side.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from afd.eval import evaluate, format_reports, format_spread
from afd.video.core import STUDENT, resample
from afd.video.io import atomic_write_bytes, write_video
from afd.video.strip import save_strip
from afd.world.sample import sample_world
from afd.world.splits import load_split

SHOWCASE = [
    "a small red ball falls on a gray background",
    "a large blue ball is thrown to the right on a black background",
    "a large yellow ball is tossed upward on a dark green background",
    "a small white ball rolls to the left on a navy background",
    "a large magenta square slides to the right on a gray background",
]


def register(sub) -> None:
    p = sub.add_parser("demo", help="the main job on the embedded default (see README)")
    p.add_argument("--out", default="demo", help="output folder")
    p.add_argument("--per-prompt", type=int, default=2, help="clips per eval prompt to score")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    out = Path(args.out)
    t0 = time.time()
    showcase = {m: sample_world(SHOWCASE, [args.seed] * len(SHOWCASE), m) for m in ("real", "loose")}
    videos, captions = [], []
    for k, prompt in enumerate(SHOWCASE):
        for mode in ("real", "loose"):
            c = showcase[mode][k]
            write_video(out / "clips" / f"{mode}_{k}.mp4", c.video)
            videos.append(resample(c.video, STUDENT))
            consts = c.record.constants
            note = f" (g={consts['g']:.2f}, e={consts['restitution']:.2f}, mu={consts['friction']:.2f})" if consts else ""
            captions.append(f"{mode}: {prompt}{note}")
    strip = save_strip(out / "real_vs_loose.png", videos, captions, n_frames=16)
    print(f"wrote {strip} and {2 * len(SHOWCASE)} mp4 clips in {out / 'clips'}")

    prompts = load_split("physics-eval") + load_split("general-eval")
    jobs = [(p, args.seed + k) for p in prompts for k in range(args.per_prompt)]
    reports, spreads = {}, {}
    for mode in ("real", "loose"):
        clips = sample_world([p for p, _ in jobs], [s for _, s in jobs], mode)
        report, scores = evaluate([c.video for c in clips], [p for p, _ in jobs])
        reports[mode] = report
        spreads[mode] = [s.physical_consistency for s in scores if s.physical_consistency is not None]
        atomic_write_bytes(out / f"eval_{mode}.json", (json.dumps(report, indent=2) + "\n").encode())
    print(f"\nExact metrics on physics-eval + general-eval ({args.per_prompt} clips per prompt):")
    print(format_reports({"real (teacher)": reports["real"], "loose (pretraining)": reports["loose"]}))
    for mode in ("real", "loose"):
        print(f"{mode:>5}: {format_spread(spreads[mode])}")
    print(f"\ndone in {time.time() - t0:.1f} s; outputs in {out}/")
    return 0

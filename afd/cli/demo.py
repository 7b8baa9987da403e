"""``afd demo``: the main job on the embedded default.

It shows the testbed and the shipped base student: the real world (the teacher), the loose world
(what the base student learned from) and the base student's own rollouts, as clips and a PNG
strip, and scores all three on the eval splits side by side.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from afd.eval import evaluate, format_reports, format_spread
from afd.student.model import CausalVideoTransformer
from afd.student.sample import generate
from afd.student.shipped import resolve_checkpoint
from afd.video.core import STUDENT, Video, resample
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

LABELS = {"real": "real (teacher)", "loose": "loose (pretraining)", "base": "base student"}


def register(sub) -> None:
    p = sub.add_parser("demo", help="the main job on the embedded default (see README)")
    p.add_argument("--out", default="demo", help="output folder")
    p.add_argument("--per-prompt", type=int, default=2, help="clips per eval prompt to score")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--student", default="base-chunk", help="student checkpoint (directory or shipped name)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    out = Path(args.out)
    t0 = time.time()
    student = CausalVideoTransformer.from_pretrained(resolve_checkpoint(args.student))
    seeds = [args.seed] * len(SHOWCASE)
    showcase = {m: [c.video for c in sample_world(SHOWCASE, seeds, m)] for m in ("real", "loose")}
    showcase["base"] = [Video(v, STUDENT.fps) for v in generate(student, SHOWCASE, seeds)]
    videos, captions = [], []
    for k, prompt in enumerate(SHOWCASE):
        for mode in ("real", "loose", "base"):
            v = showcase[mode][k]
            write_video(out / "clips" / f"{mode}_{k}.mp4", v)
            videos.append(resample(v, STUDENT))
            captions.append(f"{LABELS[mode]}: {prompt}")
    strip = save_strip(out / "real_loose_base.png", videos, captions, n_frames=16)
    print(f"wrote {strip} and {3 * len(SHOWCASE)} mp4 clips in {out / 'clips'}")

    prompts = load_split("physics-eval") + load_split("general-eval")
    jobs = [(p, args.seed + k) for p in prompts for k in range(args.per_prompt)]
    jp, js = [p for p, _ in jobs], [s for _, s in jobs]
    clips = {m: [c.video for c in sample_world(jp, js, m)] for m in ("real", "loose")}
    clips["base"] = [Video(v, STUDENT.fps) for v in generate(student, jp, js)]
    reports, spreads = {}, {}
    for mode, vids in clips.items():
        report, scores = evaluate(vids, jp)
        reports[LABELS[mode]] = report
        spreads[mode] = [s.physical_consistency for s in scores if s.physical_consistency is not None]
        atomic_write_bytes(out / f"eval_{mode}.json", (json.dumps(report, indent=2) + "\n").encode())
    print(f"\nExact metrics on physics-eval + general-eval ({args.per_prompt} clips per prompt):")
    print(format_reports(reports))
    for mode in clips:
        print(f"{mode:>5}: {format_spread(spreads[mode])}")
    print(f"\ndone in {time.time() - t0:.1f} s; outputs in {out}/")
    return 0

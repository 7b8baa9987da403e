"""``afd demo``: what AFD does, to look at.

The teacher (the real world), the shipped base student and the shipped AFD-adapted student (by
default ``base-state`` and ``afd-state``: the pair that the main job, ``make afd``, starts from
and ends with) on a few showcase prompts, as mp4 clips and one PNG strip (teacher | base |
adapted per prompt), then all three scored on the eval splits side by side with ± errors. The
strip's last row is the second domain (docs/style.md): a cartoon-style prompt, whose adapted column
is ``--style-student`` when given (a student adapted to that domain, e.g. a run of
configs/reproduce/style.yaml); a student that knows one domain draws it plain.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from afd.cli import examples

SHOWCASE = [
    "a small red ball falls on a gray background",
    "a large blue ball is thrown to the right on a black background",
    "a large yellow ball is tossed upward on a dark green background",
    "a small white ball rolls to the left on a navy background",
    "a large magenta square slides to the right on a gray background",
]

STYLED_SHOWCASE = "a large orange ball is thrown to the left on a navy background in cartoon style"

LABELS = {"real": "teacher (real world)", "base": "base student", "adapted": "adapted student"}


def register(sub) -> None:
    p = sub.add_parser("demo", help="teacher | base | adapted student side by side (clips, strip, scores)",
                       description="The teacher, the shipped base student and the shipped AFD-adapted student "
                                   "side by side: mp4 clips and a strip of showcase prompts, then all three scored "
                                   "on the eval splits. Trains nothing; the main job is `make afd` "
                                   "(afd train --config configs/train/afd-state.yaml).",
                       epilog=examples("afd demo --out demo",
                                       "afd demo --per-prompt 1 --out demo-quick",
                                       "afd demo --adapted runs/afd-state/student --out demo-mine"))
    p.add_argument("--out", default="demo", help="output folder")
    p.add_argument("--per-prompt", type=int, default=2, help="clips per eval prompt to score")
    p.add_argument("--seed", type=int, default=0, help="first seed of the showcase and scored clips")
    p.add_argument("--student", default="base-state", help="base student (directory or shipped name)")
    p.add_argument("--adapted", default="afd-state",
                   help="adapted student: a shipped name or a run's student folder (e.g. runs/afd-state/student)")
    p.add_argument("--style-student", default=None,
                   help="a student adapted to the cartoon domain, drawn in the stylised row's adapted column "
                        "(default: --adapted)")
    p.add_argument("--no-progress", action="store_true", help="no estimate lines and progress bars while scoring")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from afd.eval import format_reports, format_spread
    from afd.eval.compare import HEADLINE, change_lines
    from afd.eval.student import sample_and_score, score_clips
    from afd.io_utils import atomic_write_bytes
    from afd.student.base import load_student_model
    from afd.student.sample import generate
    from afd.video.core import STUDENT, Video, resample
    from afd.video.io import write_video
    from afd.video.strip import save_strip
    from afd.world.sample import sample_world
    from afd.world.splits import load_split

    out = Path(args.out)
    t0 = time.time()
    students = {"base": load_student_model(args.student), "adapted": load_student_model(args.adapted)}
    modes = ("real", "base", "adapted")

    def clips_of(mode: str, prompts: list[str], seeds: list[int]) -> list[Video]:
        if mode == "real":
            return [c.video for c in sample_world(prompts, seeds, "real")]
        return [Video(v, STUDENT.fps) for v in generate(students[mode], prompts, seeds)]

    seeds = [args.seed] * len(SHOWCASE)
    showcase = {m: clips_of(m, SHOWCASE, seeds) for m in modes}
    if args.style_student:
        students["style"] = load_student_model(args.style_student)
    styled = {m: clips_of("style" if m == "adapted" and args.style_student else m, [STYLED_SHOWCASE], [args.seed])[0]
              for m in modes}
    videos, captions = [], []
    for k, prompt in enumerate([*SHOWCASE, STYLED_SHOWCASE]):
        for mode in modes:
            v = showcase[mode][k] if k < len(SHOWCASE) else styled[mode]
            write_video(out / "clips" / f"{mode}_{k}.mp4", v)
            videos.append(resample(v, STUDENT))
            label = "style-adapted student" if mode == "adapted" and k == len(SHOWCASE) and args.style_student \
                else LABELS[mode]
            captions.append(f"{label}: {prompt}")
    strip = save_strip(out / "teacher_base_adapted.png", videos, captions, n_frames=16)
    print(f"wrote {strip} and {len(modes) * (len(SHOWCASE) + 1)} mp4 clips in {out / 'clips'} "
          f"(the last row: the cartoon domain, docs/style.md)")

    prompts = load_split("physics-eval") + load_split("general-eval")
    progress = not args.no_progress
    reports, spreads = {}, {}
    for mode in modes:
        if mode == "real":
            # The teacher's own clips at its native format (scoring resamples them).
            jobs = [(p, args.seed + k) for p in prompts for k in range(args.per_prompt)]
            jp = [p for p, _ in jobs]
            report, scores = score_clips(clips_of(mode, jp, [s for _, s in jobs]), jp, progress, f"demo {mode}")
        else:
            report, scores, _, _ = sample_and_score(students[mode], prompts, args.per_prompt, args.seed,
                                                    progress=progress, name=f"demo {mode}")
        reports[LABELS[mode]] = report
        spreads[mode] = [s.physical_consistency for s in scores if s.physical_consistency is not None]
        atomic_write_bytes(out / f"eval_{mode}.json", (json.dumps(report, indent=2) + "\n").encode())
    print(f"\nExact metrics on physics-eval + general-eval ({args.per_prompt} clips per prompt):")
    print(format_reports(reports))
    for mode in modes:
        print(f"{mode:>7}: {format_spread(spreads[mode])}")
    print("\n".join(change_lines(reports[LABELS["base"]], reports[LABELS["adapted"]], HEADLINE)))
    print(f"\ndone in {time.time() - t0:.1f} s; outputs in {out}/")
    return 0

"""``afd world ...``: prompts, single clips and whole splits from the built-in world."""

from __future__ import annotations

import json
from pathlib import Path

from afd.cli import examples
from afd.video.io import FORMATS
from afd.world.physics import MODES
from afd.world.splits import SPLIT_NAMES


def register(sub) -> None:
    p = sub.add_parser("world", help="the built-in physics world (the default teacher)",
                       epilog=examples("afd world prompts --split physics-eval",
                                       "afd world sample --prompt 'a small red ball falls on a gray background' "
                                       "--out ball.mp4",
                                       "afd world render --split physics-train --out clips/"))
    ws = p.add_subparsers(dest="world_command", required=True, metavar="WORLD_COMMAND")

    q = ws.add_parser("prompts", help="print a split's prompts, one per line")
    q.add_argument("--split", required=True, choices=SPLIT_NAMES, help="the prompt split")
    q.set_defaults(func=cmd_prompts)

    q = ws.add_parser("sample", help="render one clip")
    q.add_argument("--prompt", required=True, help="a world prompt (see `afd world prompts`)")
    q.add_argument("--mode", default="real", choices=MODES,
                   help="real: the teacher's physics; loose: the pretraining world")
    q.add_argument("--seed", type=int, default=0, help="the clip's random seed")
    q.add_argument("--out", required=True, help=f"output file ({', '.join(FORMATS)})")
    q.set_defaults(func=cmd_sample)

    q = ws.add_parser("render", help="render a whole split into a clip folder with manifest.jsonl")
    q.add_argument("--split", required=True, choices=SPLIT_NAMES, help="the prompt split to render")
    q.add_argument("--mode", default="real", choices=MODES,
                   help="real: the teacher's physics; loose: the pretraining world")
    q.add_argument("--per-prompt", type=int, default=1, help="clips per prompt (seeds 0..N-1 + --seed)")
    q.add_argument("--seed", type=int, default=0, help="first seed")
    q.add_argument("--ext", default=".npz", choices=FORMATS, help="clip file format (npz is lossless)")
    q.add_argument("--out", required=True, help="output folder (clips/ and manifest.jsonl)")
    q.set_defaults(func=cmd_render)


def cmd_prompts(args) -> int:
    from afd.world.splits import load_split

    print("\n".join(load_split(args.split)))
    return 0


def cmd_sample(args) -> int:
    from afd.video.io import write_video
    from afd.world.sample import sample_world

    clip = sample_world([args.prompt], [args.seed], args.mode)[0]
    path = write_video(args.out, clip.video, record=json.loads(clip.record.to_json()))
    print(f"wrote {path} ({clip.video.frames.shape[0]} frames, {clip.video.fps:g} fps, mode {args.mode})")
    return 0


def cmd_render(args) -> int:
    if args.per_prompt < 1:
        raise ValueError(f"--per-prompt must be >= 1, got {args.per_prompt}")
    from afd.cli.common import write_manifest
    from afd.video.io import write_video
    from afd.world.sample import sample_world
    from afd.world.splits import load_split

    out = Path(args.out)
    prompts = load_split(args.split)
    jobs = [(p, args.seed + k) for p in prompts for k in range(args.per_prompt)]
    entries = []
    chunk = 128
    for start in range(0, len(jobs), chunk):
        part = jobs[start:start + chunk]
        clips = sample_world([p for p, _ in part], [s for _, s in part], args.mode)
        for (p, s), c in zip(part, clips):
            rel = f"clips/{len(entries):05d}{args.ext}"
            write_video(out / rel, c.video, record=json.loads(c.record.to_json()))
            entries.append({"prompt": p, "seed": s, "path": rel})
    write_manifest(out, entries)
    print(f"wrote {len(entries)} clips ({args.split}, mode {args.mode}) to {out}")
    return 0

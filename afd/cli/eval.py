"""``afd eval``: score a clip folder with the world's exact metrics."""

from __future__ import annotations

import json

from afd.eval import evaluate_folder, format_reports, format_spread
from afd.eval.score import clip_scores_as_dicts
from afd.video.io import atomic_write_bytes


def register(sub) -> None:
    p = sub.add_parser("eval", help="score a folder of clips (manifest.jsonl) with the exact world metrics")
    p.add_argument("--videos", required=True, help="folder with manifest.jsonl ({prompt, seed, path} per line)")
    p.add_argument("--json", help="write the report here (schema: n_videos, groups.physics, groups.general)")
    p.add_argument("--per-clip", help="write one JSON line of per-clip scores per clip here")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    report, scores = evaluate_folder(args.videos)
    print(format_reports({"score": report}))
    pcs = [s.physical_consistency for s in scores if s.physical_consistency is not None]
    if pcs:
        print(format_spread(pcs))
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(report, indent=2) + "\n").encode())
        print(f"wrote {args.json}")
    if args.per_clip:
        rows = clip_scores_as_dicts(scores)
        atomic_write_bytes(args.per_clip, "".join(json.dumps(r) + "\n" for r in rows).encode())
        print(f"wrote {args.per_clip}")
    return 0

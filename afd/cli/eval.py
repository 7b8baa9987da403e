"""``afd eval``: score clips with the world's exact metrics - a clip folder, a student checkpoint
(sampled here), or the world itself (the teacher's ``real`` physics or the ``loose`` world) as a
reference row computed the same way."""

from __future__ import annotations

import json

from afd.cli import examples
from afd.cli.common import add_stream_args

DEFAULT_PER_PROMPT = 2
DEFAULT_SEED = 1000  # the adaptation loop's final eval uses the same prompts, clips and seeds


def register(sub) -> None:
    p = sub.add_parser("eval",
                       help="score clips with the exact world metrics: a clip folder, a checkpoint, or the world",
                       epilog=examples("afd eval --checkpoint base-state --json base.json",
                                       "afd eval --videos clips/            # a folder with manifest.jsonl",
                                       "afd eval --world real --per-prompt 1",
                                       "afd eval --checkpoint base-state --frames 64   # 8 s, streamed; drift per 2 s",
                                       "afd eval --compare base=base.json runs/afd-state/eval.json"))
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--videos", help="folder with manifest.jsonl ({prompt, seed, path} per line)")
    src.add_argument("--checkpoint", help="student directory or shipped name (e.g. base-chunk): sample, then score")
    src.add_argument("--world", choices=["real", "loose"],
                     help="score the world's own clips (real = the teacher, loose = the pretraining world)")
    src.add_argument("--compare", nargs="+", metavar="[NAME=]REPORT",
                     help="print saved reports (eval.json of runs, --json outputs) side by side; a column is "
                          "named NAME, or else after the report's folder")
    p.add_argument("--split", action="append", metavar="NAME",
                   help="prompt split to sample (repeatable; default physics-eval and general-eval)")
    p.add_argument("--prompts-per-split", type=int, default=None,
                   help="only this many prompts of each split, spread evenly (default: all)")
    p.add_argument("--per-prompt", type=int, default=DEFAULT_PER_PROMPT, help="clips per prompt (seeds seed..seed+N-1)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="first sampling seed")
    add_stream_args(p, "with --checkpoint or --world: clip length in frames (default 16); longer clips are "
                       "streamed by the student and scored per 2-second window and whole (docs/long-videos.md)")
    p.add_argument("--score-as", metavar="STYLE", choices=["plain", "cartoon"],
                   help="with --checkpoint or --world: sample each prompt as given, then score the clip as if its "
                        "prompt named STYLE (plain or cartoon): reads a student's motion under the look it drew, "
                        "to tell a wrong look from wrong motion (docs/style.md)")
    p.add_argument("--json", help="write the report here (schema: n_videos, groups.physics, groups.general)")
    p.add_argument("--per-clip", help="write one JSON line of per-clip scores per clip here")
    p.add_argument("--fd-terms", action="store_true",
                   help="also print which descriptors the Fréchet distance comes from (general prompts)")
    p.add_argument("--coherence", action="store_true",
                   help="also print the physics clips' consistency under the best-fitting constants of the "
                        "loose world's range (coherent but wrong physics vs motion no physics explains; ~1 s/clip)")
    p.add_argument("--defects", action="store_true",
                   help="also split the physics clips by drawing defect (clean / a second copy or split piece in "
                        "some frame / the object missing in some frame) with each kind's physical consistency")
    p.add_argument("--block-drift", action="store_true",
                   help="with --checkpoint: also measure how the student's motion drifts inside its blocks and "
                        "jumps at block boundaries (moving general prompts, one clip each)")
    p.add_argument("--no-progress", action="store_true",
                   help="no estimate line and progress bars while clips are sampled and scored")
    p.set_defaults(func=cmd_eval)


def load_reports(entries: list[str]) -> dict[str, dict]:
    """``[NAME=]PATH`` entries -> {column name: report}; errors name the file and what is wrong."""
    from pathlib import Path

    from afd.cli import CLIError

    reports: dict[str, dict] = {}
    for entry in entries:
        name, sep, path = entry.partition("=")
        if not sep:
            name, path = "", entry
        f = Path(path)
        if not f.is_file():
            raise CLIError(f"--compare: no report at {f}")
        try:
            report = json.loads(f.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CLIError(f"--compare: {f} is not JSON ({e})") from None
        groups = report.get("groups") if isinstance(report, dict) else None
        if not isinstance(groups, dict) or not {"physics", "general"} <= set(groups) or "n_videos" not in report:
            raise CLIError(f"--compare: {f} is not an afd eval report (expected keys n_videos and "
                           f"groups.physics/groups.general)")
        name = name or (f.parent.name if f.name == "eval.json" else f.stem) or str(f)
        if name in reports:
            raise CLIError(f"--compare: two columns named {name!r}; name them, e.g. {name}-2={f}")
        reports[name] = report
    return reports


def _folder_clips(videos_dir) -> tuple[list, list[str]]:
    """The clips and prompts of a manifest folder (read again for the optional diagnostics)."""
    from afd.teacher.folder import read_manifest
    from afd.video.io import read_video

    entries = read_manifest(videos_dir)
    return [read_video(e["path"]) for e in entries], [e["prompt"] for e in entries]


def _fd_terms(clips, prompts, report: dict) -> str:
    from afd.cli import CLIError
    from afd.eval.score import frechet_terms
    from afd.eval.table import format_frechet_terms

    try:
        terms = frechet_terms(clips, prompts)
    except ValueError as e:
        raise CLIError(f"--fd-terms: {e}") from None
    general = report["groups"]["general"]
    return format_frechet_terms(terms, general["frechet_distance"] if general else None)


def check_args(args) -> None:
    """Option combinations and ranges, checked before anything heavy is imported."""
    from afd.cli import CLIError

    if args.compare:
        if (args.split or args.prompts_per_split is not None or args.json or args.per_clip or args.fd_terms
                or args.block_drift or args.coherence or args.defects or args.score_as):
            raise CLIError("--compare prints saved reports; --split, --prompts-per-split, --json, --per-clip, "
                           "--fd-terms, --coherence, --defects, --block-drift and --score-as do not apply")
        return
    window_args = args.window is not None or args.sink or args.stream_cache is not None
    if args.frames is not None or window_args:
        if args.videos:
            raise CLIError("--frames, --window, --sink and --stream-cache apply to --checkpoint and --world; "
                           "--videos scores its clips as they are")
        if args.world and window_args:
            raise CLIError("--window, --sink and --stream-cache set a student's rolling window; the world "
                           "simulates any length")
        if args.frames is not None and args.frames > 16:
            if args.frames % 16:
                raise CLIError(f"--frames {args.frames}: past 16 frames the clip is scored in 2-second windows "
                               f"of 16 frames; give a multiple of 16 (e.g. {args.frames // 16 * 16 or 16})")
            if args.fd_terms or args.coherence or args.defects or args.block_drift or args.per_clip:
                raise CLIError("--fd-terms, --coherence, --defects, --block-drift and --per-clip score 2-second "
                               "clips; drop them with --frames past 16")
        if args.frames is not None and args.frames < 1:
            raise CLIError(f"--frames must be >= 1, got {args.frames}")
    if args.block_drift and not args.checkpoint:
        raise CLIError("--block-drift measures a student: use it with --checkpoint")
    if args.score_as and not (args.checkpoint or args.world):
        raise CLIError("--score-as applies to --checkpoint and --world (clips sampled here)")
    if args.videos:
        if args.split or args.prompts_per_split is not None:
            raise CLIError("--split and --prompts-per-split apply to --checkpoint and --world; "
                           "--videos scores the clips in its manifest")
        return
    if args.per_prompt < 1:
        raise CLIError(f"--per-prompt must be >= 1, got {args.per_prompt}")
    if args.prompts_per_split is not None and args.prompts_per_split < 1:
        raise CLIError(f"--prompts-per-split must be >= 1, got {args.prompts_per_split}")


def cmd_eval(args) -> int:
    from afd.cli import CLIError

    check_args(args)
    from afd.eval import evaluate_folder, format_reports, format_spread
    from afd.eval.score import clip_scores_as_dicts
    from afd.io_utils import atomic_write_bytes

    if args.compare:
        print(format_reports(load_reports(args.compare)))
        return 0
    if args.videos:
        report, scores = evaluate_folder(args.videos)
        label = "score"
        clips, prompts = (_folder_clips(args.videos) if (args.fd_terms or args.coherence or args.defects)
                          else (None, None))
    else:
        from afd.eval.student import EVAL_SPLITS, eval_prompts, sample_and_score, sample_world_and_score

        prompts = eval_prompts(args.prompts_per_split, args.split or EVAL_SPLITS)
        if args.checkpoint:
            from afd.cli.common import apply_stream_args
            from afd.student.base import load_student_model

            model = load_student_model(args.checkpoint)
            apply_stream_args(model, args)
            report, scores, clips, prompts = sample_and_score(model, prompts, args.per_prompt, args.seed,
                                                              progress=not args.no_progress, frames=args.frames,
                                                              score_style=args.score_as)
            label = str(args.checkpoint)
        else:
            report, scores, clips, prompts = sample_world_and_score(args.world, prompts, args.per_prompt, args.seed,
                                                                    progress=not args.no_progress, frames=args.frames,
                                                                    score_style=args.score_as)
            label = f"world:{args.world}"
    from afd.eval.student import restyle

    if args.score_as:
        report["score_as"] = args.score_as  # saved with --json: the report is not the prompts' own reading
        print(f"scored as if every prompt named the {args.score_as} style (--score-as); sampled as given")
    print(format_reports({label: report}))
    if "horizon" in report:
        from afd.eval.horizon import format_drift

        print("the table above is the first 2 seconds; drift per 2-second window:")
        print(format_drift(report))
    pcs = [s.physical_consistency for s in scores if s.physical_consistency is not None]
    if pcs:
        print(format_spread(pcs))
    if args.coherence:
        from afd.eval.fit import LOOSE_GRID
        from afd.eval.score import motion_coherence

        print(format_spread(motion_coherence(clips, restyle(prompts, args.score_as)),
                            f"coherence (best of {len(LOOSE_GRID)} loose-world constant sets)"))
    if args.defects:
        from afd.eval.defects import format_defects, physics_defects

        print(format_defects(physics_defects(clips, scores)))
    if args.fd_terms:
        print(_fd_terms(clips, restyle(prompts, args.score_as), report))
    if args.block_drift:
        from afd.eval.blocks import block_drift, format_block_drift

        try:
            print(format_block_drift(block_drift(model, sorted(set(prompts), key=prompts.index), args.seed)))
        except ValueError as e:
            raise CLIError(f"--block-drift: {e}") from None
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(report, indent=2) + "\n").encode())
        print(f"wrote {args.json}")
    if args.per_clip:
        rows = clip_scores_as_dicts(scores)
        atomic_write_bytes(args.per_clip, "".join(json.dumps(r) + "\n" for r in rows).encode())
        print(f"wrote {args.per_clip}")
    return 0

"""``afd sample``: roll out a student checkpoint on prompts, writing clips + manifest."""

from __future__ import annotations

import re
from pathlib import Path

from afd.cli import examples
from afd.cli.common import add_stream_args

# What `afd sample` writes into --out (and the temporary files of a run killed mid-write); an
# earlier run's files of these names are replaced.
_WRITES = r"(clip\d{5,}\.(npz|mp4)|manifest\.jsonl)"
OWNED = re.compile(rf"{_WRITES}|\.tmp-{_WRITES}\.[0-9a-f]+")


def register(sub) -> None:
    p = sub.add_parser("sample", help="sample clips from a student checkpoint (mp4 + npz + manifest.jsonl)",
                       epilog=examples("afd sample --checkpoint afd-state "
                                       "--prompt 'a small red ball falls on a gray background' --out clips",
                                       "afd sample --checkpoint base-state --prompt 'a red ball drops' "
                                       "--prompt 'a cube slides' --out clips",
                                       "afd sample --checkpoint runs/afd-state/student --split physics-eval "
                                       "--per-prompt 2 --out clips",
                                       "afd sample --checkpoint base-chunk --prompts my_prompts.txt --out clips"))
    p.add_argument("--checkpoint", required=True,
                   help="student directory (save_pretrained format) or a shipped name, e.g. base-chunk")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--split", help="a prompt split, e.g. physics-eval")
    src.add_argument("--prompts", metavar="FILE", help="text file with one prompt per line (# starts a comment line)")
    src.add_argument("--prompt", action="append", metavar="TEXT",
                     help="a prompt, any text (repeatable); prompts outside the world's grammar are sampled too, "
                          "though the student was trained only on world prompts")
    p.add_argument("--per-prompt", type=int, default=1, help="clips per prompt")
    p.add_argument("--seed", type=int, default=0, help="clip k of a prompt uses seed + k")
    p.add_argument("--out", required=True,
                   help="output folder: new, empty, or an earlier `afd sample` output, whose clips and manifest "
                        "are replaced (files it did not write make it refuse the folder)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps per block (default: the checkpoint's)")
    p.add_argument("--first-steps", type=int, default=None,
                   help="denoising steps of block 0, the one without context (default: the checkpoint's; "
                        "never fewer than --steps)")
    p.add_argument("--shift", type=float, default=None, help="timestep shift (default: the checkpoint's)")
    p.add_argument("--renoise", choices=["fresh", "ddim"], default=None,
                   help="re-noising between steps (default: the checkpoint's)")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale against the checkpoint's null prompt (1: off; "
                        "default: the checkpoint's)")
    p.add_argument("--first-guidance", type=float, default=None,
                   help="guidance scale of block 0 alone (default: the checkpoint's, or --guidance when given)")
    add_stream_args(p)
    p.add_argument("--batch-size", type=int, default=32, help="clips rolled out together")
    p.add_argument("--no-mp4", action="store_true", help="write only the lossless npz files")
    p.set_defaults(func=cmd_sample)


def earlier_output(out: Path) -> list[Path]:
    """The files an earlier ``afd sample`` left in ``out`` (empty for a new or empty folder).
    Raises FileExistsError naming the first file it did not write: such a folder is refused."""
    if not out.exists():
        return []
    if not out.is_dir():
        raise FileExistsError(f"--out {out}: exists and is not a folder")
    found = sorted(out.iterdir())
    for f in found:
        if not (f.is_file() and OWNED.fullmatch(f.name)):
            raise FileExistsError(f"--out {out}: not empty and not written by `afd sample` (it holds {f.name!r}); "
                                  f"choose a new or empty folder")
    return found


def read_prompt_args(args) -> list[str]:
    """The prompts of --split, --prompts FILE or the --prompt texts (argparse allows one source)."""
    if args.prompt:
        for text in args.prompt:
            if not text.strip():
                raise ValueError(f"--prompt must be non-empty text, got {text!r}")
        return [text.strip() for text in args.prompt]
    if args.prompts:
        from afd.prompts import read_prompts_file  # the one reader: .txt or .jsonl, as afd train

        return read_prompts_file(args.prompts)
    from afd.world.splits import load_split

    return load_split(args.split)


def cmd_sample(args) -> int:
    if args.per_prompt < 1:
        raise ValueError(f"--per-prompt must be >= 1, got {args.per_prompt}")
    if args.first_steps is not None and args.first_steps < 0:
        raise ValueError(f"--first-steps must be >= 0, got {args.first_steps}")
    if args.guidance is not None and args.guidance <= 0:
        raise ValueError(f"--guidance must be > 0 (1: off), got {args.guidance}")
    if args.first_guidance is not None and args.first_guidance <= 0:
        raise ValueError(f"--first-guidance must be > 0 (1: off), got {args.first_guidance}")
    out = Path(args.out)
    earlier = earlier_output(out)  # before any work: a refused folder costs nothing
    prompts = read_prompt_args(args)

    import time

    from tqdm import tqdm

    from afd.cli.common import apply_stream_args, write_manifest
    from afd.student.base import load_student_model
    from afd.student.sample import generate
    from afd.video.core import Video
    from afd.video.io import write_video

    model = load_student_model(args.checkpoint)
    apply_stream_args(model, args)
    fps = model.config.video_format().fps
    jobs = [(p, args.seed + k) for p in prompts for k in range(args.per_prompt)]
    t0 = time.time()
    with tqdm(total=len(jobs), desc="sample", dynamic_ncols=True) as bar:
        videos = generate(model, [p for p, _ in jobs], [s for _, s in jobs], steps=args.steps, shift=args.shift,
                          renoise=args.renoise,
                          first_steps=args.first_steps, guidance=args.guidance,
                          first_guidance=args.first_guidance, frames=args.frames,
                          batch_size=args.batch_size, progress=bar.update)
    entries, written = [], set()
    for i, ((prompt, seed), v) in enumerate(zip(jobs, videos)):
        video = Video(v, fps)
        name = f"clip{i:05d}"
        written.add(write_video(out / f"{name}.npz", video))
        if not args.no_mp4:
            written.add(write_video(out / f"{name}.mp4", video))
        entries.append({"prompt": prompt, "seed": seed, "path": f"{name}.npz"})
    written.add(write_manifest(out, entries))
    for stale in earlier:
        if stale not in written:  # an earlier run's clip this run did not overwrite
            stale.unlink(missing_ok=True)
    print(f"wrote {len(entries)} clips to {out} in {time.time() - t0:.1f} s")
    return 0

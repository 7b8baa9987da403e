"""``afd sample``: roll out a student checkpoint on prompts, writing clips + manifest."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("sample", help="sample clips from a student checkpoint (mp4 + npz + manifest.jsonl)")
    p.add_argument("--checkpoint", required=True, help="student directory (save_pretrained format) or a shipped name, e.g. base-chunk")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--split", help="a prompt split, e.g. physics-eval")
    src.add_argument("--prompts", help="text file with one prompt per line")
    p.add_argument("--per-prompt", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="clip k of a prompt uses seed + k")
    p.add_argument("--out", required=True)
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
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--no-mp4", action="store_true", help="write only the lossless npz files")
    p.set_defaults(func=cmd_sample)


def read_prompt_file(path: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: prompt file not found")
    prompts = [line.strip() for line in p.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if not prompts:
        raise ValueError(f"{p}: no prompts (one per line expected)")
    return prompts


def cmd_sample(args) -> int:
    import time

    from tqdm import tqdm

    from afd.cli.common import write_manifest
    from afd.student.model import CausalVideoTransformer
    from afd.student.sample import generate
    from afd.student.shipped import resolve_checkpoint
    from afd.video.core import Video
    from afd.video.io import write_video
    from afd.world.splits import load_split

    if args.per_prompt < 1:
        raise ValueError(f"--per-prompt must be >= 1, got {args.per_prompt}")
    if args.first_steps is not None and args.first_steps < 0:
        raise ValueError(f"--first-steps must be >= 0, got {args.first_steps}")
    if args.guidance is not None and args.guidance <= 0:
        raise ValueError(f"--guidance must be > 0 (1: off), got {args.guidance}")
    if args.first_guidance is not None and args.first_guidance <= 0:
        raise ValueError(f"--first-guidance must be > 0 (1: off), got {args.first_guidance}")
    prompts = load_split(args.split) if args.split else read_prompt_file(args.prompts)
    model = CausalVideoTransformer.from_pretrained(resolve_checkpoint(args.checkpoint))
    fps = model.config.frames / 2.0  # the built-in student's clips span 2 s (16 frames at 8 fps)
    jobs = [(p, args.seed + k) for p in prompts for k in range(args.per_prompt)]
    out = Path(args.out)
    t0 = time.time()
    with tqdm(total=len(jobs), desc="sample", dynamic_ncols=True) as bar:
        videos = generate(model, [p for p, _ in jobs], [s for _, s in jobs], steps=args.steps, shift=args.shift, renoise=args.renoise,
                          first_steps=args.first_steps, guidance=args.guidance,
                          first_guidance=args.first_guidance,
                          batch_size=args.batch_size, progress=bar.update)
    entries = []
    for i, ((prompt, seed), v) in enumerate(zip(jobs, videos)):
        video = Video(v, fps)
        name = f"clip{i:05d}"
        write_video(out / f"{name}.npz", video)
        if not args.no_mp4:
            write_video(out / f"{name}.mp4", video)
        entries.append({"prompt": prompt, "seed": seed, "path": f"{name}.npz"})
    write_manifest(out, entries)
    print(f"wrote {len(entries)} clips to {out} in {time.time() - t0:.1f} s")
    return 0

"""``afd bench ...``: speed figures (printed, last line JSON). Not tests: tests check behaviour."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks (print figures; last line is JSON)")
    bs = p.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    q = bs.add_parser("world", help="render throughput of native world clips")
    q.add_argument("--clips", type=int, default=1000, help="clips to render")
    q.add_argument("--chunk", type=int, default=125, help="clips rendered per vectorised call")
    q.add_argument("--mode", default="real", choices=("real", "loose"),
                   help="real: the teacher's physics; loose: the pretraining world")
    q.set_defaults(func=_world)

    q = bs.add_parser("rollout", help="student rollout frames/s: KV cache vs recomputing the prefix, 1..N blocks; "
                                      "with --frames, streamed clips' s/frame and peak memory by length")
    q.add_argument("--checkpoint", default=None,
                   help="student directory (default: a randomly initialised default-size student; "
                        "timing does not depend on the weights). With --frames, 'random-wan': a random Wan "
                        "student of the same size, whose rotary positions allow --stream-cache roll")
    q.add_argument("--batch", type=int, default=8, help="clips rolled out together")
    q.add_argument("--max-blocks", type=int, default=8, help="time rollouts of 1..MAX_BLOCKS blocks")
    q.add_argument("--steps", type=int, default=4, help="denoising steps per block")
    q.add_argument("--repeats", type=int, default=3, help="timed runs per point (the median is reported)")
    q.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    q.add_argument("--frames", default=None, metavar="N,N,...",
                   help="instead: stream clips of these lengths (e.g. 16,64,256; whole blocks) and report s/frame "
                        "and peak memory of each, one fresh process per length (docs/long-videos.md)")
    q.add_argument("--device", default="cpu", help="with --frames: cpu or cuda")
    q.add_argument("--stream-cache", choices=("reencode", "roll"), default=None,
                   help="with --frames: how the window's cache moves (default: the checkpoint's; roll needs a "
                        "rotary-position student such as the Wan student)")
    q.set_defaults(func=_rollout)

    q = bs.add_parser("train-step", help="pretraining ms/step and MFU against a measured bf16 matmul peak")
    q.add_argument("--batch", type=int, default=16, help="clips per training step")
    q.add_argument("--steps", type=int, default=10, help="timed steps (after 2 warm-up steps)")
    q.add_argument("--config", default="configs/pretrain/pretrain.yaml",
                   help="pretraining YAML config giving the model size")
    q.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    q.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. model.dim=256")
    q.set_defaults(func=_train_step)

    q = bs.add_parser("iteration", help="s/iteration and peak RSS of each method vs an SFT step at the same batch")
    q.add_argument("--methods", default="sft,afd,gan,dmd", help="comma-separated methods (sft is always included)")
    q.add_argument("--config", default="configs/train/afd.yaml", help="the budget (batch, D steps, student) to time at")
    q.add_argument("--iters", type=int, default=5, help="timed iterations per method (after one warm-up)")
    q.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the method processes")
    q.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.prompts=4")
    q.set_defaults(func=_iteration)


def _world(args) -> int:
    from afd.bench.world import main

    return main(args)


def _rollout(args) -> int:
    if args.frames:
        from afd.bench.stream import main as stream_main
        from afd.cli import CLIError

        try:
            lengths = [int(x) for x in args.frames.split(",")]
        except ValueError:
            raise CLIError(f"--frames: expected comma-separated frame counts like 16,64,256, "
                           f"got {args.frames!r}") from None
        if min(lengths) < 1:
            raise CLIError(f"--frames: lengths must be >= 1, got {args.frames}")
        return stream_main(args)
    if args.stream_cache is not None or args.checkpoint == "random-wan":
        from afd.cli import CLIError

        raise CLIError("--stream-cache and --checkpoint random-wan time streamed clips: give --frames")
    from afd.bench.rollout import main

    return main(args)


def _train_step(args) -> int:
    from afd.bench.train_step import main

    return main(args)


def _iteration(args) -> int:
    from afd.bench.iteration import main

    return main(args)

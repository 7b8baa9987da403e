"""``afd probe-disc``: train a discriminator as ``afd train`` would, on the base student's rollouts
only, and measure how well its weights rank held-out rollouts by exact physics. ``afd
probe-update``: where the student update's expected gradient points, and what stepping along it
does to the eval metrics."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("probe-disc", help="how well a discriminator design ranks base rollouts by physics (offline)")
    p.add_argument("--config", default="configs/train/afd.yaml",
                   help="adaptation YAML config (its disc, teacher, student, train.prompts/rollouts)")
    p.add_argument("--out", required=True, help="directory for probe.jsonl, summary.json and config.yaml")
    p.add_argument("--iters", type=int, default=200, help="discriminator iterations (each: disc.steps steps)")
    p.add_argument("--every", type=int, default=25, help="iterations between judgements on the held-out rollouts")
    p.add_argument("--prompts", type=int, default=None, help="use this many prompts of the split (default: all)")
    p.add_argument("--rollouts", type=int, default=8, help="base rollouts per prompt, half for training, half held out")
    p.add_argument("--seed", type=int, default=0, help="seeds the rollouts, the prompt subset and D's batches")
    p.add_argument("--negatives", default="base", choices=("base", "loose"),
                   help="D's training negatives: the base's rollouts (as AFD) or loose-world clips (a diagnostic: "
                        "same renderer as the teacher, so only physics separates them); held out: base rollouts")
    p.add_argument("--cache", default="cache/probe", help="where the base rollouts and their measures are cached")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. disc.lr=1e-4 disc.model.backbone=efficientnet")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("probe-update",
                       help="signal vs noise of the student update's gradient, and what a step along it does")
    p.add_argument("--config", default="configs/train/afd-state.yaml",
                   help="adaptation YAML config (train.method afd or oracle)")
    p.add_argument("--out", required=True, help="directory for probe.jsonl, summary.json and config.yaml")
    p.add_argument("--batches", type=int, default=8, help="independent rollout batches (iterations of the run's plan)")
    p.add_argument("--draws", type=int, default=2, help="gradients per batch, each with its own forward noise")
    p.add_argument("--steps", default="0,1e-6,3e-6,1e-5",
                   help="comma-separated step sizes along the mean gradient: RMS move per parameter")
    p.add_argument("--per-prompt", type=int, default=8, help="eval clips per eval prompt for each stepped student")
    p.add_argument("--branch", default="both", choices=("both", "positive", "negative"),
                   help="both sides of the NFT loss, or only the pull toward the better rollouts "
                        "/ the push from the worse")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. train.method=oracle afd.noise=group")
    p.set_defaults(func=cmd_probe_update)


def cmd_probe(args) -> int:
    import json

    from afd.config import load_config
    from afd.probes.disc import probe
    from afd.train.config import AdaptConfig

    cfg = load_config(AdaptConfig, args.config, args.overrides)
    _, summary = probe(cfg, Path(args.out), iters=args.iters, every=args.every, n_prompts=args.prompts,
                       rollouts=args.rollouts, seed=args.seed, cache_root=Path(args.cache), negatives=args.negatives)
    print(json.dumps(summary))
    return 0


def cmd_probe_update(args) -> int:
    import json

    from afd.config import load_config
    from afd.probes.update import probe_update
    from afd.train.config import AdaptConfig

    try:
        sizes = tuple(float(x) for x in args.steps.split(","))
    except ValueError:
        raise ValueError(f"--steps must be comma-separated numbers, got {args.steps!r}") from None
    cfg = load_config(AdaptConfig, args.config, args.overrides)
    summary = probe_update(cfg, Path(args.out), batches=args.batches, draws=args.draws, sizes=sizes,
                           per_prompt=args.per_prompt, branch=args.branch)
    print(json.dumps({k: v for k, v in summary.items() if k != "steps"}))
    return 0

"""``afd probe-disc``: train a discriminator as ``afd train`` would, on the base student's rollouts
only, and measure how well its weights rank held-out rollouts by exact physics. ``afd
probe-update``: where the student update's expected gradient points, and what stepping along it
does to the eval metrics."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("probe-disc", help="how well a discriminator design ranks unseen rollouts by physics "
                                          "(offline benchmark, ± over seeds)")
    p.add_argument("--config", default="configs/train/afd-state-paper.yaml",
                   help="adaptation YAML config (its disc, teacher, student, train.prompts/rollouts)")
    p.add_argument("--out", help="directory for seed<s>/probe.jsonl and summary.json, config.yaml")
    p.add_argument("--iters", type=int, default=100, help="discriminator iterations (each: disc.steps steps)")
    p.add_argument("--every", type=int, default=25, help="iterations between judgements on the held-out rollouts")
    p.add_argument("--prompts", type=int, default=None, help="use this many prompts of the split (default: all)")
    p.add_argument("--held-prompts", type=int, default=None,
                   help="prompts held out from D's training and judged (default: a quarter of them)")
    p.add_argument("--rollouts", type=int, default=8, help="base rollouts per prompt, half for training, half held out")
    p.add_argument("--seeds", default="0,1,2",
                   help="comma-separated probe seeds: each splits the prompts anew and trains a fresh D")
    p.add_argument("--negatives", default="base", choices=("base", "loose"),
                   help="D's training negatives: the base's rollouts (as AFD) or loose-world clips (a diagnostic: "
                        "same renderer as the teacher, so only physics separates them); held out: base rollouts")
    p.add_argument("--cache", default="cache/probe", help="where the base rollouts and their measures are cached")
    p.add_argument("--table", nargs="+", metavar="DIR", default=None,
                   help="instead of probing: print the markdown table of these finished probes' summaries")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. disc.lr=1e-4 disc.model.backbone=keypoint")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("probe-update",
                       help="signal vs noise of the student update's gradient, and what an optimizer step along "
                            "it does, beside SFT's and a random direction")
    p.add_argument("--config", default="configs/train/afd-state-paper.yaml",
                   help="adaptation YAML config (train.method afd, oracle or sft)")
    p.add_argument("--out", required=True, help="directory for probe.jsonl, summary.json and config.yaml")
    p.add_argument("--batches", type=int, default=8, help="independent rollout batches (iterations of the run's plan)")
    p.add_argument("--draws", type=int, default=2, help="gradients per batch, each with its own forward noise")
    p.add_argument("--step", default="adam", choices=("adam", "sign"),
                   help="the step an optimizer takes from a mean gradient: AdamW's first step or a sign step, "
                        "at train.lr")
    p.add_argument("--multiples", default="1,2,4",
                   help="comma-separated step sizes h, in units of train.lr: each direction is evaluated at +h and -h")
    p.add_argument("--seed", type=int, default=0, help="seeds the random control direction")
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
    from afd.probes.disc import probe_seeds, table
    from afd.train.config import AdaptConfig

    if args.table is not None:
        if args.overrides:
            raise ValueError(f"--table reads finished probes and takes no overrides, got {args.overrides}")
        print(table([Path(d) for d in args.table]))
        return 0
    if not args.out:
        raise ValueError("--out is required (or --table DIR ... to print finished probes)")
    try:
        seeds = [int(x) for x in args.seeds.split(",")]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    cfg = load_config(AdaptConfig, args.config, args.overrides)
    summary = probe_seeds(cfg, Path(args.out), seeds, iters=args.iters, every=args.every, n_prompts=args.prompts,
                          rollouts=args.rollouts, held_prompts=args.held_prompts, cache_root=Path(args.cache),
                          negatives=args.negatives)
    print(json.dumps({k: v for k, v in summary.items() if not k.endswith("_seeds")}))
    return 0


def cmd_probe_update(args) -> int:
    import json

    from afd.config import load_config
    from afd.probes.update import probe_update
    from afd.train.config import AdaptConfig

    try:
        multiples = tuple(float(x) for x in args.multiples.split(","))
    except ValueError:
        raise ValueError(f"--multiples must be comma-separated numbers, got {args.multiples!r}") from None
    cfg = load_config(AdaptConfig, args.config, args.overrides)
    summary = probe_update(cfg, Path(args.out), batches=args.batches, draws=args.draws, multiples=multiples,
                           per_prompt=args.per_prompt, branch=args.branch, step=args.step, seed=args.seed)
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}))
    return 0

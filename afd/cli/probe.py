"""``afd probe-disc``: train a discriminator as ``afd train`` would, on the base student's rollouts
only, and measure how well its weights rank held-out rollouts by exact physics."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("probe-disc", help="how well a discriminator design ranks base rollouts by physics (offline)")
    p.add_argument("--config", default="configs/afd.yaml", help="adaptation YAML config (its disc, teacher, student, train.prompts/rollouts)")
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
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. disc.lr=1e-4 disc.model.backbone=efficientnet")
    p.set_defaults(func=cmd_probe)


def cmd_probe(args) -> int:
    import json

    from afd.config import load_config
    from afd.train.config import AdaptConfig
    from afd.train.disc_probe import probe

    cfg = load_config(AdaptConfig, args.config, args.overrides)
    _, summary = probe(cfg, Path(args.out), iters=args.iters, every=args.every, n_prompts=args.prompts,
                       rollouts=args.rollouts, seed=args.seed, cache_root=Path(args.cache), negatives=args.negatives)
    print(json.dumps(summary))
    return 0

"""``afd pretrain`` (the base student on the loose world) and ``afd train`` (adaptation: AFD and
the baselines in one loop)."""

from __future__ import annotations

from afd.cli import examples


def register(sub) -> None:
    p = sub.add_parser("pretrain", help="pretrain the base causal student on the loose world",
                       epilog=examples("afd pretrain --config configs/pretrain/pretrain.yaml",
                                       "afd pretrain --config configs/pretrain/pretrain.yaml "
                                       "steps=500 out=runs/pretrain-small",
                                       "afd pretrain --config configs/pretrain/pretrain.yaml --resume"))
    p.add_argument("--config", default=None, help="YAML config (see configs/pretrain/pretrain.yaml)")
    p.add_argument("--resume", action="store_true", help="continue the run in out=/checkpoint exactly")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to out/log.jsonl)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. steps=500 optim.lr=1e-3")
    p.set_defaults(func=cmd_pretrain)
    register_train(sub)


def cmd_pretrain(args) -> int:
    from afd.config import load_config
    from afd.train.pretrain import PretrainConfig, pretrain

    cfg = load_config(PretrainConfig, args.config, args.overrides)
    pretrain(cfg, resume=args.resume, progress=not args.no_progress)
    return 0


def register_train(sub) -> None:
    p = sub.add_parser("train", help="adapt the student to the teacher (AFD or a baseline) in the shared loop",
                       epilog=examples("afd train --config configs/train/afd-state.yaml   # the main job (make afd)",
                                       "afd train --config configs/train/afd-state.yaml "
                                       "train.method=sft run.dir=runs/sft",
                                       "afd train --config configs/train/afd-state.yaml --resume"))
    p.add_argument("--config", default=None, help="YAML config (see configs/train/afd.yaml)")
    p.add_argument("--resume", action="store_true", help="continue the run in run.dir/checkpoint exactly")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (metrics still go to run.dir/metrics.jsonl)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. train.steps=20 train.seed=1 run.dir=runs/x disc.lr=1e-4")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from afd.config import load_config
    from afd.train.config import AdaptConfig

    cfg = load_config(AdaptConfig, args.config, args.overrides)  # a config error answers before torch loads
    from afd.train.loop import train

    train(cfg, resume=args.resume, progress=not args.no_progress)
    return 0

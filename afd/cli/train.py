"""``afd pretrain``: train the base student on the loose world."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("pretrain", help="pretrain the base causal student on the loose world")
    p.add_argument("--config", default=None, help="YAML config (see configs/pretrain.yaml)")
    p.add_argument("--resume", action="store_true", help="continue the run in out=/checkpoint exactly")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to out/log.jsonl)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. steps=500 optim.lr=1e-3")
    p.set_defaults(func=cmd_pretrain)


def cmd_pretrain(args) -> int:
    from afd.config import load_config
    from afd.train.pretrain import PretrainConfig, pretrain

    cfg = load_config(PretrainConfig, args.config, args.overrides)
    pretrain(cfg, resume=args.resume, progress=not args.no_progress)
    return 0

"""``afd codec train`` (the learned frame codec on world frames) and ``afd codec eval`` (its round trip)."""

from __future__ import annotations

from afd.cli import CLIError, examples


def register(sub) -> None:
    p = sub.add_parser("codec", help="the learned frame codec of the latent student: train it, measure its round trip")
    csub = p.add_subparsers(dest="codec_command", required=True, metavar="{train,eval}")
    t = csub.add_parser("train", help="train the frame autoencoder on loose- and real-world frames",
                        epilog=examples("afd codec train --config configs/pretrain/codec-world.yaml",
                                        "afd codec train --config configs/pretrain/codec-world.yaml "
                                        "steps=200 out=runs/codec-small",
                                        "afd codec train --config configs/pretrain/codec-world.yaml --resume"))
    t.add_argument("--config", default=None, help="YAML config (see configs/pretrain/codec-world.yaml)")
    t.add_argument("--resume", action="store_true", help="continue the run in out=/checkpoint exactly")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to out/log.jsonl)")
    t.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. steps=500 model.latent_channels=16")
    t.set_defaults(func=cmd_train)
    e = csub.add_parser("eval", help="round-trip world clips of the eval splits and score them",
                        epilog=examples("afd codec eval --codec codec-world --per-prompt 4",
                                        "afd codec eval --codec runs/codec-small/final "
                                        "--json runs/codec-small/eval.json"))
    e.add_argument("--codec", required=True, help="a codec folder (afd codec train's export) or a shipped name")
    e.add_argument("--per-prompt", type=int, default=2, help="seeds per eval prompt (96 prompts)")
    e.add_argument("--seed", type=int, default=3000, help="first seed")
    e.add_argument("--json", default=None, help="also write the report here")
    e.set_defaults(func=cmd_eval)


def cmd_train(args) -> int:
    from afd.config import load_config
    from afd.train.codec_train import CodecTrainConfig, train_codec

    cfg = load_config(CodecTrainConfig, args.config, args.overrides)
    train_codec(cfg, resume=args.resume, progress=not args.no_progress)
    return 0


def cmd_eval(args) -> int:
    import json
    from pathlib import Path

    from afd.eval.codec import codec_report, format_codec_report
    from afd.io_utils import atomic_write_text
    from afd.student.codecs.learned import LearnedCodec, load_frame_codec
    from afd.video.core import STUDENT, VideoFormat

    if args.per_prompt < 1:
        raise CLIError(f"--per-prompt must be >= 1, got {args.per_prompt}")
    model = load_frame_codec(args.codec)
    codec = LearnedCodec(model)
    codec.fmt = VideoFormat(frames=STUDENT.frames, height=model.config.size, width=model.config.size, fps=STUDENT.fps)
    report = codec_report(codec, per_prompt=args.per_prompt, seed=args.seed, progress=True)
    print(format_codec_report(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
    return 0

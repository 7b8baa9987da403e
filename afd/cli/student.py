"""``afd student ...``: student folders made locally, never downloaded. ``import``: a published
Self-Forcing / Causal-Forcing checkpoint -> an afd Wan student folder (``save_pretrained``),
converted once so that every later load is a plain one. ``tiny-wan``: a tiny random latent Wan
student with its VAE and UMT5 encoder, for CPU runs. ``styled``: a state student given the three
cartoon strengths (docs/style.md)."""


from __future__ import annotations

from pathlib import Path

from afd.cli import examples

# The same names as afd.student.backbones.wan_import.SOURCES (kept here: that module imports torch and diffusers).
SOURCES = ("self-forcing", "causal-forcing")
PRESETS = ("wan2.1-1.3b",)  # WanStudentConfig's defaults: Wan2.1-T2V-1.3B, 21 frames in 3-frame blocks


def register(sub) -> None:
    p = sub.add_parser("student", help="student folders: import a published Wan student, or write a tiny random one",
                       epilog=examples("afd student import --from self-forcing --checkpoint self_forcing_dmd.pt "
                                       "--preset wan2.1-1.3b --out students/self-forcing",
                                       "afd student tiny-wan --out runs/tiny-wan"))
    ss = p.add_subparsers(dest="student_command", required=True, metavar="STUDENT_COMMAND")
    q = ss.add_parser(
        "import", help="convert a Self-Forcing or Causal-Forcing .pt file into an afd Wan student folder",
        epilog=examples("afd student import --from self-forcing --checkpoint self_forcing_dmd.pt "
                        "--preset wan2.1-1.3b --out students/self-forcing",
                        "afd student import --from causal-forcing --checkpoint framewise/causal_forcing.pt "
                        "--preset wan2.1-1.3b --out students/cf-frame block_frames=1",
                        "afd student import --from causal-forcing --checkpoint chunkwise/causal_forcing.pt "
                        "--config wan_student.yaml --no-ema --out students/cf-chunk"))
    q.add_argument("--from", dest="source", required=True, choices=SOURCES,
                   help="the project whose training saved the checkpoint")
    q.add_argument("--checkpoint", required=True, metavar="FILE.pt", help="the published .pt file")
    cfg = q.add_mutually_exclusive_group(required=True)
    cfg.add_argument("--config", metavar="FILE", help="the student's WanStudentConfig fields, YAML or JSON")
    cfg.add_argument("--preset", choices=PRESETS,
                     help="wan2.1-1.3b: WanStudentConfig's defaults (Wan2.1-T2V-1.3B sizes, 21 latent frames "
                          "of 60x104 in 3-frame blocks)")
    q.add_argument("--no-ema", action="store_true",
                   help="import the 'generator' weights instead of the EMA copy 'generator_ema'")
    q.add_argument("--out", required=True, help="new or empty folder for the student (model.safetensors + config.json)")
    q.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. block_frames=1 codec=wan-vae vae_path=DIR")
    q.set_defaults(func=cmd_import)

    q = ss.add_parser("tiny-wan", help="a tiny random latent Wan student (Wan VAE codec, UMT5 text) for CPU runs",
                      description="Writes OUT/vae (a tiny random AutoencoderKLWan), OUT/umt5 (a tiny random UMT5 "
                                  "encoder with a word-level tokenizer of the world's prompt words) and OUT/student "
                                  "(a random CausalWanStudent reading both, by absolute path). Needs the wan extra.",
                      epilog=examples("afd student tiny-wan --out runs/tiny-wan",
                                      "afd train --config configs/train/afd-wan-tiny.yaml   "
                                      "# reads runs/tiny-wan/student"))
    q.add_argument("--out", required=True, help="folder to write vae/, umt5/ and student/ into")
    q.add_argument("--seed", type=int, default=0, help="seed of the random weights (the same seed, the same weights)")
    q.add_argument("--force", action="store_true", help="replace vae/, umt5/ and student/ if they exist")
    q.set_defaults(func=cmd_tiny_wan)

    q = ss.add_parser("styled", help="a state student with the cartoon strengths (13 channels), sampling the "
                                     "base's clips in the plain look until trained",
                      description="Copies a 10-channel state student into a 13-channel one: the three cartoon "
                                  "strengths (afd/world/state_codec.py) are read with zero weights and predicted "
                                  "as the plain look, so the new student samples exactly the base's clips. It can "
                                  "then learn the second domain's look from its prompts (docs/style.md).",
                      epilog=examples("afd student styled --from base-state --out checkpoints/base-state-styled"))
    q.add_argument("--from", dest="source", required=True, help="a 10-channel state student (folder or shipped name)")
    q.add_argument("--out", required=True, help="new or empty folder for the student")
    q.set_defaults(func=cmd_styled)


def cmd_import(args) -> int:
    from afd.cli import CLIError

    out, checkpoint = Path(args.out), Path(args.checkpoint)
    # Checked before anything is read: converting a 1.3B checkpoint takes a while.
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"--out {out}: exists and is not an empty folder; choose a new or empty one")
    if not checkpoint.is_file():
        raise FileNotFoundError(f"--checkpoint {checkpoint}: no such file")
    from afd.config import load_config
    from afd.student.backbones.wan_config import WanStudentConfig

    config = load_config(WanStudentConfig, args.config, args.overrides)  # --preset: the defaults
    try:
        from afd.student.backbones.wan_import import IMPORTERS
    except ImportError as e:  # diffusers missing: the message names the extra
        raise CLIError(str(e)) from None

    state = "generator" if args.no_ema else "generator_ema"
    model = IMPORTERS[args.source](checkpoint, config, ema=not args.no_ema)
    model.save_pretrained(out, extra={"imported_from": {"source": args.source, "checkpoint": str(checkpoint),
                                                        "state": state}})
    print(f"wrote {out}: {model.num_params() / 1e6:.1f}M-parameter Wan student from the {state!r} "
          f"weights of {checkpoint}")
    return 0


def cmd_styled(args) -> int:
    import json

    from afd.cli import CLIError
    from afd.student.backbones.transformer import CausalVideoTransformer
    from afd.student.shipped import resolve_checkpoint
    from afd.student.widen import widen_channels
    from afd.world.state_codec import STATE_CHANNELS, STYLED_CHANNELS

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"--out {out}: exists and is not an empty folder; choose a new or empty one")
    src = resolve_checkpoint(args.source)
    model = CausalVideoTransformer.from_pretrained(src)
    if model.config.codec != "state" or model.config.channels != STATE_CHANNELS:
        raise CLIError(f"--from {args.source}: a {STATE_CHANNELS}-channel state student is needed, got codec "
                       f"{model.config.codec!r} with {model.config.channels} channels")
    try:
        wide = widen_channels(model, STYLED_CHANNELS, -1.0)  # -1: strength 0, the plain look
    except ValueError as e:
        raise CLIError(f"--from {args.source}: {e}") from None
    # The source's provenance (how it was trained or adapted) carries over: these are its weights.
    extra = json.loads((src / "config.json").read_text()).get("extra") or {}
    wide.save_pretrained(out, extra={**extra, "styled_from": {"source": str(args.source), "path": str(src)}})
    print(f"wrote {out}: {args.source} with the cartoon strengths ({STYLED_CHANNELS} channels; plain until trained)")
    return 0


def cmd_tiny_wan(args) -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights: nothing to fetch
    try:
        import diffusers  # noqa: F401
    except ImportError as e:
        raise ValueError(f"the Wan student needs diffusers, which is not installed ({e}): "
                         "pip install 'afd[wan]'") from None
    from afd.student.backbones.wan_tiny import save_tiny_wan
    from afd.world.grammar import grammar_words

    # The tokenizer knows the world's words: configs/train/afd-wan-tiny.yaml trains on world prompts.
    paths = save_tiny_wan(args.out, grammar_words(), seed=args.seed, force=args.force)
    print(f"wrote {paths['student']} (a random CausalWanStudent), {paths['vae']} (Wan VAE), {paths['umt5']} (UMT5)")
    return 0

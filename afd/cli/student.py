"""``afd student ...``: student folders written locally (no download): ``tiny-wan``, a tiny random
latent Wan student with its VAE and UMT5 encoder."""

from __future__ import annotations

from afd.cli import examples


def register(sub) -> None:
    p = sub.add_parser("student", help="write student folders (a tiny random Wan student and its parts)",
                       epilog=examples("afd student tiny-wan --out runs/tiny-wan",
                                       "afd train --config configs/afd-wan-tiny.yaml"))
    ss = p.add_subparsers(dest="student_command", required=True, metavar="STUDENT_COMMAND")

    q = ss.add_parser("tiny-wan", help="a tiny random latent Wan student (Wan VAE codec, UMT5 text) for CPU runs",
                      description="Writes OUT/vae (a tiny random AutoencoderKLWan), OUT/umt5 (a tiny random UMT5 "
                                  "encoder with a word-level tokenizer of the world's prompt words) and OUT/student "
                                  "(a random CausalWanStudent reading both, by absolute path). Needs the wan extra.",
                      epilog=examples("afd student tiny-wan --out runs/tiny-wan",
                                      "afd train --config configs/afd-wan-tiny.yaml   # reads runs/tiny-wan/student"))
    q.add_argument("--out", required=True, help="folder to write vae/, umt5/ and student/ into")
    q.add_argument("--seed", type=int, default=0, help="seed of the random weights (the same seed, the same weights)")
    q.add_argument("--force", action="store_true", help="replace vae/, umt5/ and student/ if they exist")
    q.set_defaults(func=cmd_tiny_wan)


def cmd_tiny_wan(args) -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights: nothing to fetch
    try:
        import diffusers  # noqa: F401
    except ImportError as e:
        raise ValueError(f"the Wan student needs diffusers, which is not installed ({e}): pip install 'afd[wan]'") from None
    from afd.student.wan_tiny import save_tiny_wan

    paths = save_tiny_wan(args.out, seed=args.seed, force=args.force)
    print(f"wrote {paths['student']} (a random CausalWanStudent), {paths['vae']} (Wan VAE), {paths['umt5']} (UMT5)")
    return 0

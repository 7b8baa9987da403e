"""Small helpers shared by CLI commands."""

from __future__ import annotations

import json
from pathlib import Path


def write_manifest(directory: str | Path, entries: list[dict]) -> Path:
    """Write ``DIR/manifest.jsonl`` (one ``{"prompt", "seed", "path"}`` per clip), atomically."""
    from afd.io_utils import atomic_write_bytes
    from afd.teacher.folder import MANIFEST

    path = Path(directory) / MANIFEST
    atomic_write_bytes(path, "".join(json.dumps(e) + "\n" for e in entries).encode())
    return path


def add_stream_args(p, frames_help: str = "clip length in frames, a whole number of blocks (default: the "
                    "checkpoint's); longer clips stream with a rolling window (docs/long-videos.md)") -> None:
    """--frames, --window, --sink and --stream-cache: a student's streaming options (``afd sample``,
    ``afd eval``)."""
    p.add_argument("--frames", type=int, default=None, help=frames_help)
    p.add_argument("--window", type=int, default=None,
                   help="frames of context each block attends to past the training length (default: the "
                        "checkpoint's; 0: frames - block_frames)")
    p.add_argument("--sink", action="store_true", help="keep the first block in the rolling window (an attention sink)")
    p.add_argument("--stream-cache", choices=("reencode", "roll"), default=None,
                   help="past the training length, re-encode the window's cache or roll it (drop stale frames, "
                        "keep the rest as written; rotary-position students only). Default: the checkpoint's")


def apply_stream_args(model, args) -> None:
    """--window / --sink / --stream-cache onto a loaded student's config, and --frames checked against it (one
    ValueError naming the option otherwise)."""
    from afd.student.sample import blocks_for_frames

    cfg = model.config
    if args.window is not None:
        cfg.window = args.window
    if args.sink:
        cfg.sink = True
    if args.stream_cache is not None:
        cfg.stream_cache = args.stream_cache
    try:
        cfg.check_sampler()
        if args.frames is not None:
            blocks_for_frames(cfg, args.frames)
    except ValueError as e:
        raise ValueError(f"--frames/--window/--sink/--stream-cache: {e}") from None

"""Small helpers shared by CLI commands."""

from __future__ import annotations

import json
from pathlib import Path

from afd.teacher.folder import MANIFEST
from afd.video.io import atomic_write_bytes


def write_manifest(directory: str | Path, entries: list[dict]) -> Path:
    """Write ``DIR/manifest.jsonl`` (one ``{"prompt", "seed", "path"}`` per clip), atomically."""
    path = Path(directory) / MANIFEST
    atomic_write_bytes(path, "".join(json.dumps(e) + "\n" for e in entries).encode())
    return path

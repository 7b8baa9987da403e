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

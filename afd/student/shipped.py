"""Student checkpoints shipped in the repository's ``checkpoints/`` folder, by name or path."""

from __future__ import annotations

from pathlib import Path

CHECKPOINTS_DIR = Path(__file__).resolve().parents[2] / "checkpoints"
BASE_CHUNK = "base-chunk"


def shipped_names() -> list[str]:
    if not CHECKPOINTS_DIR.is_dir():
        return []
    return sorted(p.name for p in CHECKPOINTS_DIR.iterdir() if (p / "config.json").is_file())


def resolve_checkpoint(spec: str | Path) -> Path:
    """A student directory: ``spec`` itself if it is a directory, else a shipped name."""
    path = Path(spec)
    if path.is_dir():
        return path
    if (CHECKPOINTS_DIR / str(spec)).is_dir():
        return CHECKPOINTS_DIR / str(spec)
    names = ", ".join(shipped_names()) or "none found"
    raise FileNotFoundError(f"{spec}: no such student checkpoint directory (shipped checkpoints: {names})")

"""Student checkpoints shipped in the repository's ``checkpoints/`` folder, by name or path."""

from __future__ import annotations

from pathlib import Path

CHECKPOINTS_DIR = Path(__file__).resolve().parents[2] / "checkpoints"
BASE_CHUNK = "base-chunk"


def _format_tag(directory: Path) -> str | None:
    import json

    try:
        meta = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return meta.get("format") if isinstance(meta, dict) else None


def shipped_names(formats: frozenset[str] | None = None) -> list[str]:
    """Names of the shipped folders whose config.json ``format`` is in ``formats`` (default: the
    student formats; ``checkpoints/`` also holds the learned frame codec)."""
    from afd.student.base import STUDENT_FORMATS

    if not CHECKPOINTS_DIR.is_dir():
        return []
    formats = frozenset(STUDENT_FORMATS) if formats is None else formats
    return sorted(p.name for p in CHECKPOINTS_DIR.iterdir() if p.is_dir() and _format_tag(p) in formats)


def resolve_checkpoint(spec: str | Path) -> Path:
    """A student directory: ``spec`` itself if it is a directory, else a shipped name."""
    path = Path(spec)
    if path.is_dir():
        return path
    if (CHECKPOINTS_DIR / str(spec)).is_dir():
        return CHECKPOINTS_DIR / str(spec)
    names = ", ".join(shipped_names()) or "none found"
    raise FileNotFoundError(f"{spec}: no such student checkpoint directory (shipped checkpoints: {names})")

"""Where shipped checkpoints (students and the learned frame codec) are found, by name.

A name resolves to the first ``<root>/<name>`` folder of ``checkpoint_roots()``:

1. ``$AFD_HOME/checkpoints``. ``AFD_HOME`` defaults to the source checkout when afd runs from one
   (its ``checkpoints/`` is the committed one), else to ``~/.afd``. ``afd reproduce`` ships new
   students here (``shipping_root``), so what it ships is what a name then finds.
2. The checkpoints bundled in the installed package (``afd/_checkpoints``, copied from the
   checkout's ``checkpoints/`` when a wheel is built; see setup.py), so ``pip install .`` gives
   every shipped student without the checkout.

docs/student.md ("Shipped checkpoints").
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from afd.student.formats import STUDENT_FORMATS

_PACKAGE = Path(__file__).resolve().parents[1]  # .../afd
BUNDLED = _PACKAGE / "_checkpoints"
BASE_CHUNK = "base-chunk"


def afd_home() -> Path:
    """``$AFD_HOME``; by default the source checkout afd runs from, else ``~/.afd``."""
    if os.environ.get("AFD_HOME"):
        return Path(os.environ["AFD_HOME"]).expanduser()
    checkout = _PACKAGE.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "checkpoints").is_dir():
        return checkout
    return Path.home() / ".afd"


def shipping_root() -> Path:
    """Where ``afd reproduce`` ships checkpoints: ``$AFD_HOME/checkpoints``."""
    return afd_home() / "checkpoints"


def checkpoint_roots() -> list[Path]:
    """The folders searched for shipped names, in order (those that exist)."""
    roots = [shipping_root(), BUNDLED]
    return [r for i, r in enumerate(roots) if r.is_dir() and r.resolve() not in {q.resolve() for q in roots[:i]}]


def _format_tag(directory: Path) -> str | None:
    try:
        meta = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return meta.get("format") if isinstance(meta, dict) else None


def shipped_names(formats: frozenset[str] | None = None) -> list[str]:
    """Names of the shipped folders whose config.json ``format`` is in ``formats`` (default: the
    student formats; the roots also hold the learned frame codec)."""
    formats = frozenset(STUDENT_FORMATS) if formats is None else formats
    return sorted({p.name for root in checkpoint_roots() for p in root.iterdir()
                   if p.is_dir() and _format_tag(p) in formats})


def find_shipped(name: str) -> Path | None:
    """The folder of shipped checkpoint ``name`` (first root that has it), or None."""
    if not name or "/" in name or name in (".", ".."):
        return None
    return next((root / name for root in checkpoint_roots() if (root / name).is_dir()), None)


def resolve_checkpoint(spec: str | Path) -> Path:
    """A student directory: ``spec`` itself if it is a directory, else a shipped name."""
    path = Path(spec)
    if path.is_dir():
        return path
    found = find_shipped(str(spec))
    if found is not None:
        return found
    names = ", ".join(shipped_names()) or "none found"
    raise FileNotFoundError(f"{spec}: no such student checkpoint directory (shipped checkpoints: {names})")

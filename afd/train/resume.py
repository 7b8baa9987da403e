"""Which config changes a resumed run accepts: the one rule for ``afd pretrain`` and ``afd train``.

A checkpoint stores its resolved config. On ``--resume`` the saved config wins, except for the
fields a run declares mutable (run length and bookkeeping, never the optimisation); any other
difference is an error naming the field, so a resumed run never silently changes what it computes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from afd.config import config_from_dict, config_to_dict
from afd.train.checkpoint import read_checkpoint_state
from afd.train.config import AdaptConfig, public_config

T = TypeVar("T")

# afd train: fields that may change when resuming: run length, bookkeeping and where it runs (a copied run
# continues under its new run.dir), never the optimisation.
RESUME_MUTABLE = {"train.steps", "train.device", "run.dir", "run.save_every", "run.tensorboard", "eval.every",
                  "eval.judge", "teacher.budget", "dist.strategy", "dist.activation_checkpointing"}


def resumable_config(saved: T, cfg: T, where: str | Path, mutable: set[str]) -> T:
    """``saved`` with the fields of ``cfg`` named in ``mutable`` (dotted paths, e.g. "train.steps").

    A field the checkpoint predates (absent from ``saved``'s source, so at its default there) takes
    ``cfg``'s value only if that equals the default. Raises ValueError naming the first field that
    differs and may not change."""
    a, b = config_to_dict(saved), config_to_dict(cfg)
    merged = _merge(a, b, "", mutable, str(where))
    return config_from_dict(type(saved), merged, source=str(where))


def _merge(a: dict[str, Any], b: dict[str, Any], prefix: str, mutable: set[str], where: str) -> dict[str, Any]:
    out = dict(a)
    for key, new in b.items():
        path = prefix + key
        old = a.get(key)
        if isinstance(new, dict) and isinstance(old, dict):
            out[key] = _merge(old, new, path + ".", mutable, where)
        elif old != new:
            if path not in mutable:
                allowed = ", ".join(sorted(mutable))
                raise ValueError(f"{where}: {path} is {old!r} in the checkpoint but {new!r} now; "
                                 f"only {allowed} may change on resume")
            out[key] = new
    return out


def resumed_config(cfg: AdaptConfig, ckpt: Path) -> tuple[AdaptConfig, dict]:
    """``afd train``: the config to resume ``ckpt`` with (the checkpoint's own, with ``cfg``'s
    ``RESUME_MUTABLE`` fields) and the checkpoint's state."""
    if not ckpt.exists():
        raise FileNotFoundError(f"{ckpt}: nothing to resume")
    state = read_checkpoint_state(ckpt)
    saved = config_from_dict(AdaptConfig, state["config"], source=str(ckpt))
    # The checkpoint holds the teacher spec with its credentials masked: compare like with like,
    # then keep the real one to call the teacher with.
    spec = cfg.teacher.spec
    cfg = resumable_config(saved, public_config(cfg), ckpt, RESUME_MUTABLE)
    cfg.teacher.spec = spec
    return cfg, state

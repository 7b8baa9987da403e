"""A per-machine disk store of the frozen text encoder's encodings, one safetensors file a prompt.

Every ``afd`` process (each job of a reproduction, each torchrun rank) otherwise loads the
encoder, several seconds of importing transformers and reading the weights, to encode the same
few hundred grammar prompts again. With the store, a process whose prompts were all encoded
before never loads it.

Where: ``$AFD_TEXT_CACHE`` (``off`` switches the store off), else ``$XDG_CACHE_HOME/afd/text``
or ``~/.cache/afd/text``. Inside it, one folder per encoder identity: the encoder's name and
version, transformers' and torch's versions and the CPU kernels torch runs (the same prompt gives
slightly different floats under other kernels, and a store shared between machines must not mix
them). Files are written atomically (a temporary name, then a rename), so concurrent processes
and ranks may fill one store; an unreadable or misshapen file is encoded again and overwritten.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ENV = "AFD_TEXT_CACHE"
PARTS = ("tokens", "mask", "pooled")


def default_root() -> Path | None:
    """The store's root folder, or None when ``$AFD_TEXT_CACHE`` is ``off``."""
    env = os.environ.get(ENV, "").strip()
    if env.lower() in ("off", "0", "none"):
        return None
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "afd" / "text"


class EncodingStore:
    """Encodings of one encoder identity under ``root``.

    ``identity``: strings naming everything the encodings depend on (hashed into the folder name).
    ``shapes``: the expected shape of each part, (L, D), (L,) and (D,); a stored file of any other
    shape or dtype is treated as missing."""

    def __init__(self, root: str | Path, identity: tuple[str, ...], shapes: dict[str, tuple[int, ...]]):
        key = hashlib.sha256("\n".join(identity).encode()).hexdigest()[:16]
        self.dir = Path(root) / key
        self.shapes = shapes

    def _path(self, prompt: str) -> Path:
        h = hashlib.sha256(prompt.encode()).hexdigest()
        return self.dir / h[:2] / f"{h}.safetensors"

    def get(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """The stored (tokens, mask, pooled) of ``prompt``, or None when absent or unreadable."""
        path = self._path(prompt)
        if not path.is_file():
            return None
        try:
            parts = load_file(path)
        except Exception:  # a torn or foreign file: encode again
            return None
        if set(parts) != set(PARTS) or any(tuple(parts[k].shape) != self.shapes[k] for k in PARTS) \
                or parts["mask"].dtype != torch.bool:
            return None
        return parts["tokens"], parts["mask"], parts["pooled"]

    def put(self, prompt: str, tokens: torch.Tensor, mask: torch.Tensor, pooled: torch.Tensor) -> None:
        """Store ``prompt``'s encoding; a store that cannot be written (read-only, full) is skipped."""
        path = self._path(prompt)
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            os.close(fd)
            save_file({"tokens": tokens.contiguous(), "mask": mask.contiguous(), "pooled": pooled.contiguous()},
                      tmp, metadata={"prompt": prompt[:1000]})
            os.replace(tmp, path)
        except Exception:  # noqa: BLE001 - a store is an optimisation: failing to fill it must not stop a run
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)

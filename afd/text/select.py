"""Which text encoder a student reads: the one its config names.

A config without a ``text_encoder`` field (the built-in students) or with "minilm" gets the
process-wide MiniLM encoder, exactly as before this choice existed; "umt5" gets a UMT5 encoder
from the config's ``text_encoder_path`` (``afd.text.umt5``), loaded once per (path, length).
"""

from __future__ import annotations

import threading
from pathlib import Path

from afd.text.encoder import CachedTextEncoder, get_text_encoder

TEXT_ENCODERS = ("minilm", "umt5")

_LOADED: dict[tuple[str, int], CachedTextEncoder] = {}
_LOCK = threading.Lock()


def text_encoder_for(config) -> CachedTextEncoder:
    """The encoder of a student config (its ``text_encoder``, ``text_encoder_path``, ``text_tokens``)."""
    kind = getattr(config, "text_encoder", "minilm")
    if kind == "minilm":
        return get_text_encoder()
    if kind != "umt5":
        raise ValueError(f"unknown text encoder {kind!r}; available: {', '.join(TEXT_ENCODERS)}")
    from afd.text.umt5 import UMT5TextEncoder

    key = (str(Path(config.text_encoder_path).resolve()), int(config.text_tokens))
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = UMT5TextEncoder(*key)
        return _LOADED[key]

"""Frozen text encoder: prompt strings -> token states, mask and pooled vector."""

from afd.text.encoder import TEXT_DIM, TextEncoder, TextEncoding, get_text_encoder

__all__ = ["TEXT_DIM", "TextEncoder", "TextEncoding", "get_text_encoder"]

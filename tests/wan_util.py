"""Tiny random stand-ins for the Wan student's frozen parts, saved to local folders as the real
ones would be (nothing is downloaded): a Wan VAE and a UMT5 encoder with a word-level tokenizer.
They live in the package (``afd.student.wan_tiny``, also behind ``afd student tiny-wan``)."""

from __future__ import annotations

from afd.student.wan_tiny import LATENTS_MEAN, LATENTS_STD, save_tiny_umt5, save_tiny_wan_vae

__all__ = ["LATENTS_MEAN", "LATENTS_STD", "save_tiny_umt5", "save_tiny_wan_vae"]

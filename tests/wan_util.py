"""The tiny random Wan VAE, UMT5 encoder and student the Wan tests build on.

They live in the package (``afd.student.backbones.wan_tiny``, also behind ``afd student tiny-wan``); here their
tokenizers know the world grammar's words, as the CLI's do."""

from afd.student.backbones import wan_tiny
from afd.student.backbones.wan_tiny import LATENTS_MEAN, LATENTS_STD, save_tiny_wan_vae
from afd.world.grammar import grammar_words

__all__ = ["LATENTS_MEAN", "LATENTS_STD", "save_tiny_umt5", "save_tiny_wan", "save_tiny_wan_vae"]


def save_tiny_umt5(directory, **kw):
    return wan_tiny.save_tiny_umt5(directory, grammar_words(), **kw)


def save_tiny_wan(out, **kw):
    return wan_tiny.save_tiny_wan(out, grammar_words(), **kw)

"""Tiny random stand-ins for the Wan student's frozen parts, saved to local folders as the real
ones would be (nothing is downloaded): a Wan VAE and a UMT5 encoder with a word-level tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ["a", "the", "red", "blue", "ball", "cube", "falls", "bounces", "rolls", "video", "slowly"]
LATENTS_MEAN = [0.3, -0.5, 0.1, 0.8]
LATENTS_STD = [1.7, 0.4, 2.5, 1.1]


def save_tiny_wan_vae(directory: Path) -> Path:
    """An ``AutoencoderKLWan`` with 4 latent channels, 8x spatial and 4x temporal compression,
    random weights and a non-trivial latent mean/std."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(3)
    vae = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True], latents_mean=LATENTS_MEAN, latents_std=LATENTS_STD)
    vae.save_pretrained(directory)
    return Path(directory)


def save_tiny_umt5(directory: Path, dim: int = 16, pipeline: bool = False) -> Path:
    """A 1-layer ``UMT5EncoderModel`` of width ``dim`` and its tokenizer (lower-cased words of
    ``WORDS``, others <unk>, "</s>" appended) in one folder, or with ``pipeline`` in a diffusers
    pipeline's ``text_encoder/`` and ``tokenizer/`` subfolders."""
    directory = Path(directory)
    tok_dir, model_dir = (directory / "tokenizer", directory / "text_encoder") if pipeline else (directory, directory)
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(tok_dir)
    torch.manual_seed(4)
    config = UMT5Config(vocab_size=len(vocab), d_model=dim, d_kv=4, d_ff=2 * dim, num_layers=1, num_heads=2,
                        relative_attention_num_buckets=8, relative_attention_max_distance=16,
                        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    UMT5EncoderModel(config).save_pretrained(model_dir)
    return directory

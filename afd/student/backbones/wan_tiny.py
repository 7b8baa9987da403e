"""A tiny random latent Wan student with its frozen parts, written to local folders.

``afd student tiny-wan --out DIR`` (``save_tiny_wan``) writes three folders, as the real
Self-Forcing setup would have them, but with random weights small enough to train on a CPU:

- ``DIR/vae``: an ``AutoencoderKLWan`` with 4 latent channels, 8x spatial and 4x temporal
  compression (Wan2.1's layout, 8 base channels, a non-trivial latent mean/std);
- ``DIR/umt5``: a 1-layer ``UMT5EncoderModel`` of width 16 and a word-level tokenizer whose
  vocabulary is the words the caller gives (``afd student tiny-wan``: every word of the world's
  prompt grammar, so world prompts map to real tokens, not ``<unk>``), lower-cased, ``</s>`` appended;
- ``DIR/student``: a random ``CausalWanStudent`` (``save_pretrained``) with codec "wan-vae" and
  text encoder "umt5" reading those two folders.

The student's ``config.json`` holds **absolute** ``vae_path`` and ``text_encoder_path``: both are
resolved against the working directory when loaded (``afd.student.codecs.wan_vae.vae_dir``,
``afd.text.select.text_encoder_for``), and every student saved from this one (a run's
``student/``, its checkpoints) copies the config, so absolute paths keep working wherever the
adapted student is written. Moving ``DIR`` means writing it again (the same seed gives the same
weights).

Model space: 6 latent frames of 4x4x4 in 2 blocks of 3 (Self-Forcing's chunk-wise layout), which
decode to 21 frames of 32x32. The clips' rate is ``TINY_FPS`` = 10.5 fps, so they last 1.905 s:
no longer than the world teacher's clips (32 frames at 16 fps, 1.9375 s) and no shorter than the
world judge's evaluation format (16 frames at 8 fps, 1.875 s), so both the teacher's clips and
the judge's exact scores apply to it. Also used by the tests (``tests/wan_util.py``).
"""

from __future__ import annotations

from pathlib import Path

import torch

LATENTS_MEAN = [0.3, -0.5, 0.1, 0.8]
LATENTS_STD = [1.7, 0.4, 2.5, 1.1]
# Words every tiny tokenizer knows besides the caller's: the null prompt of guidance ("a video")
# and a few test prompts' words.
EXTRA_WORDS = ["the", "cube", "bounces", "video", "slowly"]
TEXT_DIM = 16
TEXT_TOKENS = 20  # the longest world prompt is 14 words + "</s>"
TINY_FPS = 10.5  # see the module docstring: 21 frames last 1.905 s

# The tiny student's WanStudentConfig fields (besides the codec and encoder paths).
TINY_STUDENT = dict(channels=4, height=4, width=4, frames=6, block_frames=3, patch_size=(1, 2, 2), heads=2,
                    head_dim=12, layers=2, ffn_dim=32, text_dim=TEXT_DIM, freq_dim=16, rope_max_seq_len=16,
                    steps=4, shift=5.0, fps=TINY_FPS, text_tokens=TEXT_TOKENS)


def save_tiny_wan_vae(directory: str | Path, seed: int = 3) -> Path:
    """An ``AutoencoderKLWan`` with 4 latent channels, 8x spatial and 4x temporal compression,
    random weights (from ``seed``) and a non-trivial latent mean/std, saved to ``directory``."""
    from diffusers import AutoencoderKLWan

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                               temperal_downsample=[False, True, True], latents_mean=LATENTS_MEAN,
                               latents_std=LATENTS_STD)
    vae.save_pretrained(directory)
    return Path(directory)


def save_tiny_umt5(directory: str | Path, words: list[str], dim: int = TEXT_DIM, pipeline: bool = False,
                   seed: int = 4) -> Path:
    """A 1-layer ``UMT5EncoderModel`` of width ``dim`` (random, from ``seed``) and its word-level
    tokenizer (the vocabulary ``words`` then ``EXTRA_WORDS``, lower-cased, each once; others <unk>;
    "</s>" appended) in one folder, or with ``pipeline`` in a diffusers pipeline's
    ``text_encoder/`` and ``tokenizer/``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Writing model shards" bar for a 12 kB model

    directory = Path(directory)
    tok_dir, model_dir = (directory / "tokenizer", directory / "text_encoder") if pipeline else (directory, directory)
    words = [w.lower() for w in [*words, *EXTRA_WORDS]]
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(dict.fromkeys(words))}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(tok_dir)
    config = UMT5Config(vocab_size=len(vocab), d_model=dim, d_kv=4, d_ff=2 * dim, num_layers=1, num_heads=2,
                        relative_attention_num_buckets=8, relative_attention_max_distance=16,
                        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = UMT5EncoderModel(config)
    model.save_pretrained(model_dir)
    return directory


def save_tiny_wan_student(directory: str | Path, vae_path: str | Path, umt5_path: str | Path, seed: int = 0,
                          **overrides) -> Path:
    """A random ``CausalWanStudent`` (``TINY_STUDENT``, then ``overrides``) reading the VAE and
    UMT5 folders given (stored as absolute paths: module docstring), saved to ``directory``.
    Every weight is perturbed from its init (unit norms, zero biases) so the model is not degenerate."""
    from afd.student.backbones.wan import CausalWanStudent
    from afd.student.backbones.wan_config import WanStudentConfig

    cfg = WanStudentConfig(**{**TINY_STUDENT, "codec": "wan-vae", "vae_path": str(Path(vae_path).resolve()),
                              "text_encoder": "umt5", "text_encoder_path": str(Path(umt5_path).resolve()),
                              **overrides})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CausalWanStudent(cfg)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return model.save_pretrained(directory, extra={"made_by": f"afd student tiny-wan (seed {seed}): random weights"})


PARTS = ("vae", "umt5", "student")


def save_tiny_wan(out: str | Path, words: list[str], seed: int = 0, force: bool = False) -> dict[str, Path]:
    """``out/vae``, ``out/umt5`` and ``out/student`` (module docstring); the encoder's tokenizer knows
    ``words`` (e.g. every word of the prompts it will read); the VAE and encoder weights come from
    ``seed + 3`` and ``seed + 4``, the student's from ``seed``. Existing folders are an error unless
    ``force`` (they are then replaced)."""
    import shutil

    out = Path(out)
    paths = {name: out / name for name in PARTS}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not force:
        raise FileExistsError(f"{existing[0]} exists: choose another --out, or pass --force to replace it")
    for p in paths.values():
        if p.exists():
            shutil.rmtree(p)
    save_tiny_wan_vae(paths["vae"], seed=seed + 3)
    save_tiny_umt5(paths["umt5"], words, seed=seed + 4)
    save_tiny_wan_student(paths["student"], paths["vae"], paths["umt5"], seed=seed)
    return paths

"""The UMT5 text encoder (afd.text.umt5) on a tiny random model and word-level tokenizer saved
locally, the per-student choice of encoder (afd.text.select), and a tiny latent Wan student with
UMT5 and the Wan VAE sampling end to end."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch

from afd.student.backbones.wan_config import WanStudentConfig
from afd.text.select import text_encoder_for
from wan_util import save_tiny_umt5, save_tiny_wan_vae

os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """(UMT5 width 16, UMT5 width 24 in a pipeline's layout, Wan VAE) folders."""
    pytest.importorskip("diffusers")
    root = tmp_path_factory.mktemp("wan-parts")
    wide = save_tiny_umt5(root / "pipeline", dim=24, pipeline=True)
    return save_tiny_umt5(root / "umt5", dim=16), wide, save_tiny_wan_vae(root / "vae")


def umt5_config(umt5, **kw):
    return SimpleNamespace(**{"text_encoder": "umt5", "text_encoder_path": str(umt5), "text_tokens": 8, **kw})


def test_the_encoding_shape_is_the_encoders(parts):
    umt5, wide, _ = parts
    enc = text_encoder_for(umt5_config(umt5))
    assert (enc.name, enc.dim, enc.max_tokens) == ("umt5", 16, 8)
    out = enc.encode(["a red ball falls", "The blue cube bounces slowly on a xylophone"])
    assert out.tokens.shape == (2, 8, 16) and out.pooled.shape == (2, 16)
    # words + "</s>"; the second prompt is cut at 8 tokens
    assert out.mask.sum(1).tolist() == [5, 8]
    assert out.tokens[0, 5:].abs().sum() == 0 and out.tokens[0, :5].abs().sum() > 0
    mean = out.tokens[0, :5].mean(0)
    torch.testing.assert_close(out.pooled[0], mean / mean.norm())
    # the same prompt alone or in another batch: the same encoding
    torch.testing.assert_close(enc.encode(["x", "a red ball falls"]).tokens[1], out.tokens[0])
    assert text_encoder_for(umt5_config(umt5)) is enc  # loaded once per folder and length
    assert text_encoder_for(umt5_config(umt5, text_tokens=4)).encode(["a red ball falls"]).tokens.shape == (1, 4, 16)
    wide_enc = text_encoder_for(umt5_config(wide))  # text_encoder/ + tokenizer/ subfolders
    assert wide_enc.dim == 24 and wide_enc.encode(["a ball"]).tokens.shape == (1, 8, 24)


def test_a_missing_or_wrong_folder_is_one_clear_error(parts, tmp_path):
    from afd.text.umt5 import UMT5TextEncoder

    with pytest.raises(FileNotFoundError, match="nowhere: no such UMT5 text encoder directory"):
        UMT5TextEncoder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: not a UMT5 encoder with its tokenizer"):
        UMT5TextEncoder(tmp_path / "empty")
    with pytest.raises(ValueError, match="text_encoder 'umt5' needs text_encoder_path"):
        WanStudentConfig(text_encoder="umt5")
    with pytest.raises(ValueError, match="unknown text encoder 'clip'"):
        text_encoder_for(SimpleNamespace(text_encoder="clip"))


def test_students_without_a_choice_keep_the_minilm_encoder():
    from afd.student.backbones.transformer_config import StudentConfig
    from afd.text.encoder import get_text_encoder

    assert text_encoder_for(StudentConfig()) is get_text_encoder()
    assert text_encoder_for(WanStudentConfig()) is get_text_encoder()


def wan_student(umt5, vae, **kw):
    from afd.student.backbones.wan import CausalWanStudent

    cfg = dict(channels=4, height=4, width=4, frames=4, block_frames=2, heads=2, head_dim=12, layers=1, ffn_dim=16,
               text_dim=16, freq_dim=16, rope_max_seq_len=8, steps=2, shift=5.0, codec="wan-vae", vae_path=str(vae),
               fps=16.0, text_encoder="umt5", text_encoder_path=str(umt5), text_tokens=8)
    torch.manual_seed(0)
    model = CausalWanStudent(WanStudentConfig(**{**cfg, **kw}))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def test_the_student_bundle_uses_its_own_encoder_and_checks_its_width(parts):
    from afd.student.base import Student
    from afd.student.codecs.wan_vae import WanVAECodec

    umt5, wide, vae = parts
    bundle = Student.wrap(wan_student(umt5, vae))
    assert bundle.text is text_encoder_for(umt5_config(umt5)) and isinstance(bundle.codec, WanVAECodec)
    assert bundle.encode_text(["a ball"]).tokens.shape == (1, 8, 16)
    with pytest.raises(ValueError, match="the student reads 16-dim text but the encoder umt5 gives 24"):
        Student.wrap(wan_student(wide, vae))


def test_a_latent_wan_student_with_umt5_samples_clips_end_to_end(parts):
    from afd.student.sample import generate

    umt5, _, vae = parts
    model = wan_student(umt5, vae)
    prompts, seeds = ["a red ball falls", "the blue cube rolls"], [0, 1]
    clips = generate(model, prompts, seeds, amp=False)
    assert clips.shape == (2, 13, 3, 32, 32)
    assert clips.isfinite().all() and clips.min() >= -1 and clips.max() <= 1
    assert not torch.equal(clips[0], clips[1])
    # guidance against the null prompt encodes it with the student's encoder too (MiniLM's
    # 384-dim tokens would not fit this student), and changes the clips
    guided = generate(model, prompts, seeds, amp=False, guidance=3.0)
    assert guided.shape == clips.shape and not torch.allclose(guided, clips)
    # per-clip noise: a clip does not depend on its batch (up to batched-matmul rounding)
    torch.testing.assert_close(generate(model, prompts[:1], seeds[:1], amp=False), clips[:1], atol=1e-5, rtol=1e-5)

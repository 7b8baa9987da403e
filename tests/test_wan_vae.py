"""The Wan VAE codec (afd.student.codecs.wan_vae) on a tiny random AutoencoderKLWan saved locally:
shapes and ranges, the latent normalisation, frame-count errors, gradients, the config choice."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from afd.config import config_from_dict, config_to_dict
from afd.student.backbones.wan_config import WanStudentConfig
from afd.student.codec import make_codec
from wan_util import LATENTS_MEAN, LATENTS_STD, save_tiny_wan_vae

os.environ["HF_HUB_OFFLINE"] = "1"

MEAN = torch.tensor(LATENTS_MEAN).view(1, 1, -1, 1, 1)
STD = torch.tensor(LATENTS_STD).view(1, 1, -1, 1, 1)


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    pytest.importorskip("diffusers")
    return save_tiny_wan_vae(tmp_path_factory.mktemp("vae") / "wan-vae")


def vae_config(vae_dir, **kw) -> WanStudentConfig:
    """A tiny latent student: 4 latent frames (2 blocks of 2) of 4 x 4 x 4 latents -> 13 frames of 32x32."""
    base = dict(channels=4, height=4, width=4, frames=4, block_frames=2, heads=2, head_dim=12, layers=1, ffn_dim=16,
                text_dim=16, freq_dim=16, rope_max_seq_len=8, steps=2, shift=5.0, codec="wan-vae",
                vae_path=str(vae_dir), fps=16.0)
    return WanStudentConfig(**{**base, **kw})


def clip(T: int, H: int = 32, W: int = 32, B: int = 2) -> torch.Tensor:
    torch.manual_seed(7)
    return torch.rand(B, T, 3, H, W) * 2 - 1


def test_shapes_ranges_and_format(vae_dir):
    codec = make_codec(vae_config(vae_dir))
    assert (codec.name, codec.fmt.frames, codec.fmt.height, codec.fmt.width,
            codec.fmt.fps) == ("wan-vae", 13, 32, 32, 16.0)
    with torch.no_grad():
        z = codec.encode(clip(9, 32, 48))
        assert z.shape == (2, 3, 4, 4, 6) and z.dtype == torch.float32
        x = codec.decode(z)
        assert x.shape == (2, 9, 3, 32, 48)
        assert x.isfinite().all() and x.min() >= -1 and x.max() <= 1
        # the student's clip of 4 latent frames decodes to the codec's format
        x = codec.decode(torch.randn(1, 4, 4, 4, 4))
    assert tuple(x.shape) == (1, codec.fmt.frames, 3, codec.fmt.height, codec.fmt.width)
    z = torch.randn(1, 2, 4, 3, 3)
    assert torch.equal(codec.project(z), z)


def test_latents_are_normalised_with_the_configs_mean_and_std(vae_dir):
    codec = make_codec(vae_config(vae_dir))
    vae = codec.vae
    x = clip(5)
    with torch.no_grad():
        raw = vae.encode(x.transpose(1, 2)).latent_dist.mode().transpose(1, 2)
        torch.testing.assert_close(codec.encode(x), (raw - MEAN) / STD, rtol=1e-6, atol=1e-6)
        # decode un-normalises before the VAE: a latent the VAE would read as ``raw``
        z = torch.randn(2, 2, 4, 4, 4)
        want = vae.decode((z * STD + MEAN).transpose(1, 2)).sample.transpose(1, 2)
        torch.testing.assert_close(codec.decode(z), want, rtol=1e-6, atol=1e-6)
    # the two maps are inverses on the latent side
    torch.testing.assert_close(codec.denormalise(codec.normalise(raw)), raw, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(codec.normalise(codec.denormalise(z)), z, rtol=1e-6, atol=1e-6)


def test_frame_counts_and_sizes_the_vae_cannot_encode_are_one_clear_error(vae_dir):
    codec = make_codec(vae_config(vae_dir))
    with pytest.raises(ValueError, match=r"encodes 1 \+ 4k frames; got 8 frames \(nearest: 5\)"):
        codec.encode(clip(8))
    with pytest.raises(ValueError, match="multiples of 8; got 32x20"):
        codec.encode(clip(5, 32, 20))
    with pytest.raises(ValueError, match=r"encodes \(B, T, 3, H, W\) clips, got \(2, 5, 32, 32\)"):
        codec.encode(clip(5)[:, :, 0])
    with pytest.raises(ValueError, match=r"decodes \(B, F, 4, h, w\) latents, got \(1, 2, 3, 4, 4\)"):
        codec.decode(torch.zeros(1, 2, 3, 4, 4))


def test_the_gradient_of_decoded_pixels_reaches_the_latents_only(vae_dir):
    codec = make_codec(vae_config(vae_dir))
    torch.manual_seed(8)
    z = (0.3 * torch.randn(1, 2, 4, 4, 4)).requires_grad_(True)
    x = codec.decode(z)
    (x * torch.randn_like(x)).sum().backward()
    assert z.grad is not None and z.grad.isfinite().all() and z.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in codec.vae.parameters())


def test_the_config_choice_loading_and_its_errors(vae_dir, tmp_path):
    from afd.student.codecs.wan_vae import load_vae

    cfg = vae_config(vae_dir)
    assert config_from_dict(WanStudentConfig, config_to_dict(cfg)) == cfg
    # one frozen VAE per folder, also found as a pipeline's vae/ subfolder
    pipeline = tmp_path / "pipeline"
    shutil.copytree(vae_dir, pipeline / "vae")
    assert load_vae(vae_dir) is make_codec(cfg).vae
    assert load_vae(pipeline) is make_codec(vae_config(pipeline)).vae
    assert load_vae(pipeline) is not load_vae(vae_dir)
    with pytest.raises(ValueError, match="codec 'wan-vae' needs vae_path"):
        vae_config(vae_dir, vae_path="")
    with pytest.raises(ValueError, match=r"gives 4-channel latents, but the student models 8 channels"):
        make_codec(vae_config(vae_dir, channels=8))
    with pytest.raises(FileNotFoundError, match=r"nowhere/config.json: missing \(expected a Wan VAE"):
        make_codec(vae_config(tmp_path / "nowhere"))
    bad = tmp_path / "bad"
    shutil.copytree(vae_dir, bad)
    meta = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**meta, "temperal_downsample": [False, False, True]}))
    with pytest.raises(ValueError,
                       match=r"bad/config.json: temperal_downsample \[False, False, True\] compresses time by 2"):
        vae_config(bad).video_format()
    (bad / "config.json").write_text(json.dumps({**meta, "patch_size": 2}))
    with pytest.raises(ValueError, match="patch_size 2 .* is not supported"):
        make_codec(vae_config(bad))


def test_a_latent_student_saves_and_loads_with_its_codec(vae_dir, tmp_path):
    from afd.student.backbones.wan import CausalWanStudent
    from afd.student.base import load_student_model

    torch.manual_seed(0)
    d = CausalWanStudent(vae_config(vae_dir)).save_pretrained(tmp_path / "student")
    loaded = load_student_model(d)
    assert loaded.config == vae_config(vae_dir)
    assert make_codec(loaded.config).fmt == make_codec(vae_config(vae_dir)).fmt
    # a config saved before the codec, fps and text-encoder fields existed means the defaults
    meta = json.loads((d / "config.json").read_text())
    for key in ("vae_path", "fps", "text_encoder", "text_encoder_path", "text_tokens"):
        meta["config"].pop(key)
    meta["config"].update(codec="pixel", channels=3)
    (d / "config.json").write_text(json.dumps(meta))
    old = CausalWanStudent.read_config(d)
    assert (old.codec, old.fps, old.text_encoder) == ("pixel", 0.0, "minilm")

"""The learned frame codec (afd/student/codecs/learned.py): shapes, round trip, persistence, gradients,
training and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from afd.student.backbones.transformer_config import StudentConfig
from afd.student.codec import make_codec
from afd.student.codecs.learned import STD_FLOOR, FrameAutoencoder, FrameCodecConfig, LearnedCodec, load_frame_codec
from afd.video.core import STUDENT
from afd.world.sample import sample_world
from afd.world.splits import load_split

CHECKPOINTS_DIR = Path(__file__).resolve().parents[1] / "checkpoints"  # the committed ones


def tiny_codec(latent_size: int = 1, seed: int = 0) -> FrameAutoencoder:
    torch.manual_seed(seed)
    return FrameAutoencoder(FrameCodecConfig(latent_size=latent_size, latent_channels=6, width=16,
                                             decoder_depth=2)).eval()


def world_clips(n: int = 4, mode: str = "real") -> torch.Tensor:
    prompts = load_split("physics-eval")[:n]
    return torch.stack([c.video.frames for c in sample_world(prompts, list(range(n)), mode, STUDENT)]).float()


@pytest.mark.parametrize("latent_size", [1, 2, 8])
def test_shapes_and_range(latent_size):
    codec = LearnedCodec(tiny_codec(latent_size))
    x = world_clips(2)
    z = codec.encode(x)
    assert z.shape == (2, 16, 6, latent_size, latent_size) and torch.isfinite(z).all()
    y = codec.decode(z)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    with pytest.raises(ValueError, match=r"\(B, T, 3, 32, 32\)"):
        codec.encode(x[:, :, :, :16])
    with pytest.raises(ValueError, match="decodes latents"):
        codec.decode(z[:, :, :3])


def test_normalisation_gives_unit_scale_latents():
    model = tiny_codec()
    raw = model.encode_raw(world_clips(8).flatten(0, 1))
    assert torch.allclose(raw.pow(2).mean((1, 2, 3)), torch.ones(len(raw)), atol=1e-3)  # unit RMS per frame
    scales = torch.tensor([2.0, 1.0, 0.5, 0.1, 0.01, 0.001])
    codes = 3 + scales[:, None, None] * torch.randn((4000, 6, 1, 1), generator=torch.Generator().manual_seed(0))
    model.set_normalisation(codes)
    z = model.normalise(codes)
    torch.testing.assert_close(z.mean((0, 2, 3)), torch.zeros(6), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std((0, 2, 3))[:4], torch.ones(4), atol=1e-3, rtol=0)
    # a near-constant channel is divided by the floor, not blown up to unit scale
    torch.testing.assert_close(model.latent_std[4:], torch.full((2,), STD_FLOOR))
    torch.testing.assert_close(model.decode(model.encode(world_clips(1).flatten(0, 1))),
                               model.decode_raw(raw[:16]), atol=1e-5, rtol=1e-5)


def test_the_decoder_passes_gradients_to_the_latents():
    """GAN and DMD backpropagate the discriminator's verdict through the decoder."""
    codec = LearnedCodec(tiny_codec())
    z = codec.encode(world_clips(2)).requires_grad_(True)
    codec.decode(z).sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_save_and_load_round_trip(tmp_path):
    model = tiny_codec(2)
    model.set_normalisation(model.encode_raw(world_clips(2).flatten(0, 1)))
    model.save_pretrained(tmp_path / "c")
    loaded = FrameAutoencoder.from_pretrained(tmp_path / "c")
    assert loaded.config == model.config and not any(p.requires_grad for p in loaded.parameters())
    x = world_clips(2).flatten(0, 1)
    torch.testing.assert_close(loaded.decode(loaded.encode(x)), model.decode(model.encode(x)))
    meta = json.loads((tmp_path / "c" / "config.json").read_text())
    meta["config"]["latent_channels"] = 7
    (tmp_path / "c" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="model.safetensors.*shape"):
        FrameAutoencoder.from_pretrained(tmp_path / "c")
    (tmp_path / "c" / "config.json").write_text(json.dumps({"format": "afd-student", "config": {}}))
    with pytest.raises(ValueError, match="config.json: not an afd codec config"):
        FrameAutoencoder.from_pretrained(tmp_path / "c")
    with pytest.raises(FileNotFoundError, match="no such codec directory"):
        load_frame_codec(tmp_path / "nowhere")


def test_a_student_must_model_the_codecs_latents(tmp_path):
    tiny_codec().save_pretrained(tmp_path / "c")
    good = StudentConfig(codec="learned", codec_path=str(tmp_path / "c"), channels=6, height=1, width=1, patch=1,
                         video_size=32)
    assert make_codec(good).fmt.height == 32
    bad = StudentConfig(codec="learned", codec_path=str(tmp_path / "c"), channels=8, height=1, width=1, patch=1,
                        video_size=32)
    with pytest.raises(ValueError, match=r"latents \(6, 1, 1\), but the student models \(8, 1, 1\)"):
        make_codec(bad)
    with pytest.raises(ValueError, match="needs codec_path"):
        StudentConfig(codec="learned", channels=6, height=1, width=1, patch=1, video_size=32)


def test_shipped_codec_round_trips_world_clips():
    """The shipped codec's round trip, within the tolerances its card reports (docs/latent-student.md)."""
    from afd.eval.codec import centroid_errors, round_trip
    from afd.student.shipped import shipped_names
    from afd.video.core import Video

    assert (CHECKPOINTS_DIR / "codec-world" / "README.md").read_text().startswith("# codec-world")
    assert "codec-world" not in shipped_names()  # a codec, not a student
    codec = LearnedCodec(load_frame_codec("codec-world"))
    for mode in ("loose", "real"):
        x = world_clips(16, mode)
        y = round_trip(codec, x)
        assert (y - x).abs().mean() < 0.02
        errors = centroid_errors([Video(v, 8.0) for v in x], [Video(v, 8.0) for v in y])
        assert errors["found_mismatch"] < 0.01 and errors["centroid_mean_px"] < 0.1, errors


def test_codec_train_resumes_exactly_and_evaluates(tmp_path, capsys):
    from afd.cli import main

    args = ["model.width=8", "model.latent_channels=4", "model.decoder_depth=2", "batch_clips=2",
            "frames_per_clip=2", "norm_clips=32", "save_every=2", "log_every=1"]
    assert main(["codec", "train", "--no-progress", f"out={tmp_path / 'a'}", "steps=4", *args]) == 0
    assert main(["codec", "train", "--no-progress", f"out={tmp_path / 'b'}", "steps=2", *args]) == 0
    assert main(["codec", "train", "--no-progress", "--resume", f"out={tmp_path / 'b'}", "steps=4", *args]) == 0
    a = FrameAutoencoder.from_pretrained(tmp_path / "a" / "final")
    b = FrameAutoencoder.from_pretrained(tmp_path / "b" / "final")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), f"{k} differs after resume"
    assert main(["codec", "train", "--no-progress", f"out={tmp_path / 'a'}", "steps=4", *args]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(["codec", "train", "--no-progress", f"out={tmp_path / 'c'}", "latent_noise=-1"]) == 2
    assert "latent_noise must be >= 0" in capsys.readouterr().err

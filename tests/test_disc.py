"""The discriminator D_phi(x0, y): shapes, losses, conditioning, persistence, LoRA, augmentations."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from afd.config import config_from_dict, config_to_dict
from afd.disc import (
    DiscConfig,
    Discriminator,
    augment_pair,
    bt_loss,
    flip_allowed,
    gan_loss,
    pairwise_accuracy,
    r1_penalty,
    r_phi,
)
from afd.disc.augment import augment
from afd.text import TextEncoding, get_text_encoder

LEFT = "a small red ball rolls to the left on a black background"
RIGHT = "a small red ball rolls to the right on a black background"
FALLS = "a large blue ball falls on a gray background"


def clips(b: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 16, 3, 32, 32, generator=g) * 2 - 1


def fake_text(b: int, seed: int = 0) -> TextEncoding:
    g = torch.Generator().manual_seed(seed)
    pooled = torch.nn.functional.normalize(torch.randn(b, 384, generator=g), dim=-1)
    return TextEncoding(torch.randn(b, 32, 384, generator=g), torch.ones(b, 32, dtype=torch.bool), pooled)


@torch.no_grad()
def perturb(model: torch.nn.Module, std: float = 0.05, seed: int = 0) -> None:
    """Move zero-initialised layers (FiLM, LoRA B) off zero so every path is live."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.requires_grad:
            p.add_(torch.randn(p.shape, generator=g) * std)


@pytest.fixture(scope="module")
def effnet():
    torch.manual_seed(0)
    return Discriminator(DiscConfig(backbone="efficientnet"))


# ----- config -----
@pytest.mark.parametrize("kw, field", [
    ({"backbone": "vit"}, "backbone"), ({"width": 0}, "width"), ({"instance_noise": -0.1}, "instance_noise"),
    ({"dropout": 1.0}, "dropout"), ({"text_conditioning": "cross"}, "text_conditioning"),
    ({"temporal_kernel": 2}, "temporal_kernel"), ({"lora_targets": ("depthwise",)}, "lora_targets"),
    ({"effnet_blocks": 17}, "effnet_blocks"), ({"depth": 6}, "depth"), ({"effnet_norm": "x"}, "effnet_norm"),
    ({"keypoints": 0}, "keypoints"), ({"motion_order": 3}, "motion_order"),
])
def test_config_validation_names_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        DiscConfig(**kw)


def test_config_dict_round_trip_and_unknown_keys():
    c = DiscConfig(backbone="efficientnet", lora_targets=["project"], width=8)
    assert c.lora_targets == ("project",)
    assert config_from_dict(DiscConfig, json.loads(json.dumps(config_to_dict(c)))) == c
    with pytest.raises(ValueError, match="d/config.json: unknown key 'widht'"):
        config_from_dict(DiscConfig, {"widht": 3}, source="d/config.json")
    with pytest.raises(ValueError, match="d/config.json: backbone: expected one of 'conv', 'efficientnet', "
                                         "'keypoint', got 'vit'"):
        config_from_dict(DiscConfig, {"backbone": "vit"}, source="d/config.json")


def test_saved_discriminator_config_is_checked_by_the_config_engine(tmp_path):
    d = Discriminator(DiscConfig(width=8, text_pooling="attn"))
    d.save_pretrained(tmp_path / "d")
    assert Discriminator.from_pretrained(tmp_path / "d").config == d.config
    meta = json.loads((tmp_path / "d" / "config.json").read_text())
    meta["config"]["text_pooling"] = "mean"
    (tmp_path / "d" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="config.json: text_pooling: expected one of 'pooled', 'attn', got 'mean'"):
        Discriminator.from_pretrained(tmp_path / "d")


# ----- shapes -----
def test_conv_shapes_dtype_and_gradients():
    d = Discriminator(DiscConfig())
    out = d(clips(3), fake_text(3))
    assert out.shape == (3,) and out.dtype == torch.float32 and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in d.trainable_parameters())
    assert d.num_params()["trainable"] == d.num_params()["total"]
    with pytest.raises(ValueError, match="expects clips of shape"):
        d(torch.zeros(2, 8, 3, 32, 32), fake_text(2))
    with pytest.raises(ValueError, match="prompt encodings"):
        d(clips(2), fake_text(3))


def test_efficientnet_shapes_dtype(effnet):
    out = effnet(clips(1), fake_text(1))
    assert out.shape == (1,) and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_efficientnet_batchnorm_folding_is_exact():
    from afd.disc.efficientnet import EfficientNetLite0Features

    net = EfficientNetLite0Features(16)
    net.load_pretrained()
    net.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = net(x)
        net.fold_batchnorm()
        folded = net(x)
    assert ref.shape == (2, 320, 2, 2)
    torch.testing.assert_close(folded, ref, atol=1e-3, rtol=1e-3)


# ----- losses -----
def test_resize_reads_non_square_clips_at_its_own_size():
    """disc.model.resize: a real student's 480x832-like frames reach the square backbone resized;
    without it only size x size clips are taken."""
    torch.manual_seed(0)
    d = Discriminator(DiscConfig(resize=True)).eval()
    wide = torch.rand(2, 16, 3, 24, 40) * 2 - 1
    out = d(wide, fake_text(2))
    assert out.shape == (2,) and torch.isfinite(out).all()
    square = torch.nn.functional.interpolate(wide.flatten(0, 1), size=(32, 32), mode="bilinear", antialias=True)
    torch.testing.assert_close(out, d(square.unflatten(0, (2, 16)), fake_text(2)))
    with pytest.raises(ValueError, match=r"\(B, 16, 3, H, W\)"):
        d(torch.zeros(2, 8, 3, 24, 40), fake_text(2))
    with pytest.raises(ValueError, match="expects clips of shape"):
        Discriminator(DiscConfig())(wide, fake_text(2))


def test_bt_loss_hand_computed():
    z = torch.zeros(4)
    assert bt_loss(z, z).item() == pytest.approx(math.log(2))
    # -log sigmoid(2 - 0) = log(1 + e^-2)
    assert bt_loss(torch.tensor([2.0]), torch.tensor([0.0])).item() == pytest.approx(math.log1p(math.exp(-2)))
    # G = 2 rollouts per prompt pair with their own prompt's teacher score
    t, s = torch.tensor([1.0, -1.0]), torch.tensor([0.0, 1.0, -1.0, -3.0])
    want = sum(math.log1p(math.exp(-(a - b))) for a, b in [(1, 0), (1, 1), (-1, -1), (-1, -3)]) / 4
    assert bt_loss(t, s).item() == pytest.approx(want)
    assert bt_loss(t.double(), s.double()).dtype == torch.float32
    assert bt_loss(torch.tensor([100.0]), torch.tensor([-100.0])).item() == pytest.approx(0.0, abs=1e-30)
    with pytest.raises(ValueError, match="multiple"):
        bt_loss(torch.zeros(2), torch.zeros(3))


def test_gan_loss_hand_computed():
    assert gan_loss(torch.zeros(3), torch.zeros(5)).item() == pytest.approx(math.log(2))
    # BCE(2, 1) = log(1 + e^-2); BCE(-1, 0) = log(1 + e^-1)
    want = 0.5 * (math.log1p(math.exp(-2)) + math.log1p(math.exp(-1)))
    assert gan_loss(torch.tensor([2.0]), torch.tensor([-1.0])).item() == pytest.approx(want)
    t, s = torch.tensor([0.5, -2.0]), torch.tensor([1.0, 3.0])
    ref = 0.5 * (torch.nn.functional.binary_cross_entropy_with_logits(t, torch.ones(2))
                 + torch.nn.functional.binary_cross_entropy_with_logits(s, torch.zeros(2)))
    assert gan_loss(t, s).item() == pytest.approx(ref.item())
    assert gan_loss(t, s).dtype == torch.float32


def test_accuracy_and_r_phi():
    t, s = torch.tensor([1.0, 0.0, 2.0, 5.0]), torch.tensor([0.0, 1.0, 2.0, -5.0])
    assert pairwise_accuracy(t, s).item() == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    want = sum(1 / (1 + math.exp(-(b - a))) for a, b in zip(t.tolist(), s.tolist())) / 4
    assert r_phi(t, s).item() == pytest.approx(want)
    assert r_phi(torch.zeros(3), torch.zeros(3)).item() == pytest.approx(0.5)
    assert pairwise_accuracy(t, s).dtype == r_phi(t, s).dtype == torch.float32


def test_r1_penalty_on_a_linear_critic():
    w = torch.randn(16, 3, 32, 32)
    x = clips(3).requires_grad_(True)
    d = (x * w).flatten(1).sum(1)
    r1 = r1_penalty(d, x)
    assert r1.item() == pytest.approx(w.pow(2).sum().item(), rel=1e-5)
    assert r1.ndim == 0 and r1.dtype == torch.float32
    with pytest.raises(ValueError, match="requires_grad"):
        r1_penalty(d.detach(), clips(3))


# ----- conditioning and noise -----
def test_prompt_changes_the_score():
    enc = get_text_encoder()
    text = enc.encode([LEFT, RIGHT, FALLS])
    video = clips(1).expand(3, -1, -1, -1, -1)
    for pooling in ("pooled", "attn"):
        torch.manual_seed(0)
        d = Discriminator(DiscConfig(text_pooling=pooling)).eval()
        perturb(d)
        with torch.no_grad():
            s = d(video, text)
        assert (s[0] - s[1]).abs() > 1e-4 and (s[0] - s[2]).abs() > 1e-4, (pooling, s)
    d = Discriminator(DiscConfig(text_conditioning="none")).eval()
    with torch.no_grad():
        s = d(video, text)
    torch.testing.assert_close(s, s[:1].expand(3))


def test_instance_noise_only_in_training():
    d = Discriminator(DiscConfig(instance_noise=0.2))
    x, te = clips(2), fake_text(2)
    d.train()
    assert not torch.equal(d(x, te), d(x, te))
    d.eval()
    torch.testing.assert_close(d(x, te), d(x, te), rtol=0, atol=0)


# ----- persistence -----
def test_conv_save_load_round_trip(tmp_path):
    d = Discriminator(DiscConfig(width=8, instance_noise=0.1))
    perturb(d)
    d.eval()
    x, te = clips(2), fake_text(2)
    d.save_pretrained(tmp_path / "d", extra={"step": 3})
    back = Discriminator.from_pretrained(tmp_path / "d")
    assert back.config == d.config and not back.training
    torch.testing.assert_close(back(x, te), d(x, te), rtol=0, atol=0)
    meta = json.loads((tmp_path / "d" / "config.json").read_text())
    assert meta["extra"] == {"step": 3} and meta["weights"] == "all"


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such discriminator directory"):
        Discriminator.from_pretrained(tmp_path / "nope")
    d = Discriminator(DiscConfig(width=8))
    d.save_pretrained(tmp_path / "d")
    (tmp_path / "d" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        Discriminator.from_pretrained(tmp_path / "d")
    (tmp_path / "d" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        Discriminator.from_pretrained(tmp_path / "d")
    d.save_pretrained(tmp_path / "e")
    meta = json.loads((tmp_path / "e" / "config.json").read_text())
    meta["config"]["width"] = 16  # the weights no longer fit the config
    (tmp_path / "e" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="model.safetensors.*shape"):
        Discriminator.from_pretrained(tmp_path / "e")


def test_efficientnet_save_load_round_trip(effnet, tmp_path):
    from safetensors.torch import load_file

    d = copy.deepcopy(effnet)
    perturb(d)
    d.eval()
    x, te = clips(1), fake_text(1)
    d.save_pretrained(tmp_path / "d")
    saved = load_file(str(tmp_path / "d" / "model.safetensors"))
    # only adapters + head: the frozen base comes from the wheel again
    assert any("lora_" in k for k in saved) and not any("base_layer" in k for k in saved)
    assert sum(v.numel() for v in saved.values()) == d.num_params()["trainable"]
    back = Discriminator.from_pretrained(tmp_path / "d")
    torch.testing.assert_close(back(x, te), d(x, te), rtol=1e-5, atol=1e-5)
    meta = json.loads((tmp_path / "d" / "config.json").read_text())
    meta["backbone_weights_sha256"] = "0" * 64
    (tmp_path / "d" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="sha256"):
        Discriminator.from_pretrained(tmp_path / "d")


# ----- LoRA -----
def test_lora_trains_only_adapters_and_head(effnet):
    d = copy.deepcopy(effnet).train()
    assert not d.net.backbone.training  # frozen BatchNorm statistics stay in eval mode
    trainable = {n for n, p in d.named_parameters() if p.requires_grad}
    in_backbone = {n for n in trainable if n.startswith("net.backbone.")}
    assert in_backbone and all("lora_" in n for n in in_backbone)
    counts = d.num_params()
    assert counts["trainable"] < counts["total"] // 4
    frozen = {k: v.clone() for k, v in d.net.backbone.state_dict().items() if "lora_" not in k}
    lora_before = {n: p.detach().clone() for n, p in d.named_parameters() if "lora_" in n}
    opt = torch.optim.AdamW(d.trainable_parameters(), lr=1e-2)
    x, te = clips(2), fake_text(2)
    for _ in range(2):  # LoRA B starts at zero, so A only moves from the second step on
        loss = bt_loss(d(x[:1], te.index(slice(0, 1))), d(x[1:], te.index(slice(1, 2))))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = d.net.backbone.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in frozen.items())
    assert all(not torch.equal(v, dict(d.named_parameters())[n]) for n, v in lora_before.items())


# ----- augmentations -----
def test_flip_allowed_words():
    assert not flip_allowed(LEFT) and not flip_allowed(RIGHT)
    assert not flip_allowed("a ball thrown leftwards") and not flip_allowed("it spins clockwise")
    assert flip_allowed(FALLS) and flip_allowed("a green square drifts upward on a navy background")
    assert flip_allowed("a bright ball")  # 'right' inside a word is not a direction


def test_augment_pair_flips_consistently():
    prompts = [LEFT, FALLS, RIGHT, "a small cyan square stays still on a black background"]
    teacher, student = clips(4, seed=1), clips(8, seed=2)  # G = 2 rollouts per prompt
    t2, s2, flipped = augment_pair(teacher, student, prompts, torch.Generator().manual_seed(0), p_flip=1.0)
    assert flipped.tolist() == [False, True, False, True]
    for i in range(4):
        tf = teacher[i].flip(-1) if flipped[i] else teacher[i]
        assert torch.equal(t2[i], tf)
        for j in (2 * i, 2 * i + 1):
            assert torch.equal(s2[j], student[j].flip(-1) if flipped[i] else student[j])
    # random draws: direction prompts never flip, whatever the generator says
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        _, _, f = augment_pair(teacher, student, prompts, g)
        assert not f[0] and not f[2]


def test_augment_single_clips():
    v = clips(3)
    out = augment(v, torch.Generator().manual_seed(0), flip_mask=[True, False, True], p_flip=1.0)
    assert torch.equal(out[0], v[0].flip(-1)) and torch.equal(out[1], v[1]) and torch.equal(out[2], v[2].flip(-1))
    assert torch.equal(augment(v, None, p_flip=0.0), v)


# ----- learning -----
def dots(n: int, moving: bool, g: torch.Generator) -> torch.Tensor:
    """White 3x3 dots on black: falling 1 px/frame (moving) or still, at random places."""
    x0 = torch.randint(4, 28, (n, 1, 1, 1), generator=g)
    y0 = torch.randint(2, 10, (n, 1, 1, 1), generator=g)
    t = torch.arange(16).view(1, 16, 1, 1)
    y = (y0 + t * int(moving)).clamp(max=29)
    rows, cols = torch.arange(32).view(1, 1, 32, 1), torch.arange(32).view(1, 1, 1, 32)
    m = (rows >= y) & (rows < y + 3) & (cols >= x0) & (cols < x0 + 3)
    return torch.where(m[:, :, None], 1.0, -1.0).expand(n, 16, 3, 32, 32)


def test_conv_discriminator_learns_moving_vs_static():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    d = Discriminator(DiscConfig()).train()
    opt = torch.optim.Adam(d.trainable_parameters(), lr=1e-3)
    te = fake_text(8)
    small = 0
    for _ in range(50):
        loss = bt_loss(d(dots(8, True, g), te), d(dots(8, False, g), te))
        opt.zero_grad()
        loss.backward()
        opt.step()
        small = small + 1 if loss.item() < 0.01 else 0
        if small == 3:  # separated; saturated steps only cost time (denormal gradients)
            break
    d.eval()
    with torch.no_grad():
        acc = pairwise_accuracy(d(dots(32, True, g), fake_text(32, 1)), d(dots(32, False, g), fake_text(32, 1)))
    assert acc.item() > 0.9


# ----- the trajectory (keypoint) backbone -----
def test_keypoint_shapes_gradients_and_round_trip(tmp_path):
    d = Discriminator(DiscConfig(backbone="keypoint", width=8, keypoints=3))
    out = d(clips(3), fake_text(3))
    assert out.shape == (3,) and out.dtype == torch.float32 and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in d.trainable_parameters())
    pos = d.net.keypoints(clips(2), None if d.net.text is None else d.net.text(fake_text(2)))
    assert pos.shape == (2, 16, 3, 2) and pos.min() >= 0 and pos.max() <= 31  # pixels inside the frame
    perturb(d)
    d.eval()
    d.save_pretrained(tmp_path / "d")
    back = Discriminator.from_pretrained(tmp_path / "d")
    assert back.config == d.config
    x, te = clips(2), fake_text(2)
    torch.testing.assert_close(back(x, te), d(x, te), rtol=0, atol=0)


def _disc_clips(paths: torch.Tensor) -> torch.Tensor:
    """(B, T, 2) pixel centres -> (B, T, 3, 32, 32) red discs of radius 3 on black, in [-1, 1]."""
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    d2 = (xs - paths[..., 0, None, None]) ** 2 + (ys - paths[..., 1, None, None]) ** 2
    inside = (3.0 - d2.sqrt()).clamp(0, 1)  # anti-aliased edge, like the world's renderer
    video = -torch.ones(*paths.shape[:2], 3, 32, 32)
    video[:, :, 0] += 2 * inside
    return video


def test_keypoint_d_tells_a_falling_ball_from_a_constant_velocity_one():
    """Same renderer on both sides, only the trajectory differs: gravity (teacher) vs none."""
    def paths(n: int, gravity: bool, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        t = torch.arange(16.0)[None, :]
        x0, y0 = 6 + 20 * torch.rand(n, 1, generator=g), 4 + 6 * torch.rand(n, 1, generator=g)
        vx, vy = torch.rand(n, 1, generator=g) - 0.5, 0.2 + 0.6 * torch.rand(n, 1, generator=g)
        y = y0 + vy * t + (0.05 * t * t if gravity else 0.75 * t)  # the same net drop, other shape
        return torch.stack([(x0 + vx * t).clamp(4, 27), y.clamp(4, 27)], dim=-1)

    torch.manual_seed(0)
    d = Discriminator(DiscConfig(backbone="keypoint", width=8, keypoints=2, text_conditioning="none"))
    opt = torch.optim.Adam(d.trainable_parameters(), lr=3e-3)
    te = fake_text(16)
    for step in range(60):
        teacher, student = _disc_clips(paths(16, True, 2 * step)), _disc_clips(paths(16, False, 2 * step + 1))
        loss = bt_loss(d(teacher, te), d(student, te))
        opt.zero_grad()
        loss.backward()
        opt.step()
    d.eval()
    with torch.no_grad():
        t_scores = d(_disc_clips(paths(64, True, 1000)), fake_text(64))
        s_scores = d(_disc_clips(paths(64, False, 1001)), fake_text(64))
    assert pairwise_accuracy(t_scores, s_scores).item() > 0.9


@pytest.mark.parametrize("pooling", ["pooled", "attn"])
def test_the_text_head_reads_the_encoders_width(pooling):
    """A student with another text encoder (UMT5: its d_model) gives D encodings of another width."""
    from afd.disc import DiscConfig, Discriminator
    from afd.text.encoder import TextEncoding

    d = Discriminator(DiscConfig(width=4, hidden=16, text_dim=24, text_pooling=pooling))
    pooled = torch.nn.functional.normalize(torch.randn(2, 24), dim=-1)
    text = TextEncoding(torch.randn(2, 5, 24), torch.ones(2, 5, dtype=torch.bool), pooled)
    assert d(torch.rand(2, 16, 3, 32, 32) * 2 - 1, text).shape == (2,)


def test_conv_second_differences_are_the_acceleration_trace():
    from afd.disc.common import frame_differences

    x = torch.randn(2, 3, 6, 4, 4)
    acc = frame_differences(frame_differences(x, dim=2), dim=2)
    assert torch.allclose(acc[:, :, 2:], x[:, :, 2:] - 2 * x[:, :, 1:-1] + x[:, :, :-2], atol=1e-6)
    torch.manual_seed(0)
    d = Discriminator(DiscConfig(width=4, hidden=16, motion_order=2))
    assert d.net.stem.in_channels == 3 + 6 + 2
    out = d(torch.rand(2, 16, 3, 32, 32) * 2 - 1, fake_text(2))
    assert out.shape == (2,) and torch.isfinite(out).all()

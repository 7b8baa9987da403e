"""The stylised ("cartoon") domain: its renderer, the reading of the look, and the style measures."""

import json

import numpy as np
import pytest
import torch

from afd.cli import main
from afd.eval.score import evaluate, to_eval_format
from afd.eval.style import style_scores
from afd.eval.tracker import track
from afd.video.core import STUDENT, resample
from afd.world.appearance import fit_gradient, fit_look
from afd.world.grammar import parse_prompt, with_style
from afd.world.render import OUTLINE_RGB, Style, background_rows, layers, render
from afd.world.sample import sample_world
from afd.world.splits import load_split
from afd.world.state_codec import STYLED_CHANNELS, StateCodec, params_to_state


def _random_scene(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    u = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    return dict(cx=u(n, 1) * 0.6 + 0.2, cy=u(n, 1) * 0.6 + 0.2, radius=u(n, 1) * 0.05 + 0.07,
                is_square=(u(n, 1) > 0.5).float(), color=u(n, 3), background=u(n, 3) * 0.4), \
        Style(u(n), u(n), u(n))


def test_zero_strengths_are_the_plain_look_and_plain_clips_are_unchanged():
    scene, _ = _random_scene(8)
    plain = render(**scene, size=32)
    zero = render(**scene, size=32, style=Style(*(torch.zeros(8),) * 3))
    assert (plain - zero).abs().max() < 1e-6
    p = "a large red ball falls on a navy background"
    a, b = sample_world([p, p], [5, 5])
    assert a.record.style == "plain" and torch.equal(a.video.frames, b.video.frames)


def test_cartoon_clip_moves_as_its_plain_twin_and_is_deterministic():
    p = "a small green ball is thrown to the left on a gray background"
    plain, cart, again = sample_world([p, with_style(p, "cartoon"), with_style(p, "cartoon")], [3, 3, 3])
    assert cart.record.style == "cartoon" and cart.record.centers == plain.record.centers
    assert torch.equal(cart.video.frames, again.video.frames)
    assert not torch.equal(cart.video.frames, plain.video.frames)


def test_cartoon_look_is_drawn_exactly():
    """A large ball in the middle of a 64x64 frame: the pixel at its centre is the unshaded-at-top
    fill, a pixel in the outline band is the ink, the corner rows are the gradient's."""
    size, r = 64, 0.2
    one = torch.ones(1)
    frame = (render(torch.tensor([[0.5]]), torch.tensor([[0.5]]), torch.tensor([r]), torch.zeros(1),
                    torch.tensor([[0.9, 0.2, 0.1]]), torch.tensor([[0.0, 0.0, 0.3]]), size,
                    Style(one, one, one))[0, 0] + 1) / 2
    band_row, col = int(0.5 * size - r * size) + 1, size // 2  # inside the band (0.035 * 64 = 2.2 px)
    assert torch.allclose(frame[:, band_row, col], torch.tensor(OUTLINE_RGB), atol=1e-6)
    centre = frame[:, size // 2, col]  # half way down the object: shaded by half the depth
    assert torch.allclose(centre, torch.tensor([0.9, 0.2, 0.1]) * (1 - 0.3 * (0.5 / (2 * r * size) + 0.5)), atol=1e-5)
    rows = background_rows(torch.tensor([0.0, 0.0, 0.3]), one[0], size)
    assert torch.allclose(frame[:, 0, 0], rows[0], atol=1e-6) and torch.allclose(frame[:, -1, 0], rows[-1], atol=1e-6)
    assert rows[0, 0] > rows[-1, 0] > 0  # lighter at the top


def test_render_is_differentiable_in_the_strengths():
    scene, style = _random_scene(4)
    strengths = [s.clone().requires_grad_(True) for s in style]
    render(**scene, size=32, style=Style(*strengths)).sum().backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in strengths)


def test_look_and_gradient_read_back_exactly_from_a_render():
    scene, style = _random_scene(256)
    frames = (render(**scene, size=32, style=style)[:, 0] + 1) / 2
    bg, grad = fit_gradient(frames[:, :, 0].median(-1).values, frames[:, :, -1].median(-1).values, 32)
    assert (grad - style.gradient).abs().max() < 1e-4 and (bg - scene["background"]).abs().max() < 1e-4
    lay = layers(scene["cx"], scene["cy"], scene["radius"], scene["is_square"], 32, styled=True)
    fill, outline, shading = fit_look(frames, lay, background_rows(scene["background"], style.gradient, 32))
    assert (fill - scene["color"]).abs().max() < 1e-3
    assert (outline - style.outline).abs().max() < 1e-3 and (shading - style.shading).abs().max() < 1e-3


@pytest.fixture(scope="module")
def style_clips():
    prompts = load_split("style-eval")[::4]
    cart = sample_world(prompts, [0] * len(prompts))
    plain = sample_world([parse_prompt(p).plain_text for p in prompts], [0] * len(prompts))
    return prompts, cart, plain


def test_style_measures_tell_the_two_looks_apart(style_clips):
    prompts, cart, plain = style_clips
    cs = [style_scores(track(to_eval_format(c.video), "cartoon"), parse_prompt(p)) for c, p in zip(cart, prompts)]
    ps = [style_scores(track(to_eval_format(c.video), "cartoon"), parse_prompt(p)) for c, p in zip(plain, prompts)]
    for key in ("outline", "gradient"):
        assert np.mean([s[key] for s in cs]) > 97 and np.mean([s[key] for s in ps]) < 10
    assert np.mean([s["shading"] for s in cs]) > 80 and np.mean([s["shading"] for s in ps]) < 15
    assert min(s["style_adherence"] for s in cs) > max(s["style_adherence"] for s in ps)


def test_physics_and_general_measures_hold_on_the_cartoon_world(style_clips):
    prompts, cart, plain = style_clips
    rc, _ = evaluate([c.video for c in cart], prompts)
    rp, _ = evaluate([c.video for c in plain], [c.record.prompt for c in plain])
    assert rc["groups"]["physics"]["physical_consistency"] > 95
    # The Fréchet term is biased on 12 general clips, so the general total is read against the twins'.
    assert rc["groups"]["general"]["total"] > rp["groups"]["general"]["total"] - 2
    assert all(rc["groups"]["general"][k] == 100 for k in ("persistence", "color_accuracy", "background_accuracy"))
    assert rc["groups"]["physics"]["physical_consistency"] > rp["groups"]["physics"]["physical_consistency"] - 3
    assert rc["groups"]["style"]["style_adherence"] > 90 and "style" not in rp["groups"]
    assert set(rc["stderr"]["style"]) == set(rc["groups"]["style"])
    assert rc["stderr"]["physics"] is not None


def test_eval_cli_reports_style_adherence(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["eval", "--world", "loose", "--split", "style-eval", "--prompts-per-split", "6", "--per-prompt", "1",
                 "--no-progress", "--json", str(out)]) == 0
    assert "style_adherence" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert 0 <= report["groups"]["style"]["style_adherence"] <= 100 and report["n_videos"] == 6


def _styled_states(B: int = 12, T: int = 8):
    g = torch.Generator().manual_seed(0)
    u = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    cx = (0.25 + 0.5 * u(B, 1) + 0.02 * torch.arange(T)).clamp(max=0.85)
    cy = (0.3 + 0.4 * u(B, 1)).expand(B, T)
    r = (0.07 + 0.05 * (u(B, 1) > 0.5).float()).expand(B, T)
    mix = (u(B, 1) > 0.5).float().expand(B, T)
    col, bg = (0.3 + 0.7 * u(B, 1, 3)).expand(B, T, 3), (0.4 * u(B, 1, 3)).expand(B, T, 3)
    return params_to_state(cx, cy, r, mix, col, bg, Style(*(u(B, 1).expand(B, T) for _ in range(3))))


def test_styled_state_codec_round_trip():
    codec = StateCodec(32, channels=STYLED_CHANNELS)
    z = _styled_states()
    video = codec.decode(z)
    z2 = codec.encode(video)
    err = (z2 - z).abs()[..., 0, 0].amax((0, 1))
    assert err[:2].max() < 0.01 and err[2] < 0.05  # centre (1/4 of a frame height per unit), radius
    assert err[3] == 0 and err[7:10].max() < 1e-4 and err[12] < 1e-4  # shape, background, gradient exact
    assert err[10] < 0.05 and err[11] < 0.4  # outline; shading trades off against a small fill's colour
    assert (codec.decode(z2) - video).abs().max() < 0.05  # a 255-level pixel within ~6 levels


def test_styled_codec_reads_the_world_looks():
    prompts = load_split("style-train")[::25]
    codec = StateCodec(32, channels=STYLED_CHANNELS)
    for style, want in (("cartoon", 1.0), ("plain", 0.0)):
        clips = sample_world([with_style(p, style) for p in prompts], [0] * len(prompts))
        video = torch.stack([resample(c.video, STUDENT).frames for c in clips])
        strengths = (codec.encode(video)[:, :, 10:, 0, 0] + 1) / 2
        assert (strengths - want).abs().amax() < 0.15, (style, strengths.amin(), strengths.amax())


def test_styled_student_config():
    from afd.student.backbones.transformer_config import StudentConfig
    from afd.student.codec import make_codec

    cfg = StudentConfig(codec="state", channels=STYLED_CHANNELS, height=1, width=1, patch=1, video_size=32,
                        frames=8, block_frames=2, dim=32, depth=2, heads=2, steps=2, shift=1.0)
    codec = make_codec(cfg)
    assert codec.channels == STYLED_CHANNELS and codec.decode(_styled_states(2, 8)).shape == (2, 8, 3, 32, 32)
    with pytest.raises(ValueError, match="10 or 13 with the cartoon strengths"):
        make_codec(StudentConfig(codec="state", channels=12, height=1, width=1, patch=1, video_size=32))


def test_score_as_reads_the_motion_under_the_look_drawn(capsys):
    """The world's cartoon clips scored as plain lose their measures; scored as what they are, not."""
    args = ["eval", "--world", "real", "--split", "style-eval", "--prompts-per-split", "8", "--per-prompt", "1",
            "--no-progress"]
    assert main([*args, "--score-as", "plain"]) == 0
    out = capsys.readouterr().out
    assert "scored as if every prompt named the plain style" in out and "style group" not in out
    assert main([*args, "--score-as", "cartoon"]) == 0
    assert "style_adherence" in capsys.readouterr().out
    assert main(["eval", "--videos", "x", "--score-as", "plain"]) == 2
    assert "--score-as applies to --checkpoint and --world" in capsys.readouterr().err


def test_plain_clip_is_the_same_beside_a_stylised_one():
    p = "a small red ball falls on a black background"
    alone, = sample_world([p], [2])
    mixed = sample_world([p, with_style(p, "cartoon")], [2, 2])
    assert torch.equal(alone.video.frames, mixed[0].video.frames)

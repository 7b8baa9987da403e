import numpy as np
import pytest
import torch

from afd.cli import main
from afd.video.io import read_video
from afd.world.physics import LOOSE, REAL, draw_constants
from afd.world.sample import sample_world

DROP = "a large red ball falls on a black background"


def test_same_prompt_seed_mode_gives_same_clip_bit_for_bit():
    a = sample_world([DROP], [7], "loose")[0]
    batch = sample_world(["a small blue ball rolls to the left on a gray background", DROP], [3, 7], "loose")
    assert torch.equal(a.video.frames, batch[1].video.frames)
    assert torch.equal(a.video.frames, sample_world([DROP], [7], "loose")[0].video.frames)
    assert a.record.to_json() == batch[1].record.to_json()


def test_seed_and_mode_change_the_clip():
    a, b = sample_world([DROP, DROP], [0, 1], "real")
    assert not torch.equal(a.video.frames, b.video.frames)


def test_native_format_and_value_range():
    c = sample_world([DROP], [0])[0]
    assert tuple(c.video.frames.shape) == (32, 3, 64, 64) and c.video.fps == 16.0
    assert c.video.frames.min() >= -1 and c.video.frames.max() <= 1


def test_dropped_ball_accelerates_at_g_and_bounces():
    for seed in range(5):
        rec = sample_world([DROP], [seed], "real")[0].record
        y = np.array(rec.centers)[:, 1]
        t_first = rec.floor_bounces[0]
        pre = [i for i in range(len(y)) if (i + 1) / rec.fps < t_first]
        d2 = np.diff(y[pre], 2) * rec.fps ** 2
        assert np.allclose(d2, REAL.g, rtol=1e-6), d2
        assert 2 <= len(rec.floor_bounces) <= 3
        # Rebound: the ball rises again, to a lower height (restitution < 1).
        after = y[[i for i in range(len(y)) if i / rec.fps > t_first]]
        assert after.min() < y.max() - 0.1 and after.min() > y[0]


def test_real_world_contract_bounces_and_frame():
    from afd.world.grammar import parse_prompt
    from afd.world.splits import load_split

    prompts = load_split("physics-eval") + load_split("general-eval")
    clips = sample_world(prompts * 3, list(range(len(prompts) * 3)), "real")
    for c in clips:
        a = parse_prompt(c.record.prompt)
        xy = np.array(c.record.centers)
        r = c.record.radius
        assert (xy >= r - 1e-9).all() and (xy <= 1 - r + 1e-9).all(), c.record.prompt  # never leaves
        if a.motion.startswith("rolls") or a.domain == "general":
            assert not c.record.floor_bounces
        else:
            assert c.record.floor_bounces, c.record.prompt


def test_loose_constants_span_the_configured_ranges():
    rng = np.random.default_rng(0)
    cs = [draw_constants("loose", rng) for _ in range(4000)]
    g = np.array([c.g for c in cs]) / REAL.g
    e = np.array([c.restitution for c in cs])
    mu = np.array([c.friction for c in cs]) / REAL.friction
    assert g.min() < 0.02 and g.max() > 1.97 and g.max() <= LOOSE.g_range[1]
    assert e.min() < 0.01 and 0.99 < e.max() <= 1.0
    assert mu.min() < 0.02 and mu.max() > 2.9
    near = (np.abs(g - 1) <= LOOSE.near_real_tol + 1e-9) & (np.abs(mu - 1) <= LOOSE.near_real_tol + 1e-9)
    assert abs(near.mean() - LOOSE.p_near_real) < 0.04  # the near-real share (plus rare chance hits)


def test_loose_clips_differ_from_real_only_in_physics():
    gen = "a small cyan ball drifts upward on a black background"
    real, loose = sample_world([gen, DROP], [4, 4], "real"), sample_world([gen, DROP], [4, 4], "loose")
    assert torch.equal(real[0].video.frames, loose[0].video.frames)  # general motions identical
    assert real[1].record.centers[0] == loose[1].record.centers[0]  # same initial condition draw ...
    assert real[1].record.constants != loose[1].record.constants  # ... different physics


def test_unknown_mode_and_mismatched_lengths():
    with pytest.raises(ValueError, match="valid modes"):
        sample_world([DROP], [0], "lunar")
    with pytest.raises(ValueError, match="1 prompts but 2 seeds"):
        sample_world([DROP], [0, 1])


@pytest.mark.parametrize("ext", [".npz", ".mp4", ".gif"])
def test_cli_world_sample(tmp_path, ext):
    out = tmp_path / f"clip{ext}"
    assert main(["world", "sample", "--prompt", DROP, "--mode", "loose", "--seed", "3", "--out", str(out)]) == 0
    v = read_video(out)
    assert v.frames.shape[0] == 32 and abs(v.fps - 16) < 1e-6


def test_cli_world_sample_bad_prompt_is_one_line_error(tmp_path, capsys):
    assert main(["world", "sample", "--prompt", "a huge red ball falls on a black background",
                 "--out", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err
    assert "unknown size 'huge'" in err and "Traceback" not in err


def test_cli_world_render_writes_manifest(tmp_path):
    import json

    assert main(["world", "render", "--split", "general-eval", "--mode", "real", "--per-prompt", "2",
                 "--out", str(tmp_path)]) == 0
    lines = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == 96 and {line["seed"] for line in lines} == {0, 1}
    assert read_video(tmp_path / lines[5]["path"]).frames.shape == (32, 3, 64, 64)

"""Streaming past the training length (docs/long-videos.md): the rolling window, its re-encoded
cache against recomputation, bounded cache memory, the noise of long clips, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from afd.student.backbones.transformer import CausalVideoTransformer
from afd.student.backbones.transformer_config import StudentConfig
from afd.student.rollout import StreamNoise, context_blocks, rollout, rollout_noise
from afd.student.sample import blocks_for_frames, generate
from afd.student.schedule import step_levels
from afd.text import get_text_encoder
from train_util import perturbed_model

PROMPTS = ["a small red ball falls on a black background",
           "a large blue square slides to the left on a gray background"]


def tiny_model(block_frames: int = 4, **kw) -> CausalVideoTransformer:
    """A 12-frame student whose zero-initialised branches are perturbed (``perturbed_model``)."""
    return perturbed_model(block_frames=block_frames, **kw)


@pytest.fixture(scope="module")
def text():
    return get_text_encoder().encode(PROMPTS)


def test_context_window_rule():
    cfg = StudentConfig(frames=16, block_frames=4)  # W = 12 frames: 3 blocks
    assert [context_blocks(k, cfg) for k in range(4)] == [[], [0], [0, 1], [0, 1, 2]]
    assert context_blocks(4, cfg) == [1, 2, 3] and context_blocks(9, cfg) == [6, 7, 8]
    sink = StudentConfig(frames=16, block_frames=4, sink=True)
    assert context_blocks(3, sink) == [0, 1, 2] and context_blocks(9, sink) == [0, 7, 8]
    short = StudentConfig(frames=16, block_frames=4, window=8)  # a smaller window applies from the start
    assert context_blocks(2, short) == [0, 1] and context_blocks(3, short) == [1, 2]
    frame = StudentConfig(frames=16, block_frames=1)
    assert context_blocks(15, frame) == list(range(15)) and context_blocks(40, frame) == list(range(25, 40))


@pytest.mark.parametrize("block_frames,kw", [(4, {}), (4, {"sink": True}), (1, {}), (1, {"window": 6, "sink": True})])
def test_streamed_rollout_cache_equals_recomputation(text, block_frames, kw):
    """Past the training length (12 frames) the re-encoded rolling cache gives the clip that
    recomputing each block's window from its frames gives, at every denoising step."""
    model = tiny_model(block_frames, **kw)
    n_blocks = 36 // block_frames
    noise = rollout_noise(PROMPTS, [0, 1], model, 3, n_blocks)
    assert isinstance(noise, StreamNoise)
    levels = step_levels(3, 2.0)
    with torch.no_grad():
        a = rollout(model, text, noise, levels, n_blocks=n_blocks, amp=False)
        b = rollout(model, text, noise, levels, n_blocks=n_blocks, use_cache=False, amp=False)
    assert a.shape == (2, 36, 3, 16, 16)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert a[:, 12:].abs().mean() > 0.1  # the streamed blocks are real output, not zeros


def test_a_long_clip_opens_like_the_short_one(text):
    """With the default window, a block inside the training length sees exactly what it saw in a
    training-length rollout, and the long clip's first chunk of noise is the short clip's."""
    model = tiny_model()
    levels = step_levels(3, 2.0)
    with torch.no_grad():
        short = rollout(model, text, rollout_noise(PROMPTS, [0, 1], model, 3), levels, amp=False)
        long = rollout(model, text, rollout_noise(PROMPTS, [0, 1], model, 3, 9), levels, n_blocks=9, amp=False)
    assert torch.equal(long[:, :12], short)
    assert not torch.allclose(long[:, 12:24], long[:, :12])  # later chunks draw new noise


def test_blocks_outside_the_window_are_not_seen(text):
    """A prefix of 3 blocks that differ only in block 0: with a 2-block window block 3 onward
    cannot tell them apart; with an attention sink (block 0 kept) it can."""
    levels = step_levels(2, 2.0)
    for sink, same in ((False, True), (True, False)):
        model = tiny_model(window=8, sink=sink)
        noise = rollout_noise(PROMPTS, [0, 1], model, 2, 6)
        g = torch.Generator().manual_seed(3)
        prefix = torch.randn((2, 12, 3, 16, 16), generator=g)
        other = prefix.clone()
        other[:, :4] = torch.randn((2, 4, 3, 16, 16), generator=g)
        with torch.no_grad():
            a = rollout(model, text, noise, levels, n_blocks=6, prefix=prefix, amp=False)
            b = rollout(model, text, noise, levels, n_blocks=6, prefix=other, amp=False)
        assert torch.equal(a[:, 12:], b[:, 12:]) is same, sink


def test_cache_memory_is_bounded(text):
    """The largest cache a rollout holds is the window, whatever the clip's length."""
    model = tiny_model(1)  # frame-wise: W = 11 frames
    levels = step_levels(2, 2.0)
    sizes = []
    for frames in (24, 96):
        stats: dict = {}
        with torch.no_grad():
            rollout(model, text, rollout_noise(PROMPTS, [0, 1], model, 2, frames), levels, n_blocks=frames,
                    amp=False, stats=stats)
        sizes.append((stats["cache_frames_max"], stats["cache_bytes_max"]))
    assert sizes[0] == sizes[1] and sizes[0][0] == 11


def test_stream_noise_is_drawn_per_chunk_and_deterministic():
    model = tiny_model()
    full = rollout_noise(PROMPTS, [0, 1], model, 3)
    stream = rollout_noise(PROMPTS, [0, 1], model, 3, 7)
    assert stream.shape == (2, 7, 3, 4, 3, 16, 16)
    assert all(torch.equal(stream[:, k], full[:, k]) for k in range(3))
    again = rollout_noise(PROMPTS, [0, 1], model, 3, 7)
    assert torch.equal(stream[:, 6], again[:, 6]) and not torch.equal(stream[:, 3], stream[:, 0])
    with pytest.raises(IndexError):
        stream[:, 7]


def test_frames_errors_are_clear():
    cfg = StudentConfig(frames=16, block_frames=4)
    assert blocks_for_frames(cfg, 64) == 16 and blocks_for_frames(cfg, 8) == 2
    with pytest.raises(ValueError, match="not a multiple of the student's 4-frame blocks"):
        blocks_for_frames(cfg, 18)
    with pytest.raises(ValueError, match="below one block"):
        blocks_for_frames(cfg, 2)
    with pytest.raises(ValueError, match="window must be 0"):
        StudentConfig(frames=16, block_frames=4, window=6)
    with pytest.raises(ValueError, match="window must be 0"):
        StudentConfig(frames=16, block_frames=4, window=16)
    with pytest.raises(ValueError, match="sink keeps the first block"):
        StudentConfig(frames=16, block_frames=4, window=4, sink=True)
    with pytest.raises(ValueError, match="cannot stream"):
        blocks_for_frames(StudentConfig(frames=4, block_frames=4), 8)
    with pytest.raises(ValueError, match="frames or n_blocks"):
        generate(tiny_model(), PROMPTS, [0, 1], frames=24, n_blocks=2)


def test_generate_streams_decoded_clips():
    model = tiny_model()
    clips = generate(model, PROMPTS, [0, 1], frames=20, amp=False, steps=2)
    assert clips.shape == (2, 20, 3, 16, 16) and clips.abs().max() <= 1.0


# ----- long-horizon evaluation -----

def test_horizon_eval_scores_each_window_and_the_whole_clip():
    """World clips of 4 s: two 2-second windows scored as clips of their own, and the real world
    fitted to the whole track (the real world fits itself; the loose world does not)."""
    from afd.eval.horizon import DRIFT_KEYS, horizon_evaluate
    from afd.eval.score import evaluate
    from afd.video.core import STUDENT, VideoFormat
    from afd.world.sample import sample_world
    from afd.world.splits import load_split

    prompts = load_split("physics-eval")[:4] + load_split("general-eval")[:2]
    fmt = VideoFormat(frames=32, height=32, width=32, fps=STUDENT.fps)
    real = [c.video for c in sample_world(prompts, [0] * 6, "real", fmt)]
    report, scores = horizon_evaluate(real, prompts)
    h = report["horizon"]
    assert h["seconds"] == 4 and len(h["windows"]) == 2 and set(h["drift"]) == set(DRIFT_KEYS)
    assert all(len(v) == 2 for v in h["drift"].values())
    # window 0 is exactly the 2-second eval of the clips' first 16 frames
    short, _ = evaluate([type(v)(v.frames[:16], v.fps) for v in real], prompts)
    assert report["groups"] == short["groups"] and len(scores) == 6
    assert h["whole"]["physical_consistency"] > 95 and h["whole"]["ball_persistence"] == 100
    loose = [c.video for c in sample_world(prompts, [0] * 6, "loose", fmt)]
    assert horizon_evaluate(loose, prompts)[0]["horizon"]["whole"]["physical_consistency"] < 90


def test_horizon_eval_errors_name_the_clip():
    from afd.eval.horizon import horizon_evaluate
    from afd.video.core import Video

    clip = Video(torch.zeros(20, 3, 32, 32), 8.0)
    with pytest.raises(ValueError, match="clip 0: 20 frames at 8 fps last 2.5 s, not a whole number"):
        horizon_evaluate([clip], ["a small red ball falls on a black background"])


def test_afd_eval_frames_cli(tmp_path, capsys):
    import json

    from afd.cli import main as cli_main

    out = tmp_path / "world.json"
    assert cli_main(["eval", "--world", "real", "--frames", "32", "--prompts-per-split", "2", "--per-prompt", "1",
                     "--no-progress", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "drift per 2-second window" in printed and "| physical_consistency |" in printed
    assert len(json.loads(out.read_text())["horizon"]["windows"]) == 2
    for argv, msg in ((["--frames", "20"], "give a multiple of 16"),
                      (["--frames", "32", "--defects"], "score 2-second clips"),
                      (["--window", "8"], "the world simulates any length"),
                      (["--stream-cache", "roll"], "the world simulates any length")):
        assert cli_main(["eval", "--world", "real", *argv]) != 0
        assert msg in capsys.readouterr().err


def test_afd_sample_frames_errors(tmp_path, tiny_student, capsys):
    from afd.cli import main as cli_main

    for argv, msg in ((["--frames", "18"], "not a multiple of the student's 4-frame blocks"),
                      (["--frames", "2"], "below one block"),
                      (["--window", "6"], "window must be 0"),
                      (["--stream-cache", "roll"], "needs rotary frame positions")):
        assert cli_main(["sample", "--checkpoint", str(tiny_student), "--prompt", PROMPTS[0], "--out",
                         str(tmp_path / "o"), *argv]) != 0
        assert msg in capsys.readouterr().err
    assert cli_main(["sample", "--checkpoint", str(tiny_student), "--prompt", PROMPTS[0], "--out",
                     str(tmp_path / "o"), "--frames", "24", "--no-mp4"]) == 0
    from afd.video.io import read_video

    assert read_video(tmp_path / "o" / "clip00000.npz").frames.shape[0] == 24


def test_stream_bench_reports_each_length(tiny_student):
    from afd.bench.stream import report, run

    r = run([32, 64], str(tiny_student), batch=2, repeats=1, threads=1)
    assert set(r["by_frames"]) == {"32", "64"}
    rows = r["by_frames"].values()
    assert all(row["s_per_frame"] > 0 and row["peak_mb"] > 0 for row in rows)
    assert len({row["cache_mb"] for row in rows}) == 1  # bounded by the window
    assert "frames" in report(r)


# ----- training on streamed rollouts -----

@pytest.mark.parametrize("block_frames,kw,T", [(4, {}, 36), (4, {"sink": True}, 36), (1, {"window": 6}, 36),
                                               (4, {"window": 4}, 12)])
def test_forward_train_of_a_long_clip_sees_what_the_rollout_showed(text, block_frames, kw, T):
    """Noised block k of a 36-frame clip (or of a 12-frame one under a short window) is predicted
    from the clean window the rollout gave it (``context_blocks``), re-indexed, exactly as a
    cache-free pass over that window."""
    model = tiny_model(block_frames, **kw)
    F = block_frames
    g = torch.Generator().manual_seed(5)
    x_clean = torch.randn((2, T, 3, 16, 16), generator=g)
    x_noised = torch.randn((2, T, 3, 16, 16), generator=g)
    t = torch.rand((2, T // F), generator=g).repeat_interleave(F, dim=1)
    with torch.no_grad():
        train = model.forward_train(x_clean, x_noised, t, text)
        for k in range(T // F):
            ctx = context_blocks(k, model.config)
            prefix = torch.cat([x_clean[:, j * F:(j + 1) * F] for j in ctx], dim=1) if ctx else None
            s = slice(k * F, (k + 1) * F)
            alone = model.forward_with_prefix(prefix, x_noised[:, s], t[:, s], text)
            torch.testing.assert_close(train[:, s], alone, atol=1e-5, rtol=1e-5)


def test_the_nft_update_trains_on_a_streamed_rollout(text):
    """AFD's objective on 36-frame rollouts of a 12-frame student: levels, guidance and noise
    sized by the clip, a finite loss with gradient."""
    from afd.methods.afd_config import AFDMethodConfig
    from afd.methods.nft import nft_student_loss

    model = tiny_model()
    model.train()
    noise = rollout_noise(PROMPTS, [0, 1], model, 3, 9)
    with torch.no_grad():
        x0 = rollout(model, text, noise, step_levels(3, 2.0), n_blocks=9, amp=False)
    out = nft_student_loss(model, model, model, x0, text, torch.tensor([0.9, 0.1]), torch.Generator().manual_seed(0),
                           AFDMethodConfig())
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and model.patch_out.weight.grad.abs().sum() > 0


# ----- a teacher shorter than the student -----

def test_windowed_d_sampling_draws_only_valid_windows():
    from afd.train.disc_phase import crop_windows, window_starts

    clips = torch.arange(64, dtype=torch.float32).view(1, 64, 1, 1, 1).repeat(200, 1, 1, 1, 1)
    windows = crop_windows(clips, 16, torch.Generator().manual_seed(0))
    starts = windows[:, 0, 0, 0, 0].long()
    assert windows.shape == (200, 16, 1, 1, 1)
    # consecutive frames, never past the clip, and every valid start reachable
    assert torch.equal(windows[..., 0, 0, 0] - starts[:, None], torch.arange(16).expand(200, 16).float())
    assert int(starts.min()) >= 0 and int(starts.max()) <= 48 and len(set(starts.tolist())) > 30
    assert window_starts(64, 16) == [0, 16, 32, 48] and window_starts(40, 16) == [0, 12, 24]
    assert window_starts(16, 16) == [0]
    with pytest.raises(ValueError, match="does not fit"):
        crop_windows(clips[:, :8], 16, torch.Generator())


def test_windowed_scores_average_the_windows():
    from afd.train.disc_phase import windowed_logits

    class FirstFrameMean(torch.nn.Module):
        def forward(self, clips, text):
            return clips[:, 0].flatten(1).mean(1)

    clips = torch.arange(32, dtype=torch.float32).view(1, 32, 1, 1, 1)
    assert float(windowed_logits(FirstFrameMean(), clips, None, 16)) == 8.0  # windows at 0 and 16


@pytest.mark.parametrize("method,extra", [("afd", []), ("oracle", []), ("afd", ["disc.window=first"])],
                         ids=["afd", "oracle", "afd-first-window"])
def test_training_on_rollouts_longer_than_the_teacher(tiny_state_student, tmp_path, method, extra, monkeypatch):
    """A 16-frame teacher and 32-frame on-policy rollouts: D sees windows, the update and the
    oracle's exact weights take the whole streamed rollout, the teacher is paid as before."""
    import json

    import afd.train.loop as loop
    from afd.config import load_config
    from afd.train.config import AdaptConfig
    from afd.train.loop import train
    from train_util import tiny_args

    lengths = []

    def spy(*args, **kw):
        out = rollout(*args, **kw)
        lengths.append((out[0] if isinstance(out, tuple) else out).shape[1])
        return out

    monkeypatch.setattr(loop, "rollout", spy)
    paid = {}
    for frames in (32, None):
        run = tmp_path / f"run{frames}"
        length = [f"train.frames={frames}"] if frames else []
        args = tiny_args(tiny_state_student, run, tmp_path / f"cache{frames}", "train.steps=2", *length,
                         f"train.method={method}", "eval.before=false", "eval.every=0", *extra)
        train(load_config(AdaptConfig, None, args), progress=False)
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert len(rows) >= 2 and all(np.isfinite(r["loss"]) for r in rows if "loss" in r)
        paid[frames] = rows[-1]["teacher_calls_paid"]
        assert set(lengths) == {frames or 16}
        lengths.clear()
    assert paid[32] == paid[None]  # the teacher's budget does not see the rollouts' length
    with pytest.raises(ValueError, match="train.frames: frames 18 is not a multiple"):
        train(load_config(AdaptConfig, None, tiny_args(tiny_state_student, tmp_path / "r2", tmp_path / "cache",
                                                       "train.steps=1", "train.frames=18")), progress=False)


def test_first_window_control_scores_only_the_opening(text):
    """disc.window=first: a long rollout is judged by its first teacher-length window alone, so
    frames after it cannot move its score; with random windows they do."""
    from afd.train.config import DiscTrainConfig
    from afd.train.disc_phase import score_pairs

    class MeanPixel(torch.nn.Module):
        def forward(self, clips, text):
            return clips.flatten(1).mean(1)

    teacher = torch.zeros(1, 16, 1, 2, 2)
    rollouts = torch.zeros(2, 32, 1, 2, 2)
    rollouts[1, 16:] = 1.0  # differs from rollout 0 only after the first window
    one = text.index(torch.tensor([0]))
    first = score_pairs(MeanPixel(), DiscTrainConfig(window="first"), teacher, rollouts, one)[1]
    windowed = score_pairs(MeanPixel(), DiscTrainConfig(), teacher, rollouts, one)[1]
    assert torch.equal(first[0], first[1]) and windowed[1] > windowed[0]
    with pytest.raises(ValueError, match="window"):
        DiscTrainConfig(window="middle")

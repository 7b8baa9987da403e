import json

import numpy as np
import pytest
import torch

from afd.cli import main
from afd.eval import EVAL_FORMAT, evaluate, format_reports
from afd.eval.fit import LOOSE_GRID, best_constants_rmse, fit_rmse
from afd.eval.score import GENERAL_KEYS, PHYSICS_KEYS, bootstrap_stderr
from afd.eval.tracker import track
from afd.video import Video, resample
from afd.video.io import write_video
from afd.world.grammar import PromptError
from afd.world.physics import REAL, InitialState, simulate
from afd.world.sample import sample_world


@pytest.fixture(scope="module")
def calibration(eval_prompts):
    prompts, seeds = eval_prompts
    out = {}
    for mode in ("real", "loose"):
        videos = [c.video for c in sample_world(prompts, seeds, mode)]
        out[mode] = (videos, *evaluate(videos, prompts))
    return prompts, out


def _pc(scores):
    return np.array([s.physical_consistency for s in scores if s.domain == "physics"])


def test_schema(calibration):
    _, out = calibration
    report = out["real"][1]
    assert set(report) == {"n_videos", "groups", "stderr"} and report["n_videos"] == 192
    for part in ("groups", "stderr"):
        assert set(report[part]["physics"]) == set(PHYSICS_KEYS)
        assert set(report[part]["general"]) == set(GENERAL_KEYS)
        for g in report[part].values():
            assert all(isinstance(v, float) for v in g.values())
    json.dumps(report)  # plain JSON types only


def test_stderr_is_the_bootstrap_spread_of_each_metric(calibration):
    _, out = calibration
    _, report, scores = out["loose"]
    se = report["stderr"]
    # A mean over n clips: the bootstrap se is close to the textbook std / sqrt(n).
    pc = _pc(scores)
    assert se["physics"]["physical_consistency"] == pytest.approx(pc.std() / np.sqrt(len(pc)), rel=0.2)
    # Seeded: the same clips give the same standard errors.
    physics_clips = [s for s in scores if s.domain == "physics"]
    assert bootstrap_stderr(physics_clips, [], None) == {"physics": se["physics"], "general": None}
    # The totals and the Fréchet distance vary too, and a constant metric does not.
    assert se["physics"]["total"] > 0 and se["general"]["total"] > 0 and se["general"]["frechet_distance"] > 0
    assert report["groups"]["general"]["background_accuracy"] == 100 and se["general"]["background_accuracy"] == 0
    table = format_reports({"loose": report})
    total = report["groups"]["general"]["total"]
    assert f"{total:.1f} ±{se['general']['total']:.1f}" in table


def test_real_world_scores_at_the_top(calibration):
    _, out = calibration
    phys, gen = out["real"][1]["groups"]["physics"], out["real"][1]["groups"]["general"]
    assert phys["physical_consistency"] >= 95
    assert phys["gravity_error"] < 0.02 and phys["bounce_accuracy"] == 100
    assert phys["dynamic_degree"] >= 90 and phys["temporal_flickering"] >= 99
    assert gen["total"] >= 95


def test_loose_world_has_weak_inconsistent_physics_and_intact_general(calibration):
    _, out = calibration
    real, loose = out["real"][1]["groups"], out["loose"][1]["groups"]
    assert loose["physics"]["physical_consistency"] <= real["physics"]["physical_consistency"] - 25
    pc = _pc(out["loose"][2])
    assert (pc >= 80).mean() >= 0.10, "too few near-real loose clips"
    assert (pc <= 40).mean() >= 0.30, "too few clearly wrong loose clips"
    assert loose["physics"]["gravity_error"] > real["physics"]["gravity_error"] + 0.2
    assert loose["physics"]["bounce_accuracy"] < real["physics"]["bounce_accuracy"]
    assert loose["general"]["total"] >= 95


def test_degenerate_clips_score_low(calibration):
    prompts, out = calibration
    # every third clip of the calibration set: both domains, every kind of motion, a third of the cost
    real, prompts = out["real"][0][::3], prompts[::3]
    ref = out["real"][1]["groups"]
    blank = [Video(torch.zeros_like(v.frames) + v.frames[:1, :, :1, :1], v.fps) for v in real]
    g = torch.Generator().manual_seed(0)
    noise = [Video(torch.rand(v.frames.shape, generator=g) * 2 - 1, v.fps) for v in real]
    frozen = [Video(v.frames[:1].expand_as(v.frames).clone(), v.fps) for v in real]
    rb, rn, rf = (evaluate(x, prompts)[0]["groups"] for x in (blank, noise, frozen))
    for r in (rb, rn):
        assert r["physics"]["physical_consistency"] < 5
        assert r["physics"]["gravity_error"] == 1.0
        assert r["general"]["total"] < 30 and r["general"]["persistence"] == 0
        assert r["physics"]["total"] < ref["physics"]["total"] - 40
    assert rb["physics"]["dynamic_degree"] == 0
    assert rn["physics"]["temporal_flickering"] < 90 and rn["physics"]["motion_smoothness"] < 95
    assert rf["physics"]["dynamic_degree"] == 0 and rf["physics"]["gravity_error"] == 1.0
    assert rf["physics"]["physical_consistency"] < 60  # only balls frozen on the floor still fit
    assert rf["general"]["direction_accuracy"] < 30 and rf["general"]["total"] < ref["general"]["total"] - 10
    assert rf["physics"]["total"] < ref["physics"]["total"] - 40


def test_tracker_is_subpixel_on_world_clips():
    clips = sample_world(["a small orange ball is thrown to the left on a dark green background",
                          "a large cyan square slides to the right on a gray background"], [3, 3])
    for c in clips:
        tr = track(resample(c.video, EVAL_FORMAT))
        truth = np.array(c.record.centers)[::2] * EVAL_FORMAT.height
        err = np.hypot(tr.cx - truth[:, 0], tr.cy - truth[:, 1])
        assert tr.found.all() and err.max() < 0.06, err.max()
        assert np.allclose(np.median(tr.color, 0), c.record.color, atol=2)
        assert np.allclose(tr.background, c.record.background, atol=1)


def test_fit_recovers_simulated_tracks_and_rejects_constant_velocity():
    radius = np.array([0.12, 0.12])
    init = InitialState(np.array([0.3, 0.3]), np.array([0.3, 0.3]), np.array([0.4, 0.4]), np.array([-0.5, -0.5]))
    tr = simulate(init, radius, np.array([3.0, 0.0]), np.array([0.75, 0.75]), np.array([0.1, 0.1]),
                  np.array([True, True]), n_frames=16, fps=8.0)
    obs = np.stack([tr.x, tr.y], -1)
    rmse, fitted = fit_rmse(obs, np.ones((2, 16), bool), radius, 8.0, 32)
    assert rmse[0] < 1e-3 and np.allclose(fitted[0], obs[0], atol=1e-4)
    assert rmse[1] > 1.5  # a ball without gravity is no real-world trajectory
    # Missing frames cost the miss penalty.
    valid = np.ones((2, 16), bool)
    valid[0, 8:] = False
    rmse2, _ = fit_rmse(obs, valid, radius, 8.0, 32)
    assert rmse2[0] == pytest.approx(np.sqrt(8 * 16 / 16), rel=1e-3)


def test_best_constants_fit_explains_wrong_physics_but_not_jumps():
    # Three tracks: a ball under half gravity and restitution 0.5 (a loose-world clip whose
    # constants are on the grid), the same ball under real constants, and that ball with the
    # stutter a weak student draws (it stalls, then jumps).
    radius = np.full(3, 0.1)
    init = InitialState(np.full(3, 0.2), np.full(3, 0.2), np.full(3, 0.3), np.zeros(3))
    tr = simulate(init, radius, np.array([1.5, REAL.g, 1.5]), np.array([0.5, 0.75, 0.5]), np.full(3, 0.1),
                  np.ones(3, bool), n_frames=16, fps=8.0)
    obs = np.stack([tr.x, tr.y], -1)
    obs[2, 1::4] = obs[2, 0::4]  # stall one frame in four ...
    obs[2, 2::4] = obs[2, 3::4]  # ... and jump to catch up
    valid = np.ones((3, 16), bool)
    real_rmse, _ = fit_rmse(obs, valid, radius, 8.0, 32)
    best, idx = best_constants_rmse(obs, valid, radius, 8.0, 32)
    assert real_rmse[0] > 1.0 and best[0] < 0.05
    # friction only acts on a rolling ball: any grid value ties
    assert (LOOSE_GRID[idx[0]].g, LOOSE_GRID[idx[0]].restitution) == (1.5, 0.5)
    assert best[1] < 1e-3 and best[1] <= real_rmse[1] + 1e-9  # the real constants are on the grid
    assert best[2] > 0.5  # no constants explain the stutter
    # Per-track constants give what one call per constant set gives.
    per_track, _ = fit_rmse(obs, valid, radius, 8.0, 32, [LOOSE_GRID[5], REAL, LOOSE_GRID[40]])
    one_by_one = [fit_rmse(obs[i:i + 1], valid[i:i + 1], radius[i:i + 1], 8.0, 32, c)[0][0]
                  for i, c in enumerate([LOOSE_GRID[5], REAL, LOOSE_GRID[40]])]
    assert per_track == pytest.approx(one_by_one, abs=1e-9)
    with pytest.raises(ValueError, match="got 2 sets of constants for 3 tracks"):
        fit_rmse(obs, valid, radius, 8.0, 32, [REAL, REAL])


def test_teacher_native_and_student_format_score_alike():
    prompts = ["a large red ball falls on a black background",
               "a small blue ball is tossed upward on a gray background"]
    native = [c.video for c in sample_world(prompts, [1, 2])]
    student = [resample(v, EVAL_FORMAT) for v in native]
    a, b = evaluate(native, prompts)[1], evaluate(student, prompts)[1]
    assert [s.physical_consistency for s in a] == pytest.approx([s.physical_consistency for s in b], abs=1e-6)


def test_groups_without_clips_are_null():
    p = ["a small red square stays still on a black background"]
    report, _ = evaluate([c.video for c in sample_world(p, [0])], p)
    assert report["groups"]["physics"] is None and report["groups"]["general"] is not None


def test_errors_name_the_clip():
    v = sample_world(["a small red ball falls on a gray background"], [0])[0].video
    with pytest.raises(PromptError, match="x.npz: .*unknown color 'purple'"):
        evaluate([v], ["a small purple ball falls on a gray background"], names=["x.npz"])
    short = Video(v.frames[:4], v.fps)
    with pytest.raises(ValueError, match="y.mp4: cannot bring to the evaluation format: clip too short"):
        evaluate([short], ["a small red ball falls on a gray background"], names=["y.mp4"])


def test_cli_eval_mixed_folder(tmp_path, capsys):
    prompts = ["a small red ball falls on a gray background",
               "a large white ball rolls to the left on a navy background",
               "a small green square slides to the left on a black background"]
    lines = []
    for i, c in enumerate(sample_world(prompts, [0, 1, 2], "real")):
        ext = [".npz", ".mp4", ".gif"][i]
        write_video(tmp_path / f"c{i}{ext}", c.video)
        lines.append(json.dumps({"prompt": c.record.prompt, "seed": c.record.seed, "path": f"c{i}{ext}"}))
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "r.json"
    assert main(["eval", "--videos", str(tmp_path), "--json", str(out), "--per-clip", str(tmp_path / "pc.jsonl"),
                 "--fd-terms", "--coherence", "--defects"]) == 0
    report = json.loads(out.read_text())
    assert report["n_videos"] == 3
    assert report["groups"]["physics"]["physical_consistency"] > 90  # lossy mp4 included
    assert report["groups"]["general"]["persistence"] == 100
    text = capsys.readouterr().out
    assert "physical_consistency" in text and "frechet_distance" in text
    assert "Fréchet distance by descriptor" in text and "speed_std" in text
    # Two physics clips of the real world: the real constants are on the grid, so both are coherent.
    line = next(t for t in text.splitlines() if t.startswith("coherence (best of 135"))
    assert float(line.split("mean ")[1].split()[0]) > 90
    assert "physics clips by drawing defect (n=2): clean 2 (100%)" in text
    assert len((tmp_path / "pc.jsonl").read_text().splitlines()) == 3


def test_cli_eval_bad_clip_is_one_line_error(tmp_path, capsys):
    (tmp_path / "c.mp4").write_bytes(b"garbage")
    (tmp_path / "manifest.jsonl").write_text(json.dumps(
        {"prompt": "a small red ball falls on a gray background", "seed": 0, "path": "c.mp4"}) + "\n")
    assert main(["eval", "--videos", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "c.mp4" in err and "Traceback" not in err


def test_frechet_terms_name_the_descriptor_that_differs():
    from afd.eval import general as gen

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(4000, 16)) * 5 + 50  # spreads above every floor: standardised = / 5
    same = rng.normal(size=(4000, 16)) * 5 + 50
    shifted = same.copy()
    i = gen.DESCRIPTOR_NAMES.index("speed_std")
    shifted[:, i] += 15  # 3 reference stds
    shifted[:, gen.DESCRIPTOR_NAMES.index("area_cv")] *= 2  # mean 50 -> 100, spread 5 -> 10
    terms = gen.frechet_terms(shifted, ref)
    assert terms["speed_std"][0] == pytest.approx(9, abs=0.2) and terms["speed_std"][1] < 0.01
    m, sp = terms["area_cv"]
    assert m == pytest.approx(100, rel=0.02) and sp == pytest.approx(1, abs=0.1)
    others = [sum(v) for k, v in terms.items() if k not in ("speed_std", "area_cv")]
    assert max(others) < 0.02
    # independent features: the diagonal terms add up to the full distance
    assert sum(map(sum, terms.values())) == pytest.approx(gen.frechet_distance(shifted, ref), rel=0.02)
    assert sum(map(sum, gen.frechet_terms(same, ref).values())) < 0.1


def test_physics_defects_sort_clips_by_what_is_wrong_with_the_drawing():
    from afd.eval.defects import format_defects, physics_defects
    from afd.video.core import STUDENT

    prompts = ["a small red ball falls on a gray background",
               "a large white ball is thrown to the right on a navy background",
               "a small yellow ball is tossed upward on a black background",
               "a small red square stays still on a black background"]
    clips = [c.video for c in sample_world(prompts, [0, 1, 2, 3], "real", STUDENT)]
    frames = [c.frames.clone() for c in clips]
    bg = frames[1][:, :, :1, :1]  # the border pixel is background in every frame
    frames[1][5] = bg[5].expand_as(frames[1][5])  # the ball vanishes in frame 5
    moved = torch.roll(frames[2][6], shifts=10, dims=-1)
    is_obj = (moved - frames[2][6, :, :1, :1]).abs().sum(0) > 0.3
    frames[2][6] = torch.where(is_obj, moved, frames[2][6])  # a second copy 10 px to the right
    videos = [Video(f, c.fps) for f, c in zip(frames, clips)]
    _, scores = evaluate(videos, prompts)
    d = physics_defects(videos, scores)
    # the general clip is left out
    assert {k: v["n"] for k, v in d.items()} == {"clean": 1, "duplicated": 1, "missing": 1}
    assert d["clean"]["physical_consistency"] > 90
    assert d["missing"]["physical_consistency"] < d["clean"]["physical_consistency"]
    assert d["duplicated"]["physical_consistency"] == pytest.approx(scores[2].physical_consistency)
    assert format_defects(d).startswith("physics clips by drawing defect (n=3): clean 1 (33%)")
    with pytest.raises(ValueError, match="got 4 videos but 3 scores"):
        physics_defects(videos, scores[:3])

"""The adaptation loop (``afd train``): a tiny AFD run end to end, its output contract, exact
resume, teacher-budget exhaustion, LoRA's reference and the reward-fidelity statistic."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from afd.cli import main
from afd.config import load_config
from afd.eval.measures import CUES, rollout_measures
from afd.student.backbones.transformer import CausalVideoTransformer
from afd.student.backbones.transformer_config import StudentConfig
from afd.student.lora import AdaptersOff, add_lora, merged_copy
from afd.text import get_text_encoder
from afd.train.config import AdaptConfig
from afd.train.fidelity import pick_lift, spearman
from afd.train.loop import train
from afd.train.plan import Plan
from train_util import tiny_args

CONTRACT = ("step", "d_loss", "r_phi", "reward_fidelity", "loss_nft", "loss_prior", "teacher_calls_paid",
            "teacher_calls_cached", "seconds")


def test_tiny_afd_run_end_to_end(tiny_student, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--config", "configs/train/afd.yaml", "--no-progress",
                 *tiny_args(tiny_student, run, tmp_path / "cache", "train.steps=3")])
    assert code == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert all(k in r for k in CONTRACT), sorted(set(CONTRACT) - set(r))
        assert 0 <= r["r_phi"] <= 1 and 0 <= r["weight_min"] <= r["weight_max"] <= 1
        assert all(f"cue_{c}" in r for c in CUES) and "oracle_fidelity" in r
        # Every group has 2+ rollouts with a defined PC here, so both are finite; the pick can gain
        # no more than the group's best rollout, which gains at least 0 over the group's mean.
        assert math.isfinite(r["pick_lift"]) and r["pick_lift"] <= r["pick_lift_max"] + 1e-9
        assert r["pick_lift_max"] >= -1e-9  # max - mean, up to rounding
    # 2 prompts per iteration, no prefetch: each distinct clip paid once, repeats (and the strips'
    # teacher row) are served from the cache
    assert rows[-1]["teacher_calls_paid"] + rows[-1]["teacher_calls_cached"] >= 3 * 2
    assert rows[-1]["teacher_calls_paid"] == rows[-1]["teacher_clips_total"] <= 3 * 2 + 1  # + the strip prompt
    assert "eval_general_total" in rows[1]
    for name in ("eval.json", "eval_base.json"):
        report = json.loads((run / name).read_text())
        assert report["n_videos"] == 4 and report["groups"]["physics"]["total"] >= 0
    assert (run / "config.yaml").exists() and (run / "samples" / "iter00000.png").exists()
    trained = CausalVideoTransformer.from_pretrained(run / "student")
    base = CausalVideoTransformer.from_pretrained(tiny_student)
    assert any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(), base.state_dict().values()))
    out = capsys.readouterr().out
    assert "base" in out and "afd" in out and "physical_consistency" in out
    assert "physical consistency: base " in out and "-> afd " in out and ", change " in out
    assert (run / "strip.png").read_bytes() == (run / "samples" / "iter00003.png").read_bytes()
    assert f"strip (teacher | base | afd, one row each per prompt): {run / 'strip.png'}" in out


def test_fidelity_every_skips_the_log_only_measures(tiny_student, tmp_path):
    run = tmp_path / "run"
    cfg = load_config(AdaptConfig, None, tiny_args(tiny_student, run, tmp_path / "cache", "train.steps=3",
                                                   "train.fidelity_every=2", "eval.before=false"))
    train(cfg, progress=False)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert ["reward_fidelity" in r for r in rows] == [True, False, True]  # iterations 0, 1, 2
    with pytest.raises(ValueError, match="fidelity_every must be >= 1"):
        load_config(AdaptConfig, None, ["train.fidelity_every=0"])


def test_resume_gives_the_same_parameters(tiny_student, tmp_path):
    cache = tmp_path / "cache"
    straight = load_config(AdaptConfig, None, tiny_args(tiny_student, tmp_path / "a", cache, "train.steps=4"))
    train(straight, progress=False)
    first = load_config(AdaptConfig, None, tiny_args(tiny_student, tmp_path / "b", cache, "train.steps=2"))
    train(first, progress=False)
    resumed = load_config(AdaptConfig, None, tiny_args(tiny_student, tmp_path / "b", cache, "train.steps=4"))
    train(resumed, resume=True, progress=False)
    for name in ("student", "old", "disc"):
        a = load_file(tmp_path / "a" / "checkpoint" / f"{name}.safetensors")
        b = load_file(tmp_path / "b" / "checkpoint" / f"{name}.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}.{k} differs after resume"
    rows_a = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    rows_b = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    keys = ("d_loss", "loss_nft", "r_phi")
    assert [[json.loads(r)[k] for k in keys] for r in rows_a] == [[json.loads(r)[k] for k in keys] for r in rows_b]


def test_resume_refuses_a_changed_hyperparameter(tiny_student, tmp_path):
    args = tiny_args(tiny_student, tmp_path / "r", tmp_path / "cache", "train.steps=1")
    assert main(["train", "--no-progress", *args]) == 0
    assert main(["train", "--no-progress", *args]) == 2  # exists, no --resume
    assert main(["train", "--no-progress", "--resume", *args, "afd.beta=0.5"]) == 2


def test_budget_exhaustion_stops_with_a_clear_error_and_a_checkpoint(tiny_student, tmp_path, capsys):
    run = tmp_path / "run"
    args = tiny_args(tiny_student, run, tmp_path / "cache", "train.steps=5", "teacher.budget=3")
    code = main(["train", "--no-progress", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert "budget is 3" in err and "--resume" in err
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["step"] >= 1 and state["teacher_calls_paid"] <= 3
    # the checkpoint is usable: resuming with a larger budget finishes the run
    assert main(["train", "--no-progress", "--resume", *args[:-1], "teacher.budget=20"]) == 0
    assert (run / "eval.json").exists()


def test_plan_is_pure_and_shards_prompts():
    cfg = load_config(AdaptConfig, None, ["train.prompts=4", "train.rollouts=3", "teacher.clips_per_prompt=2"])
    pool = [f"p{i}" for i in range(10)]
    a, b = Plan.for_config(cfg, 7, pool), Plan.for_config(cfg, 7, pool)
    assert a.prompts == b.prompts and a.seeds == b.seeds and a.clip_ids == b.clip_ids
    assert len(set(a.prompts)) == 4 and all(0 <= k < 2 for k in a.clip_ids)
    assert Plan.for_config(cfg, 8, pool).prompts != a.prompts or Plan.for_config(cfg, 8, pool).seeds != a.seeds


def test_lora_reference_is_the_base_with_adapters_disabled():
    torch.manual_seed(0)
    model = CausalVideoTransformer(StudentConfig(dim=32, depth=2, heads=2))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    base = CausalVideoTransformer(model.config)
    base.load_state_dict(model.state_dict())
    add_lora(model, rank=4, alpha=8)
    assert all(("lora_" in n) == p.requires_grad for n, p in model.named_parameters())
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_()
    x, t = torch.randn(2, 16, 3, 32, 32), torch.rand(2, 16)
    text = get_text_encoder().encode(["a small red ball falls on a black background"] * 2)
    with torch.no_grad():
        y_base = base.forward_train(x, x, t, text)
        y_lora = model.forward_train(x, x, t, text)
        y_ref = AdaptersOff(model).forward_train(x, x, t, text)
        y_merged = merged_copy(model).forward_train(x, x, t, text)
    assert (y_lora - y_base).abs().max() > 1e-3
    torch.testing.assert_close(y_ref, y_base)
    torch.testing.assert_close(y_merged, y_lora, atol=1e-5, rtol=1e-5)


def test_rollout_measures_see_artefacts():
    """The cue measures on hand-made clips: a clean world clip, the object erased from half the
    frames, a second copy of the object beside it, the object swelling every other frame, the
    object jumping 1 px sideways at every 4-frame block boundary and back."""
    from afd.video.core import STUDENT
    from afd.world.sample import sample_world

    p = "a large red ball falls on a black background"
    clean = sample_world([p], [0], "real", STUDENT)[0].video.frames
    erased = clean.clone()
    erased[::2] = clean[:, :, :2, :2].mean((2, 3), keepdim=True).expand_as(clean)[::2]  # background only
    doubled = torch.maximum(clean, clean.roll(14, -1))  # a twin 14 px over, on the black background
    pulsing = clean.clone()  # every other frame the object is smeared 2 px wider and taller
    wide = torch.maximum(torch.maximum(clean, clean.roll(2, -1)), clean.roll(2, -2))
    pulsing[1::2] = torch.maximum(wide, wide.roll(2, -1).roll(2, -2))[1::2]
    jumpy = clean.clone()
    jumpy[4:8], jumpy[12:16] = clean[4:8].roll(1, -1), clean[12:16].roll(1, -1)
    m = rollout_measures(torch.stack([clean, erased, doubled, pulsing, jumpy]), [p] * 5)
    assert set(m) == {"physical_consistency", *CUES} and all(v.shape == (5,) for v in m.values())
    assert m["steady_motion"][0] > -0.1 and m["steady_motion"][4] < m["steady_motion"][0] - 0.5
    assert m["visible"][0] == 1 and m["visible"][1] == pytest.approx(0.5)
    assert m["single_object"][0] == 1 and m["single_object"][2] < 0.8
    assert m["physical_consistency"][0] > 80 and m["steady_size"][0] > -0.1
    assert m["steady_size"][3] < m["steady_size"][0] - 0.2
    with pytest.raises(ValueError, match="2 clips but 1 prompts"):
        rollout_measures(clean.expand(2, -1, -1, -1, -1), [p])


def test_gathered_prompt_groups_stay_apart_across_ranks(monkeypatch):
    """Under DDP each rank numbers its own prompts 0 .. P-1; gathered, rank r's are r*P .. r*P+P-1."""
    from afd import dist
    from afd.rollout_groups import group_ids
    from afd.train import callbacks

    local = group_ids(3, 2)  # 3 prompts x 2 rollouts on every rank
    rank0 = local.double().reshape(-1, 1)  # what rank 0 contributes (its offset is 0)
    monkeypatch.setattr(dist, "rank", lambda: 1)
    monkeypatch.setattr(dist, "gather_cat", lambda x: torch.cat([rank0, x]))
    assert callbacks.global_groups(local, 3).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_pick_lift_against_the_best_and_a_random_pick():
    score = [10, 20, 30, 40, 0, 0, 9, 3]
    groups = [0, 0, 0, 0, 1, 1, 1, 1]
    # Exact weights pick each group's best: the lift equals its ceiling, (40 - 25 + 9 - 3) / 2.
    assert pick_lift(score, score, groups) == pytest.approx((10.5, 10.5))
    # The worst pick loses; a constant key picks the first rollout; singletons are skipped.
    assert pick_lift([-x for x in score], score, groups)[0] == pytest.approx((-15 - 3) / 2)
    assert pick_lift([1] * 8, score, groups)[0] == pytest.approx((-15 - 3) / 2)
    assert np.isnan(pick_lift([1, 2], [3, 4], [0, 1])[0])
    # Random keys average to no gain over many groups.
    rng = np.random.default_rng(0)
    s, g = rng.normal(size=40_000), np.repeat(np.arange(10_000), 4)
    assert abs(pick_lift(rng.normal(size=40_000), s, g)[0]) < 0.02 < pick_lift(s, s, g)[1]


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(0.9486832980505138)  # scipy.stats.spearmanr
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_rerender_gives_d_the_references_drawing(tiny_student, tmp_path, capsys):
    from afd.student.codec import make_codec
    from afd.train.disc_phase import rerender
    from afd.video.core import STUDENT
    from afd.world.sample import sample_world

    model = CausalVideoTransformer.from_pretrained(tiny_student).eval()
    prompts = ["a large red ball falls on a black background",
               "a small white ball rolls to the left on a navy background"]
    clips = torch.stack([c.video.frames for c in sample_world(prompts, [0, 1], "real", STUDENT)])
    text = get_text_encoder().encode(prompts)
    codec = make_codec(model.config)
    a = rerender(model, codec, clips, text, 0.3, torch.Generator().manual_seed(0))
    b = rerender(model, codec, clips, text, 0.3, torch.Generator().manual_seed(0))
    c = rerender(model, codec, clips, text, 0.3, torch.Generator().manual_seed(1))
    assert a.shape == clips.shape and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.allclose(a, clips, atol=0.05)

    # end to end: D trains and scores on re-rendered clips, so its logits differ from a plain run's
    logits = {}
    # (LoRA too: its frozen reference is a view without parameters of its own)
    for name, extra in (("plain", ()), ("rerender", ("disc.rerender_t=0.3",)),
                        ("lora", ("disc.rerender_t=0.3", "student.lora_rank=2", "eval.judge=none"))):
        run = tmp_path / name
        assert main(["train", "--config", "configs/train/afd.yaml", "--no-progress",
                     *tiny_args(tiny_student, run, tmp_path / "cache", "train.steps=1",
                                "eval.final_prompts_per_split=1", *extra)]) == 0
        row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
        logits[name] = row["d_student_mean"]
        assert np.isfinite(row["d_loss"]) and ("reward_fidelity" in row) == (name != "lora")
    assert logits["plain"] != logits["rerender"]
    capsys.readouterr()
    args = tiny_args(tiny_student, tmp_path / "bad", tmp_path / "cache")
    assert main(["train", "--config", "configs/train/afd.yaml", "--no-progress", *args, "disc.rerender_t=1.0"]) == 2
    assert "disc.rerender_t must be in [0, 1), got 1.0" in capsys.readouterr().err
    assert main(["train", "--config", "configs/train/sft.yaml", "--no-progress", *args, "disc.rerender_t=0.3"]) == 2
    assert "disc.rerender_t applies to afd only" in capsys.readouterr().err


def test_pool_size_adapts_on_a_fixed_subset_within_its_budget(tiny_student, tmp_path):
    from afd.prompts import subset_pool
    from afd.world.splits import load_split

    pool = load_split("physics-train")
    small, large = subset_pool(pool, 3, "split"), subset_pool(pool, 10, "split")
    assert len(small) == 3 and set(small) <= set(large) and small == subset_pool(pool, 3, "split")
    with pytest.raises(ValueError, match=r"train.pool_size must be in \[1, 200\]"):
        subset_pool(pool, 201, "split 'physics-train'")
    run = tmp_path / "run"
    train(load_config(AdaptConfig, None, tiny_args(tiny_student, run, tmp_path / "cache", "train.steps=3",
                                                   "train.pool_size=3", "eval.before=false")), progress=False)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["teacher_calls_paid"] <= 3  # the budget follows the pool: 3 prompts x 1 clip
    assert rows[-1]["teacher_clips_used"] == 3  # distinct clips drawn: the whole pool, never more
    paid = [json.loads(line)["prompt"] for p in (tmp_path / "cache").rglob("index.jsonl")
            for line in p.read_text().splitlines()]
    assert 1 <= len(paid) <= 3 and set(paid) <= set(small)  # the teacher's ledger: only the pool was asked


def test_unknown_eval_split_fails_before_training(tiny_student, tmp_path, capsys):
    args = tiny_args(tiny_student, tmp_path / "r", tmp_path / "cache", "train.steps=1", "eval.splits=[physics-test]")
    assert main(["train", "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert "eval.splits: unknown split 'physics-test'" in err and not (tmp_path / "r" / "metrics.jsonl").exists()

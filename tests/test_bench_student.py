"""The student benchmarks run end to end at tiny settings and end with one JSON line.

Figures are not checked (timings depend on the machine); the tests check the plumbing: the
entry points run, the last stdout line is JSON with the documented keys, and the FLOP count
agrees with the analytic formula. Everything runs on one thread: on a loaded 2-core machine
two OpenMP threads can make tiny kernels ~100x slower, and the tests only need the code to run.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from afd.bench import rollout as bench_rollout
from afd.bench import train_step as bench_train
from afd.cli import main as cli_main
from afd.student.backbones.transformer import CausalVideoTransformer
from afd.student.backbones.transformer_config import StudentConfig
from afd.student.rollout import rollout, rollout_noise
from afd.student.schedule import step_levels
from afd.text import get_text_encoder
from afd.train.pretrain import Pretrainer

TINY = StudentConfig(dim=32, depth=1, heads=2, frames=4)  # one 4-frame block
# split: a small pool (a run encodes its whole pool first, ~30 ms a prompt)
TINY_OVERRIDES = ["model.dim=32", "model.depth=1", "model.heads=2", "model.frames=8", "split=physics-val"]
PRETRAIN_YAML = Path(__file__).resolve().parents[1] / "configs" / "pretrain" / "pretrain.yaml"
ROLLOUT_KEYS = {"speedup_at_4_blocks", "frames_per_s_cached", "frames_per_s_recompute", "by_blocks", "batch", "steps"}
TRAIN_KEYS = {"ms_per_step", "mfu", "peak_tflops", "precision", "model_tflops_per_step", "analytic_tflops_per_step",
              "batch"}


@pytest.fixture(autouse=True)
def one_thread():
    with bench_train.num_threads(1):
        yield


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_rollout_bench_cli_with_a_checkpoint_longer_than_trained(tmp_path, capsys):
    """Through ``afd bench rollout``: a 1-block checkpoint timed up to 2 blocks."""
    torch.manual_seed(0)
    CausalVideoTransformer(TINY).save_pretrained(tmp_path / "tiny")
    code = cli_main(["bench", "rollout", "--checkpoint", str(tmp_path / "tiny"), "--batch", "2",
                     "--max-blocks", "2", "--steps", "1", "--repeats", "1", "--threads", "1"])
    out = capsys.readouterr().out
    assert code == 0
    r = last_json(out)
    assert ROLLOUT_KEYS <= set(r) and set(r["by_blocks"]) == {"1", "2"}
    assert r["speedup_at_4_blocks"] is None and r["ref_blocks"] == 2  # fewer than 4 blocks timed
    assert r["frames_per_s_cached"] > 0 and r["frames_per_s_recompute"] > 0
    assert "untrained" in r["weights"] and "speedup" in out


def test_rollout_bench_reports_4_blocks(capsys):
    r = bench_rollout.run(batch=1, max_blocks=4, steps=1, repeats=1, config=TINY)
    bench_rollout.emit(r)
    r = last_json(capsys.readouterr().out)
    assert ROLLOUT_KEYS <= set(r) and r["speedup_at_4_blocks"] == r["by_blocks"]["4"]["speedup"] > 0


def test_extended_checkpoint_keeps_trained_weights(tmp_path):
    torch.manual_seed(1)
    trained = CausalVideoTransformer(TINY)
    trained.save_pretrained(tmp_path / "tiny")
    model, _ = bench_rollout.build_model(3, tmp_path / "tiny")
    assert model.config == replace(TINY, frames=12)
    assert torch.equal(model.pos_frame[:4], trained.pos_frame)
    assert torch.equal(model.layers[0].qkv.weight, trained.layers[0].qkv.weight)


def test_rollout_n_blocks_is_the_prefix_of_the_full_rollout():
    torch.manual_seed(0)
    model = CausalVideoTransformer(replace(TINY, frames=8)).eval()
    with torch.no_grad():
        for p in model.parameters():  # leave the zero-initialised identity, so blocks interact
            p.add_(torch.randn_like(p) * 0.05)
    prompts = ["a small red ball falls on a black background"]
    text = get_text_encoder().encode(prompts)
    noise = rollout_noise(prompts, [0], model, 2)
    levels = step_levels(2, 1.0)
    with torch.no_grad():
        full = rollout(model, text, noise, levels, amp=False)
        first = rollout(model, text, noise, levels, amp=False, n_blocks=1)
        sliced = rollout(model, text, noise[:, :1], levels, amp=False, n_blocks=1)
    assert first.shape[1] == 4 and torch.equal(first, full[:, :4]) and torch.equal(sliced, first)
    with pytest.raises(ValueError, match="n_blocks must be >= 1"):
        rollout(model, text, noise, levels, n_blocks=0)
    # past the model's 2 blocks the rollout streams (tests/test_streaming.py), given the noise for it
    with pytest.raises(ValueError, match="noise"):
        rollout(model, text, noise, levels, n_blocks=3)
    with pytest.raises(ValueError, match="noise"):
        rollout(model, text, noise[:, :1], levels, n_blocks=2)


def test_train_step_bench(capsys):
    r = bench_train.run(batch=2, steps=1, config_path=PRETRAIN_YAML, overrides=TINY_OVERRIDES, warmup=1,
                        peak_sizes=(128,), profile_rows=4)
    bench_train.emit(r)
    out = capsys.readouterr().out
    r = last_json(out)
    assert TRAIN_KEYS <= set(r) and r["batch"] == 2 and r["ms_per_step"] > 0 and r["mfu"] > 0
    assert len(r["top_ops"]) == 4 and "MFU" in out
    # FlopCounterMode (taught the CPU flash-attention ops) and the formula agree exactly.
    assert r["model_tflops_per_step"] == pytest.approx(r["analytic_tflops_per_step"], rel=1e-3)


def test_train_step_bench_times_the_real_pretraining_step(monkeypatch):
    """The bench must run pretrain's own step (text dropout included), not
    a copy of it: every step it times goes through Pretrainer.step on a Pretrainer.build student."""
    calls = []
    real_step = Pretrainer.step

    def spy(self, step, prompts, x0, gen, encoder):
        calls.append((self, step))
        return real_step(self, step, prompts, x0, gen, encoder)

    monkeypatch.setattr(Pretrainer, "step", spy)
    overrides = [*TINY_OVERRIDES, "model.refine=4", "text_dropout=0.5"]
    bench_train.run(batch=2, steps=1, config_path=PRETRAIN_YAML, overrides=overrides, warmup=1,
                    peak_sizes=(128,), profile_rows=4)
    # warm-up, timed, flop-counted and profiled steps, in order, on one trainer
    assert [step for _, step in calls] == [0, 1, 2, 3]
    trainer = calls[0][0]
    assert all(t is trainer for t, _ in calls)
    assert trainer.cfg.text_dropout == 0.5
    assert all(p.requires_grad for p in trainer.model.parameters())


def test_train_step_cli_arguments():
    from afd.cli import build_parser

    args = build_parser().parse_args(["bench", "train-step", "--batch", "4", "model.dim=64"])
    assert (args.batch, args.steps, args.config, args.overrides) == (4, 10, "configs/pretrain/pretrain.yaml",
                                                                     ["model.dim=64"])

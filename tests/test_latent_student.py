"""The latent student (a causal transformer over a learned frame codec's latents) passes what every
student family must: cache against recompute, exact resume of pretraining and adaptation, and the
methods whose gradients or data go through the codec."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from afd.config import load_config
from afd.student.backbones.transformer import CausalVideoTransformer
from afd.student.base import Student
from afd.student.rollout import rollout, rollout_noise
from afd.student.schedule import step_levels
from afd.text import get_text_encoder
from afd.train.config import AdaptConfig
from afd.train.loop import train
from afd.train.pretrain import PretrainConfig, pretrain
from train_util import tiny_args

PROMPTS = ["a small red ball falls on a black background",
           "a large blue square slides to the left on a gray background"]


def test_cache_and_recompute_give_the_same_rollout_and_clips(tiny_latent_student):
    model = CausalVideoTransformer.from_pretrained(tiny_latent_student)
    text = get_text_encoder().encode(PROMPTS)
    noise = rollout_noise(PROMPTS, [0, 1], model, 3)
    levels = step_levels(3, 2.0)
    with torch.no_grad():
        a = rollout(model, text, noise, levels, use_cache=True, amp=False)
        b = rollout(model, text, noise, levels, use_cache=False, amp=False)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert a.shape == (2, 16, 4, 1, 1)
    student = Student.load(tiny_latent_student)
    assert student.codec.name == "learned" and student.fmt.height == 32
    clips = student.codec.decode(a)
    assert clips.shape == (2, 16, 3, 32, 32) and clips.abs().max() <= 1


def test_latent_pretraining_resumes_exactly(tmp_path, tiny_codec_dir):
    tiny = ["batch_size=2", "model.dim=32", "model.depth=1", "model.heads=2", "eval.every=0",
            "eval.prompts_per_split=1", "eval.strip_clips=1", "log_every=1", "optim.warmup_steps=2",
            "model.codec=learned", f"model.codec_path={tiny_codec_dir}", "model.channels=4", "model.height=1",
            "model.width=1", "model.patch=1", "model.video_size=32", "save_every=2", "split=physics-val"]
    pretrain(load_config(PretrainConfig, None, [f"out={tmp_path / 'a'}", "steps=4", *tiny]), progress=False)
    pretrain(load_config(PretrainConfig, None, [f"out={tmp_path / 'b'}", "steps=2", *tiny]), progress=False)
    pretrain(load_config(PretrainConfig, None, [f"out={tmp_path / 'b'}", "steps=4", *tiny]), resume=True,
             progress=False)
    for name in ("model", "ema", "optim-model"):
        a = load_file(tmp_path / "a" / "checkpoint" / f"{name}.safetensors")
        b = load_file(tmp_path / "b" / "checkpoint" / f"{name}.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_adaptation_on_a_latent_student_resumes_exactly(tiny_latent_student, tmp_path):
    cache = tmp_path / "cache"
    train(load_config(AdaptConfig, None, tiny_args(tiny_latent_student, tmp_path / "a", cache, "train.steps=4")),
          progress=False)
    train(load_config(AdaptConfig, None, tiny_args(tiny_latent_student, tmp_path / "b", cache, "train.steps=2")),
          progress=False)
    train(load_config(AdaptConfig, None, tiny_args(tiny_latent_student, tmp_path / "b", cache, "train.steps=4")),
          resume=True, progress=False)
    for name in ("student", "old", "disc"):
        a = load_file(tmp_path / "a" / "checkpoint" / f"{name}.safetensors")
        b = load_file(tmp_path / "b" / "checkpoint" / f"{name}.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


@pytest.mark.parametrize("method", ["gan", "dmd", "sft"])
def test_methods_that_go_through_the_codec(tiny_latent_student, tmp_path, method):
    """GAN and DMD backpropagate through the learned decoder; SFT and DMD encode the teacher's clips."""
    from afd.cli import main

    run = tmp_path / "run"
    assert main(["train", "--config", "configs/train/afd.yaml", "--no-progress",
                 *tiny_args(tiny_latent_student, run, tmp_path / "cache", "train.steps=2",
                            f"train.method={method}")]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["grad_norm"] > 0 and np.isfinite(r["grad_norm"]) for r in rows)
    assert CausalVideoTransformer.from_pretrained(run / "student").config.codec == "learned"

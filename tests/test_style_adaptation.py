"""Continual adaptation to the cartoon domain: a state student given the cartoon strengths
(``afd student styled``) adapts on style-train and is scored on style-eval, end to end."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from afd.cli import main
from afd.student.base import load_student_model
from afd.student.sample import generate
from afd.world.state_codec import STATE_CHANNELS, STYLED_CHANNELS
from train_util import tiny_args

PROMPTS = ["a small red ball falls on a black background",
           "a large blue square slides to the left on a gray background in cartoon style"]


@pytest.fixture(scope="module")
def tiny_styled(tiny_state_student, tmp_path_factory):
    out = tmp_path_factory.mktemp("styled") / "student"
    assert main(["student", "styled", "--from", str(tiny_state_student), "--out", str(out)]) == 0
    return out


def test_styled_student_samples_the_base_clips_in_the_plain_look(tiny_state_student, tiny_styled):
    base, wide = load_student_model(tiny_state_student), load_student_model(tiny_styled)
    assert wide.config.channels == STYLED_CHANNELS and wide.config.widened_from == STATE_CHANNELS
    a, b = generate(base, PROMPTS, [0, 1]), generate(wide, PROMPTS, [0, 1])
    assert (a - b).abs().max() < 1e-5


def test_styled_cli_errors(tiny_styled, tmp_path, capsys):
    assert main(["student", "styled", "--from", "base-state", "--out", str(tiny_styled)]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert main(["student", "styled", "--from", str(tiny_styled), "--out", str(tmp_path / "again")]) == 2
    assert "a 10-channel state student is needed, got codec 'state' with 13 channels" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["afd", "sft", "gan", "dmd"])
def test_tiny_style_adaptation_end_to_end(tiny_styled, tmp_path, method):
    run = tmp_path / "run"
    assert main(["train", "--config", f"configs/train/{method}.yaml", "--no-progress",
                 *tiny_args(tiny_styled, run, tmp_path / "cache", "train.steps=2", "train.split=style-train",
                            "eval.splits=[style-eval]")]) == 0
    for name in ("eval.json", "eval_base.json"):
        report = json.loads((run / name).read_text())
        assert 0 <= report["groups"]["style"]["style_adherence"] <= 100
        assert report["groups"]["physics"] is not None and report["groups"]["general"] is not None
    # The strengths are learned from the prompt: the new channels' output weights moved off zero.
    w = load_file(run / "student" / "model.safetensors")["patch_out.weight"][STATE_CHANNELS:]
    assert torch.count_nonzero(w) > 0

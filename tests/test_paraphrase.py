"""Prompts outside the grammar: a shipped student samples free text, and the paraphrase probe scores
it against the original prompt's ground truth (afd/eval/paraphrase.py, docs/student.md)."""

from __future__ import annotations

import pytest
import torch

from afd.eval.paraphrase import PARAPHRASES, main, probe
from afd.student.backbones.transformer import CausalVideoTransformer
from afd.student.sample import generate
from afd.student.shipped import resolve_checkpoint
from afd.world.grammar import PromptError, grammar, parse_prompt
from afd.world.splits import load_split


@pytest.fixture(scope="module")
def base_state():
    return CausalVideoTransformer.from_pretrained(resolve_checkpoint("base-state")).eval()


def test_pairs_are_eval_prompts_and_paraphrases_are_outside_the_grammar():
    eval_split = set(load_split("physics-eval")) | set(load_split("general-eval"))
    motions = set()
    for original, paraphrase in PARAPHRASES:
        assert original in eval_split, original
        motions.add(parse_prompt(original).motion)
        with pytest.raises(PromptError):
            parse_prompt(paraphrase)
    assert motions == set(grammar().motions), "the pairs should cover every motion of the grammar"


def test_a_shipped_student_samples_a_free_text_paraphrase(base_state):
    clip = generate(base_state, [PARAPHRASES[0][1], "a purple teapot spins slowly"], [0, 0])
    assert clip.shape == (2, 16, 3, 32, 32)
    assert torch.isfinite(clip).all() and clip.min() >= -1 and clip.max() <= 1


def test_probe_scores_both_arms_against_the_original_prompts(base_state):
    pairs = (PARAPHRASES[0], PARAPHRASES[-1])  # one physics pair, one general pair
    out = probe(base_state, per_prompt=2, seed=0, pairs=pairs)
    for arm in ("original", "paraphrase"):
        assert out[arm]["n_videos"] == 4
        assert out[arm]["groups"]["physics"] is not None and out[arm]["groups"]["general"] is not None
    assert [(r["original"], r["paraphrase"]) for r in out["pairs"]] == list(pairs)
    assert all(0 <= r[f"score_{arm}"] <= 100 for r in out["pairs"] for arm in ("original", "paraphrase"))


def test_probe_command_names_a_missing_checkpoint_in_one_line(capsys):
    assert main(["--checkpoint", "no-such-student", "--per-prompt", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no-such-student" in err and "\n" not in err

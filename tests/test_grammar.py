import re

import pytest

from afd.cli import main
from afd.world.grammar import PLAIN, PromptError, all_prompts, grammar, grammar_words, parse_prompt, with_style
from afd.world.splits import HELD_OUT_PAIRS, SPLIT_NAMES, STYLE, build_splits, load_split


def test_parse_round_trip_every_prompt():
    prompts = all_prompts()
    assert len(prompts) == len(set(prompts)) == 384 + 640
    for p in prompts:
        assert parse_prompt(p).text == p


def test_parse_normalises_case_space_and_period():
    a = parse_prompt("  A Small RED ball   falls on a dark   green background. ")
    assert (a.size, a.color, a.object, a.motion, a.background) == ("small", "red", "ball", "falls", "dark green")
    assert a.domain == "physics"


@pytest.mark.parametrize("prompt, slot, word", [
    ("a big red ball falls on a black background", "size", "big"),
    ("a small purple ball falls on a black background", "color", "purple"),
    ("a small red cube falls on a black background", "object", "cube"),
    ("a small red ball flies on a black background", "motion", "flies"),
    ("a small red ball falls on a pink background", "background", "pink"),
])
def test_unknown_word_is_named_with_valid_words(prompt, slot, word):
    with pytest.raises(PromptError) as e:
        parse_prompt(prompt)
    msg = str(e.value)
    assert f"unknown {slot} {word!r}" in msg
    valid = {"size": grammar().sizes, "color": grammar().colors, "object": grammar().objects,
             "motion": grammar().motions, "background": grammar().backgrounds}[slot]
    assert all(repr(v) in msg for v in valid)


def test_square_cannot_take_physics_motion():
    with pytest.raises(PromptError, match="cannot take the physics motion"):
        parse_prompt("a small red square falls on a black background")


def test_trailing_words_rejected():
    with pytest.raises(PromptError, match="trailing"):
        parse_prompt("a small red ball falls on a black background please")


def test_splits_are_committed_recipe_output():
    built = build_splits()
    for name in SPLIT_NAMES:
        assert load_split(name) == built[name], f"committed split {name} differs from its recipe"


def test_split_sizes_domains_and_disjointness():
    train, pe, ge, pre, pv, gv = (load_split(n) for n in SPLIT_NAMES[:6])
    assert len(train) == 200 and len(pe) == 48 and len(ge) == 48 and len(pv) == 48 and len(gv) == 48
    assert all(parse_prompt(p).domain == "physics" for p in pv) and all(parse_prompt(p).domain == "general" for p in gv)
    assert set(pv) | set(gv) <= set(pre) and not (set(pv) | set(gv)) & (set(train) | set(pe) | set(ge))
    assert all(parse_prompt(p).domain == "physics" for p in train + pe)
    assert all(parse_prompt(p).domain == "general" for p in ge)
    assert not set(train) & set(pe)
    assert not (set(pe) | set(ge)) & set(pre)
    assert set(train) <= set(pre)
    assert set(pre) | set(pe) | set(ge) == set(all_prompts())


def test_eval_has_colour_motion_pairs_never_seen_in_adaptation():
    train_pairs = {(parse_prompt(p).color, parse_prompt(p).motion) for p in load_split("physics-train")}
    eval_pairs = {(parse_prompt(p).color, parse_prompt(p).motion) for p in load_split("physics-eval")}
    assert not set(HELD_OUT_PAIRS) & train_pairs
    assert set(HELD_OUT_PAIRS) <= eval_pairs


def test_unknown_split_error():
    with pytest.raises(ValueError, match="valid splits"):
        load_split("physics-test")


def test_cli_prints_prompts(capsys):
    assert main(["world", "prompts", "--split", "physics-eval"]) == 0
    assert capsys.readouterr().out.splitlines() == load_split("physics-eval")


def test_style_word_parses_and_round_trips():
    a = parse_prompt("A small red ball falls on a black background in cartoon style.")
    assert a.style == "cartoon" and a.domain == "physics"
    assert a.text == "a small red ball falls on a black background in cartoon style"
    assert a.plain_text == "a small red ball falls on a black background"
    assert parse_prompt("a small red ball falls on a black background").style == PLAIN
    assert with_style(a.text, PLAIN) == a.plain_text and with_style(a.plain_text, "cartoon") == a.text


@pytest.mark.parametrize("prompt, match", [
    ("a small red ball falls on a black background in anime style", "unknown style 'anime'; valid styles: 'cartoon'"),
    ("a small red ball falls on a black background in cartoon", "expected 'style'"),
    ("a small red ball falls on a black background in cartoon style now", "trailing"),
    ("a small red ball falls on a black background cartoon style", "may end with 'in {style} style'"),
])
def test_style_word_errors_name_the_problem(prompt, match):
    with pytest.raises(PromptError, match=re.escape(match)):
        parse_prompt(prompt)


def test_style_splits():
    st, se = load_split("style-train"), load_split("style-eval")
    assert len(st) == 200 and len(se) == 96 and all(parse_prompt(p).style == STYLE for p in st + se)
    plain_se = {parse_prompt(p).plain_text for p in se}
    assert plain_se == set(load_split("physics-eval")) | set(load_split("general-eval"))
    plain_st = {parse_prompt(p).plain_text for p in st}
    assert not plain_st & (plain_se | set(load_split("physics-val")) | set(load_split("general-val")))
    assert sum(parse_prompt(p).domain == "physics" for p in st) == 140
    assert "cartoon" in grammar_words() and not any(parse_prompt(p).style != PLAIN for p in all_prompts())

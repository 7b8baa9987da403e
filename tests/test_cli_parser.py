"""The ``afd`` parser: light to build (no torch), strict about option names, documented."""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from afd.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "fastapi", "uvicorn", "httpx", "cv2", "scipy", "transformers", "imageio", "matplotlib")

# Run in a fresh interpreter: this test process has long imported torch.
PROBE = """
import json, sys
from afd.cli import build_parser, main

parser = build_parser()
codes = []
for argv in (["--help"], ["sample", "--help"], ["teacher", "serve", "--help"], ["nonsense"],
             ["sample", "--checkpoint", "x", "--out", "o"], ["eval", "--per-prompt", "2"],
             ["world", "render", "--split", "nope", "--out", "o"]):
    try:
        parser.parse_args(argv)
    except SystemExit as e:
        codes.append(e.code)
codes.append(main(["sample", "--checkpoint", "x", "--prompt", "a cat", "--out", sys.argv[1], "--per-prompt", "0"]))
codes.append(main(["world", "render", "--split", "physics-eval", "--out", sys.argv[1], "--per-prompt", "0"]))
codes.append(main(["eval", "--world", "real", "--per-prompt", "0"]))
codes.append(main(["eval", "--compare", "a.json", "--json", "b.json"]))
print(json.dumps({"codes": codes, "heavy": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)


def test_help_and_usage_errors_import_no_heavy_module(tmp_path):
    r = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "out")], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["codes"] == [0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2]
    assert got["heavy"] == []


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("afd ") and out != "afd unknown"


def test_abbreviations_are_rejected(capsys):
    parser = build_parser()
    args = parser.parse_args(["sample", "--checkpoint", "x", "--prompt", "prompts.txt", "--out", "o"])
    assert args.prompt == ["prompts.txt"] and args.prompts is None  # a prompt, never the file option
    with pytest.raises(SystemExit) as e:
        main(["sample", "--checkpoint", "x", "--split", "physics-eval", "--out", "o", "--per-p", "2"])
    assert e.value.code == 2 and "unrecognized arguments: --per-p" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--conf", "configs/train/afd.yaml"])
    assert "unrecognized arguments: --conf" in capsys.readouterr().err


def subparsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("afd",)):
    """Every (command path, parser) below ``parser``, itself included."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from subparsers(sub, path + (name,))


def test_every_option_has_help_and_shows_its_default():
    parsers = dict(subparsers(build_parser()))
    assert len(parsers) > 15
    for path, parser in parsers.items():
        assert parser.allow_abbrev is False, path
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"{' '.join(path)} {action.option_strings or action.dest} has no help"
    sample_help = parsers[("afd", "sample")].format_help()
    assert "clips per prompt (default: 1)" in " ".join(sample_help.split())
    assert "(default: None)" not in sample_help and "(default: False)" not in sample_help
    for command in ("train", "sample", "eval", "teacher", "reproduce", "demo"):
        assert "examples:\n  afd " + command in parsers[("afd", command)].format_help(), command


def test_demo_help_names_the_main_job_as_the_readme_does():
    demo = dict(subparsers(build_parser()))[("afd", "demo")].format_help()
    assert "the main job is `make afd` (afd train --config configs/train/afd-state.yaml)" in " ".join(demo.split())


def test_every_example_parses():
    parser = build_parser()
    examples = [line.strip() for _, sub in subparsers(parser) if sub.epilog
                for line in sub.epilog.splitlines()[1:] if line.strip().startswith("afd ")]
    assert len(examples) > 15
    for example in examples:
        argv = shlex.split(example, comments=True)[1:]
        if argv[-1] == "--help":
            continue
        assert parser.parse_args(argv).func, example


def test_a_train_config_error_answers_before_torch_loads():
    """``afd train`` reads and checks its config without importing torch, so a typo answers at once."""
    code = ("import sys\nfrom afd.cli import main\n"
            "rc = main(['train', '--config', 'configs/train/afd.yaml', 'train.method=afdd'])\n"
            "print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == ["2", "False"], out.stderr
    assert "train.method" in out.stderr and "afdd" in out.stderr


def test_overrides_may_follow_an_option(capsys):
    """``afd train ... run.dir=x --resume train.steps=40``: the override after the option reaches the
    config too (argparse alone would call it unrecognized)."""
    assert main(["train", "--config", "configs/train/afd.yaml", "run.dir=x", "--resume", "train.method=nope"]) == 2
    assert "train.method" in capsys.readouterr().err  # read and checked: it was not dropped
    with pytest.raises(SystemExit):
        main(["train", "--config", "configs/train/afd.yaml", "--resume", "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err

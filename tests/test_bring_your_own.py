"""Your own prompts, your own teacher, no judge: ``afd train`` end to end outside the world.

The teacher is a folder of clips (``teacher.spec=folder:DIR``) for free-text prompts that the
world's grammar cannot parse, the prompts come from a file, and ``eval.judge=none``: the run
must train, log, checkpoint, resume and draw its strip without any exact evaluation.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

from afd.cli import main
from afd.video.core import Video
from afd.video.io import write_video
from train_util import tiny_args

PROMPTS = ["a paper kite dips twice in a gusty breeze", "two marbles race down a wooden ramp at dusk",
           "a drop of ink spreads slowly in water"]


def folder_teacher(root: Path) -> Path:
    """Three clips (random frames, 16 at 8 fps, 32x32) for PROMPTS, seed 0, with a manifest."""
    root.mkdir()
    g = torch.Generator().manual_seed(0)
    rows = []
    for i, p in enumerate(PROMPTS):
        frames = (torch.rand(16, 3, 32, 32, generator=g) * 2 - 1).clamp(-1, 1)
        write_video(root / f"clip{i}.npz", Video(frames, 8))
        rows.append(json.dumps({"prompt": p, "seed": 0, "path": f"clip{i}.npz"}))
    (root / "manifest.jsonl").write_text("\n".join(rows) + "\n")
    return root


def test_train_on_a_folder_teacher_and_a_prompts_file_without_a_judge(tiny_student, tmp_path, capsys):
    teacher = folder_teacher(tmp_path / "clips")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# my prompts\n" + "\n".join(PROMPTS) + "\n")
    args = ["train", "--no-progress", *tiny_args(tiny_student, tmp_path / "run", tmp_path / "cache"),
            f"teacher.spec=folder:{teacher}", f"train.prompts_file={prompts}", "eval.judge=none",
            "teacher.prefetch=true", "train.steps=2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all("loss_nft" in r and "d_acc" in r for r in rows)
    assert not any("reward_fidelity" in r or "eval_physics_total" in r for r in rows)  # no judge, no exact measures
    assert (run / "student" / "model.safetensors").exists() and (run / "strip.png").exists()
    assert not (run / "eval.json").exists() and not (run / "eval_base.json").exists()
    assert "teacher clips ready (3 paid now" in out
    # resume extends the run; the teacher is not paid again
    assert main([*args[:-1], "train.steps=3", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "(0 paid now" in out
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_free_text_prompts_need_judge_none(tiny_student, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": p}) for p in PROMPTS) + "\n")
    args = ["train", "--no-progress", *tiny_args(tiny_student, tmp_path / "run", tmp_path / "cache"),
            f"train.prompts_file={prompts}", "train.steps=1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "eval.judge=none" in err and str(prompts) in err and len(err.strip().splitlines()) == 1
    # an oracle needs a judge
    assert main([*args, "eval.judge=none", "train.method=oracle", "afd.advantage.reward=logit"]) == 2
    assert "needs one (eval.judge=world)" in capsys.readouterr().err


@pytest.mark.parametrize("text, message", [
    ("", "no prompts in the file"),
    ("a\na\n", "repeats line 1"),
])
def test_prompt_file_errors_name_the_file_and_line(tmp_path, text, message):
    from afd.prompts import read_prompts_file

    path = tmp_path / "p.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_prompts_file(path)
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": "no prompt field"}\n')
    with pytest.raises(ValueError, match=r"p.jsonl:2: expected an object with a non-empty string field"):
        read_prompts_file(bad)
    csv = tmp_path / "p.csv"
    csv.write_text("a\n")
    with pytest.raises(ValueError, match="must end in .txt"):
        read_prompts_file(csv)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_the_loop_imports_no_world_module_and_methods_nothing_from_train():
    root = Path(__file__).resolve().parents[1] / "afd"
    assert not {m for m in _imports(root / "train" / "loop.py") if m.startswith("afd.world")}
    for f in (root / "methods").glob("*.py"):
        assert not {m for m in _imports(f) if m.startswith("afd.train")}, f


def test_a_teacher_urls_credentials_never_reach_the_run_files(tiny_student, tmp_path, capsys):
    """A URL with ``user:key@`` trains and resumes, but the key is in no file the run writes."""
    from http_util import TinyTeacher, serve

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    with serve(TinyTeacher(frames=16, size=32)) as (app, url):
        authed = url.replace("http://", "http://carol:pw-s3cret@")
        args = ["train", "--no-progress", *tiny_args(tiny_student, tmp_path / "run", tmp_path / "cache"),
                f"teacher.spec={authed}", f"train.prompts_file={prompts}", "eval.judge=none", "eval.strip_prompts=0"]
        assert main([*args, "train.steps=1"]) == 0
        assert main([*args, "train.steps=2", "--resume"]) == 0
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not [p for p in written if "s3cret" in str(p) or b"s3cret" in p.read_bytes()]
    assert "s3cret" not in capsys.readouterr().out
    assert "http://***@127.0.0.1" in (tmp_path / "run" / "config.yaml").read_text()

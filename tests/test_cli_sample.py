"""``afd sample``: free-text prompts without a file, and what it does to its --out folder."""

from __future__ import annotations

import json

import pytest

from afd.cli import main
from afd.video.io import read_video

FREE = ["a purple giraffe juggles three oranges", "a small red ball falls on a black background"]


def manifest(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def test_prompt_samples_free_text_without_a_file(tiny_student, tmp_path, capsys):
    out = tmp_path / "clips"
    assert main(["sample", "--checkpoint", str(tiny_student), "--prompt", FREE[0], "--prompt", FREE[1],
                 "--per-prompt", "2", "--seed", "5", "--no-mp4", "--out", str(out)]) == 0
    rows = manifest(out)
    assert [(r["prompt"], r["seed"]) for r in rows] == [(FREE[0], 5), (FREE[0], 6), (FREE[1], 5), (FREE[1], 6)]
    clips = [read_video(out / r["path"]) for r in rows]
    assert clips[0].frames.shape[1] == 3 and not bool((clips[0].frames == clips[2].frames).all())
    assert "wrote 4 clips" in capsys.readouterr().out


def test_prompt_sources_are_one_of_three(tiny_student, tmp_path, capsys):
    base = ["sample", "--checkpoint", str(tiny_student), "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit):
        main(base)
    assert "one of the arguments --split --prompts --prompt is required" in capsys.readouterr().err
    (tmp_path / "p.txt").write_text(FREE[0] + "\n")
    with pytest.raises(SystemExit):
        main(base + ["--prompt", FREE[0], "--prompts", str(tmp_path / "p.txt")])
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(base + ["--prompt", "  "]) == 2
    assert "--prompt must be non-empty text" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_out_refuses_a_foreign_folder_and_replaces_its_own(tiny_student, tmp_path, capsys):
    run = ["sample", "--checkpoint", str(tiny_student), "--prompt", FREE[0]]
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main(run + ["--out", str(foreign)]) == 2
    err = capsys.readouterr().err
    assert "not written by `afd sample`" in err and "notes.txt" in err
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]  # refused before writing anything

    out = tmp_path / "clips"
    assert main(run + ["--per-prompt", "3", "--out", str(out)]) == 0
    assert len(list(out.glob("*.mp4"))) == 3 and len(list(out.glob("*.npz"))) == 3
    (out / ".tmp-clip00002.npz.0a1b2c3d4e5f").write_bytes(b"half")  # left by a run killed mid-write
    assert main(run + ["--prompt", FREE[1], "--no-mp4", "--out", str(out)]) == 0
    # The earlier run's mp4 files and third clip are gone; only what the manifest lists remains.
    assert sorted(p.name for p in out.iterdir()) == ["clip00000.npz", "clip00001.npz", "manifest.jsonl"]
    assert [r["prompt"] for r in manifest(out)] == FREE

"""``afd eval`` on a checkpoint (sample, then score) and on the world itself (reference rows)."""

from __future__ import annotations

import json

import pytest

from afd.cli import main


def test_eval_checkpoint_and_world_rows(tiny_student, tmp_path, capsys):
    out = tmp_path / "ckpt.json"
    args = ["--split", "physics-eval", "--prompts-per-split", "2", "--per-prompt", "1"]
    assert main(["eval", "--checkpoint", str(tiny_student), *args, "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["n_videos"] == 2 and rep["groups"]["general"] is None
    assert 0 <= rep["groups"]["physics"]["total"] <= 100
    real, loose = tmp_path / "real.json", tmp_path / "loose.json"
    assert main(["eval", "--world", "real", *args, "--json", str(real)]) == 0
    assert main(["eval", "--world", "loose", *args, "--json", str(loose)]) == 0
    r, lo = (json.loads(p.read_text())["groups"]["physics"] for p in (real, loose))
    # The teacher is the real world: its own clips fit the real simulator almost exactly.
    assert r["physical_consistency"] > 80 and r["physical_consistency"] >= lo["physical_consistency"]
    capsys.readouterr()


@pytest.mark.parametrize("argv, msg", [
    (["--videos", "x", "--split", "physics-eval"], "--split and --prompts-per-split apply"),
    (["--world", "real", "--per-prompt", "0"], "--per-prompt must be >= 1"),
    (["--world", "real", "--split", "nope"], "unknown split 'nope'"),
    (["--checkpoint", "no-such-student"], "no such student checkpoint"),
])
def test_eval_errors(argv, msg, capsys):
    assert main(["eval", *argv]) == 2
    assert msg in capsys.readouterr().err

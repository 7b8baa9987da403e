"""``afd eval`` on a checkpoint (sample, then score) and on the world itself (reference rows)."""

from __future__ import annotations

import json
import re

import numpy as np
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

    # --compare puts saved reports side by side, named after their folder or NAME=.
    run = tmp_path / "run-a"
    run.mkdir()
    (run / "eval.json").write_text(real.read_text())
    assert main(["eval", "--compare", str(run / "eval.json"), f"base={loose}", str(out)]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header[-3:] == ["run-a", "base", "ckpt"]


def test_eval_compare_errors(tmp_path, capsys):
    bad, other = tmp_path / "bad.json", tmp_path / "other.json"
    bad.write_text("{not json")
    other.write_text(json.dumps({"groups": {"physics": None}}))
    good = tmp_path / "x" / "eval.json"
    good.parent.mkdir()
    good.write_text(json.dumps({"n_videos": 1, "groups": {"physics": None, "general": None}}))
    for argv, msg in [([str(tmp_path / "missing.json")], "no report at"),
                      ([str(bad)], "bad.json is not JSON"),
                      ([str(other)], "other.json is not an afd eval report"),
                      ([str(good), str(good)], "two columns named 'x'")]:
        assert main(["eval", "--compare", *argv]) == 2
        assert msg in capsys.readouterr().err
    assert main(["eval", "--compare", str(good), "--json", "o.json"]) == 2
    assert "--compare prints saved reports" in capsys.readouterr().err


@pytest.mark.parametrize("argv, msg", [
    (["--videos", "x", "--split", "physics-eval"], "--split and --prompts-per-split apply"),
    (["--world", "real", "--per-prompt", "0"], "--per-prompt must be >= 1"),
    (["--world", "real", "--split", "nope"], "unknown split 'nope'"),
    (["--checkpoint", "no-such-student"], "no such student checkpoint"),
    (["--world", "real", "--split", "physics-eval", "--prompts-per-split", "1", "--per-prompt", "1", "--fd-terms"],
     "--fd-terms: no general-domain prompt"),
    (["--world", "real", "--block-drift"], "use it with --checkpoint"),
    (["--checkpoint", "base-chunk", "--split", "physics-eval", "--prompts-per-split", "1", "--per-prompt", "1",
      "--block-drift"], "--block-drift: block drift needs general prompts with a moving object"),
])
def test_eval_errors(argv, msg, capsys):
    assert main(["eval", *argv]) == 2
    assert msg in capsys.readouterr().err


def test_block_drift_on_the_shipped_base(capsys):
    """The drift diagnostic on a real student: the world's own steps are equal inside blocks and
    across boundaries (constant speed), and the student's generated frames are tracked."""
    from afd.eval.blocks import block_drift, format_block_drift, moving_prompts
    from afd.student.backbones.transformer import CausalVideoTransformer
    from afd.student.shipped import resolve_checkpoint
    from afd.world.splits import load_split

    prompts = moving_prompts(load_split("general-eval"))[:3]
    model = CausalVideoTransformer.from_pretrained(resolve_checkpoint("base-chunk"))
    r = block_drift(model, prompts + ["a small red ball falls on a black background"])
    assert r.n_clips == 3 and r.drift.shape == (3, 3, 4)
    assert abs(r.world_inner_step - r.world_boundary_step) < 0.02 and r.world_inner_step > 0.1
    assert np.isfinite(r.drift).mean() > 0.8 and np.isfinite([r.inner_step, r.boundary_step]).all()
    text = format_block_drift(r)
    assert "mean signed" in text and "across block boundaries" in text
    assert main(["eval", "--checkpoint", "base-chunk", "--split", "general-eval", "--prompts-per-split", "2",
                 "--per-prompt", "1", "--block-drift"]) == 0
    assert "teacher-forced position error" in capsys.readouterr().out


def test_student_eval_progress_is_opt_in_and_changes_no_number(tiny_student, capsys):
    """The long base eval of ``make afd`` gets a line with its estimate and bars when asked; a
    library call stays silent, and the scores are the same either way."""
    from afd.eval.student import eval_prompts, evaluate_student, sample_and_score
    from afd.student.backbones.transformer import CausalVideoTransformer

    model = CausalVideoTransformer.from_pretrained(tiny_student)
    prompts = eval_prompts(2)
    quiet = sample_and_score(model, prompts, 2, 7)
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    loud = sample_and_score(model, prompts, 2, 7, progress=True)
    out, err = capsys.readouterr()
    assert out == ""
    assert re.search(r"eval: sample: 8 clips \(4 prompts, 2 seeds each\), ~\d+ s at the first batch's rate", err)
    assert re.search(r"eval: score: 8 clips, ~\d+ s at the first batch's rate", err)
    assert loud[0] == quiet[0] and ([s.physical_consistency for s in loud[1]]
                                    == [s.physical_consistency for s in quiet[1]])
    assert evaluate_student(model, 2, 2, 7, progress=True) == evaluate_student(model, 2, 2, 7)
    assert "eval: sample: 8 clips" in capsys.readouterr().err

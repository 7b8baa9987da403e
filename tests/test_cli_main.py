import json

from afd.cli import main


def test_demo_end_to_end(tmp_path, capsys):
    """The default pair: the shipped base-state and afd-state students next to the teacher."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--per-prompt", "1", "--style-student", "base-state-styled"]) == 0
    text = capsys.readouterr().out
    assert "teacher (real world)" in text and "base student" in text and "adapted student" in text
    assert "physical consistency: base" in text and "change" in text
    assert (out / "teacher_base_adapted.png").stat().st_size > 1000
    assert len(list((out / "clips").glob("*.mp4"))) == 18 and "the last row: the cartoon domain" in text
    real, base, adapted = (json.loads((out / f"eval_{m}.json").read_text()) for m in ("real", "base", "adapted"))
    assert real["groups"]["physics"]["physical_consistency"] > base["groups"]["physics"]["physical_consistency"]
    assert base["n_videos"] == real["n_videos"] == adapted["n_videos"]


def test_demo_names_a_missing_adapted_student(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--adapted", str(tmp_path / "nope")]) == 2
    assert "nope: no such student checkpoint" in capsys.readouterr().err


def test_bench_world_prints_json_last(capsys):
    assert main(["bench", "world", "--clips", "40", "--chunk", "20"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    r = json.loads(last)
    assert r["clips"] == 40 and r["clips_per_s"] > 0 and r["format"] == "64x64x32@16fps"

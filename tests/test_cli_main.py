import json

from afd.cli import main


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--per-prompt", "1"]) == 0
    text = capsys.readouterr().out
    assert "real (teacher)" in text and "loose (pretraining)" in text and "base student" in text
    assert "physical_consistency" in text
    assert (out / "real_loose_base.png").stat().st_size > 1000
    assert len(list((out / "clips").glob("*.mp4"))) == 15
    real = json.loads((out / "eval_real.json").read_text())
    loose = json.loads((out / "eval_loose.json").read_text())
    base = json.loads((out / "eval_base.json").read_text())
    assert real["groups"]["physics"]["physical_consistency"] > loose["groups"]["physics"]["physical_consistency"]
    assert base["n_videos"] == real["n_videos"]


def test_bench_world_prints_json_last(capsys):
    assert main(["bench", "world", "--clips", "40", "--chunk", "20"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    r = json.loads(last)
    assert r["clips"] == 40 and r["clips_per_s"] > 0 and r["format"] == "64x64x32@16fps"

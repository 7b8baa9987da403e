"""``afd bench iteration``: runs each method in its own process through the real loop and ends
with one JSON line of s/iteration and peak RSS per method (timings are printed, not asserted)."""

from __future__ import annotations

import json

from afd.cli import main


def test_bench_iteration_prints_per_method_figures(tiny_student, tmp_path, capsys):
    code = main(["bench", "iteration", "--methods", "afd", "--iters", "1", "--threads", "1",
                 f"teacher.cache_dir={tmp_path / 'cache'}", f"student.checkpoint={tiny_student}",
                 "train.prompts=2", "train.rollouts=2", "disc.model.width=4", "teacher.prefetch=false"])
    assert code == 0
    out = capsys.readouterr().out.strip().splitlines()
    figures = json.loads(out[-1])
    assert set(figures) == {"sft", "afd"}  # sft (at AFD's update batch) is always the reference
    for f in figures.values():
        assert f["s_per_iter"] > 0 and f["peak_rss_mb"] > 0
    assert any("afd / sft" in line for line in out)

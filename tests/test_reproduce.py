"""``afd reproduce``: job planning (dedup, order, resume), the subprocess runner, and the report."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from afd.cli import main
from afd.config import load_config, save_config
from afd.reproduce.config import ReproduceConfig
from afd.reproduce.jobs import EVAL_FILE, Job, JobFailed, find_reusable, plan_jobs, run_jobs, weights_digest
from afd.reproduce.report import collect, motion_quality, write_report
from afd.train.config import AdaptConfig

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "reproduce" / "reproduce-smoke.yaml"


def smoke_cfg(tmp_path, *extra) -> ReproduceConfig:
    return load_config(ReproduceConfig, SMOKE, [f"work_dir={tmp_path / 'jobs'}", f"report_dir={tmp_path / 'report'}",
                                                f"configs_dir={REPO / 'configs' / 'train'}", *extra])


def test_plan_dedups_sweep_points_equal_to_the_main_run(tmp_path):
    jobs = plan_jobs(smoke_cfg(tmp_path))
    ids = [j.id for j in jobs]
    assert len(ids) == len(set(ids))
    assert ids[:3] == ["teacher", "loose", "base-chunk"]
    by_id = {j.id: j for j in jobs}
    # eta_D 1e-4, BT loss and 1 clip per prompt are afd.yaml's defaults: the main run serves them.
    assert set(by_id["afd-chunk-s0"].tags) == {"main", "sweep:eta_d", "sweep:disc_loss", "sweep:budget"}
    assert "sweep:sft_steps" in by_id["sft-chunk-s0"].tags  # steps=2 is on the SFT curve too
    assert by_id["afd-chunk-s0-disc_lr0_0"].overrides == ("disc.lr=0.0",)
    # Seed-major: every method at seed 0 (and the sweeps) before any seed-1 job.
    first_s1 = min(i for i, j in enumerate(jobs) if j.seed == 1)
    assert all(j.seed in (None, 0) for j in jobs[:first_s1])
    argv = by_id["gan-chunk-s1"].argv
    assert argv[:3] == ("train", "--config", str(REPO / "configs" / "train" / "gan.yaml"))
    assert "train.seed=1" in argv and "eval.before=false" in argv


@pytest.mark.parametrize("override, msg", [
    ("methods=[afd,ppo]", "methods: 'ppo' is neither a method (base, sft, gan, dmd, afd, oracle, chance) nor a "
                          "name in variants"),
    ("variants={afd: [afd, afd.top_k=2]}", "variants.afd: a variant needs a name of its own"),
    ("variants={x: [base, afd.top_k=2]}", "variants.x: expected [METHOD, key=value, ...] with METHOD one of sft"),
    ("variants={x: [afd, top_k]}", "variants.x: expected key=value overrides after the method, got ['top_k']"),
    ("row_seeds={ppo: [1]}", "row_seeds: 'ppo' is not ROW or ROW/FAMILY with ROW a trained row of methods"),
    ("row_seeds={afd/frame: [1]}", "row_seeds: 'afd/frame' is not ROW or ROW/FAMILY with ROW a trained row of "
                                   "methods and FAMILY one of families (chunk)"),
    ("row_families={afd: [frame]}", "row_families: 'afd' is not a trained row of methods, or names no family or one "
                                    "not in families (chunk)"),
    ("sweeps.family=frame", "sweeps.family 'frame' is not one of families"),
    ("sweeps.budget_methods=[base]", "sweeps.budget_methods: 'base' is neither a trained method (sft, gan, dmd, afd, "
                                     "oracle, chance) nor a name in variants"),
    ("method_overrides={base: [x=1]}", "command line: method_overrides.base: expected one of 'sft', 'gan', "
                                       "'dmd', 'afd', 'oracle', 'chance', got 'base' (str)"),
    ("sweeps.disc_loss=[bt,hinge]", "command line: sweeps.disc_loss[1]: expected one of 'bt', 'gan', got 'hinge'"),
])
def test_config_errors(tmp_path, override, msg):
    with pytest.raises(ValueError, match=re.escape(msg)):
        smoke_cfg(tmp_path, override)


def test_a_variant_row_runs_its_method_config_with_its_overrides(tmp_path):
    cfg = smoke_cfg(tmp_path, "methods=[base,afd,afd-filtered]", "seeds=[0]",
                    "variants={afd-filtered: [afd, afd.update=reward-filtered, afd.top_k=2]}",
                    "method_overrides={afd: [afd.beta=0.5]}", "sweeps.sft_steps=[]", "sweeps.eta_d=[]",
                    "sweeps.disc_loss=[]", "sweeps.budget_clips=[]")
    by_id = {j.id: j for j in plan_jobs(cfg)}
    job = by_id["afd-filtered-chunk-s0"]
    assert job.method == "afd-filtered" and job.argv[2] == str(REPO / "configs" / "train" / "afd.yaml")
    # the method's overrides, then the variant's own
    assert job.argv[-3:] == ("afd.beta=0.5", "afd.update=reward-filtered", "afd.top_k=2")
    assert "afd.update=reward-filtered" not in by_id["afd-chunk-s0"].argv
    confirmed = {j.id for j in plan_jobs(smoke_cfg(tmp_path, "methods=[base,sft,afd]", "seeds=[0]",
                                                   "row_seeds={afd: [0, 1]}"))}
    assert {"afd-chunk-s1", "afd-chunk-s0", "sft-chunk-s0"} <= confirmed and "sft-chunk-s1" not in confirmed
    two = smoke_cfg(tmp_path, "methods=[base,sft,afd]", "seeds=[0]", "families={chunk: base-chunk, frame: base-frame}",
                    "row_families={afd: [frame]}")
    assert {j.id for j in plan_jobs(two) if "main" in j.tags and j.kind == "train"} == {"sft-chunk-s0", "sft-frame-s0",
                                                                                   "afd-frame-s0"}
    # ROW/FAMILY: a row's seeds on one family only (the seed a lost pass did not reach)
    per_fam = smoke_cfg(tmp_path, "methods=[base,afd]", "seeds=[0,1]",
                        "families={chunk: base-chunk, frame: base-frame}", "row_seeds={afd/frame: [2]}")
    assert per_fam.seeds_of("afd", "frame") == [2] and per_fam.seeds_of("afd", "chunk") == [0, 1]
    assert {j.id for j in plan_jobs(per_fam) if "main" in j.tags and j.kind == "train"} == {
        "afd-chunk-s0", "afd-chunk-s1", "afd-frame-s2"}


def test_gate_rows_pass_or_say_why(tmp_path):
    from afd.reproduce.claims import gate_rows
    from afd.reproduce.config import GateConfig

    def run(method, pc, general, dyn, seed=0):
        ev = _fake_eval(pc, general)
        ev["groups"]["physics"]["dynamic_degree"] = dyn
        return {"method": method, "family": "f", "seed": seed, "eval": ev, "wall_s": 600.0,
                "update": None if method == "base" else "nft"}

    res = {"runs": [run("base", 40, 90, 100), run("up", 52, 89, 95), run("up", 54, 89.5, 97, 1),
                    run("down", 45, 85, 80)]}
    rows = {r["method"]: r for r in gate_rows(res, ["f"], ["base", "up", "down", "absent"], GateConfig())}
    assert set(rows) == {"up", "down"}
    assert rows["up"]["passes"] and rows["up"]["pc"].d == pytest.approx(13) and rows["up"]["seeds"] == 2
    assert rows["up"]["minutes"] == pytest.approx(10) and rows["up"]["update"] == "nft"
    assert rows["down"]["fails"] == ["PC gain < 10", "general drop > 2", "dynamic degree < 90"]


def test_missing_method_config_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config for method 'sft'"):
        plan_jobs(smoke_cfg(tmp_path, f"configs_dir={tmp_path}"))


def test_runner_skips_finished_jobs_and_names_a_failure(tmp_path):
    work = tmp_path / "jobs"
    ok = Job("teacher", "world", ("eval", "--world", "real", "--split", "physics-eval", "--prompts-per-split", "1",
                                  "--per-prompt", "1", "--json", str(work / "teacher" / EVAL_FILE)))
    assert run_jobs([ok], work, log=lambda s: None) == {"ran": 1, "skipped": 0, "reused": 0}
    assert json.loads((work / "teacher" / "job.json").read_text())["wall_s"] > 0
    assert run_jobs([ok], work, log=lambda s: None) == {"ran": 0, "skipped": 1, "reused": 0}
    bad = Job("broken", "world",
              ("eval", "--world", "real", "--split", "nope", "--json", str(work / "broken" / EVAL_FILE)))
    with pytest.raises(JobFailed, match=r"job broken failed \(exit 2\).*broken/job.log"):
        run_jobs([ok, bad], work, log=lambda s: None)
    assert "unknown split 'nope'" in (work / "broken" / "job.log").read_text()


def _finish_train_job(job: Job, work_dir, *extra: str) -> Path:
    """What a finished training job leaves that staleness reads: eval.json and the saved resolved
    config (with ``extra`` overrides applied on top of the job's own)."""
    d = job.dir(work_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / EVAL_FILE).write_text(json.dumps(_fake_eval(10.0, 60.0)))
    overrides = [a for a in job.argv if "=" in a and not a.startswith("-")] + list(extra)
    save_config(load_config(AdaptConfig, job.argv[job.argv.index("--config") + 1], overrides), d / "config.yaml")
    return d


def test_a_finished_job_whose_config_changed_is_stale(tmp_path):
    cfg = smoke_cfg(tmp_path)
    job = {j.id: j for j in plan_jobs(cfg)}["gan-chunk-s0"]
    _finish_train_job(job, cfg.work_dir)
    assert job.done(cfg.work_dir) and job.stale(cfg.work_dir) is None
    # Where the run was written is not what it computed: a moved work dir stays finished.
    _finish_train_job(job, cfg.work_dir, f"run.dir={tmp_path / 'elsewhere'}")
    assert job.done(cfg.work_dir)
    # A method config edited after the run (here: its learning rate) makes it stale, named.
    _finish_train_job(job, cfg.work_dir, "train.lr=0.003")
    assert not job.done(cfg.work_dir)
    assert job.stale(cfg.work_dir) == "its resolved config changed: train.lr: 0.003 -> 1e-05"
    assert job.id in collect(cfg, [job])["missing"]  # a stale run never reaches the report
    # A run killed halfway under the old config is stale too (it is set aside, not resumed).
    (job.dir(cfg.work_dir) / EVAL_FILE).unlink()
    assert job.stale(cfg.work_dir) == "its resolved config changed: train.lr: 0.003 -> 1e-05"
    (job.dir(cfg.work_dir) / "job.json").write_text("{not json")
    assert "job.json is not valid JSON" in job.stale(cfg.work_dir)


def test_a_finished_job_whose_student_weights_changed_is_stale(tmp_path):
    cfg = smoke_cfg(tmp_path)
    job = {j.id: j for j in plan_jobs(cfg)}["afd-chunk-s0"]
    assert job.student == weights_digest("base-chunk") and len(job.student) == 16
    d = _finish_train_job(job, cfg.work_dir)
    record = {"argv": list(job.argv), "wall_s": 1.0, "resumed": False}
    (d / "job.json").write_text(json.dumps({**record, "student": job.student}))
    assert job.done(cfg.work_dir)
    (d / "job.json").write_text(json.dumps({**record, "student": "0" * 16}))  # ran from other weights
    assert job.stale(cfg.work_dir) == "the weights of its student checkpoint changed"
    (d / "job.json").write_text(json.dumps(record))  # an older record without the digest: cannot tell
    assert job.done(cfg.work_dir)


def test_list_names_stale_jobs(tmp_path, capsys):
    cfg = smoke_cfg(tmp_path)
    job = {j.id: j for j in plan_jobs(cfg)}["gan-chunk-s0"]
    _finish_train_job(job, cfg.work_dir, "train.lr=0.003")
    assert main(["reproduce", "--config", str(SMOKE), f"work_dir={cfg.work_dir}", f"report_dir={cfg.report_dir}",
                 f"configs_dir={REPO / 'configs' / 'train'}", "--list"]) == 0
    lines = {ln.split()[1]: ln for ln in capsys.readouterr().out.splitlines()}
    assert lines["gan-chunk-s0"].startswith("stale") and "train.lr: 0.003 -> 1e-05" in lines["gan-chunk-s0"]
    assert lines["sft-chunk-s0"].startswith("todo")


def test_runner_sets_a_stale_job_aside_and_runs_it_again(tmp_path):
    work = tmp_path / "jobs"
    args = ("eval", "--world", "real", "--split", "physics-eval", "--prompts-per-split", "1", "--per-prompt", "1")
    old = Job("teacher", "world", (*args, "--seed", "5", "--json", str(work / "teacher" / EVAL_FILE)))
    assert run_jobs([old], work, log=lambda s: None) == {"ran": 1, "skipped": 0, "reused": 0}
    # Same job at a new output path: not stale. A different eval seed: stale.
    moved = Job("teacher", "world", (*args, "--seed", "5", "--json", str(tmp_path / "x" / EVAL_FILE)))
    assert moved.done(work)
    new = Job("teacher", "world", (*args, "--seed", "6", "--json", str(work / "teacher" / EVAL_FILE)))
    assert new.stale(work) == "its command changed" and not new.done(work)
    logs = []
    assert run_jobs([new], work, log=logs.append) == {"ran": 1, "skipped": 0, "reused": 0}
    assert any("teacher is stale (its command changed); moved to" in ln for ln in logs)
    kept = work / ".stale" / "teacher"
    assert "5" in json.loads((kept / "job.json").read_text())["argv"] and (kept / EVAL_FILE).is_file()
    assert new.done(work) and "6" in json.loads((work / "teacher" / "job.json").read_text())["argv"]


def test_family_major_order_finishes_a_family_before_the_next(tmp_path):
    cfg = smoke_cfg(tmp_path, "families={chunk: base-chunk, frame: base-frame}", "seeds=[0,1]", "order=families")
    main_runs = [(j.family, j.seed) for j in plan_jobs(cfg) if j.kind == "train" and "main" in j.tags]
    assert main_runs == sorted(main_runs, key=lambda fs: (fs[0] != "chunk", fs[1]))
    assert main_runs[0] == ("chunk", 0) and main_runs[-1] == ("frame", 1)


def test_reuse_copies_a_run_finished_elsewhere_under_the_same_config(tmp_path, monkeypatch):
    cfg = smoke_cfg(tmp_path)
    job = {j.id: j for j in plan_jobs(cfg)}["gan-chunk-s0"]
    # The same computation under another id in another reproduction's work dir.
    other = tmp_path / "other"
    twin = Job("gan-lr-chunk-s0", job.kind, job.argv, method=job.method, family=job.family, seed=0,
               config=job.config, student=job.student)
    d = _finish_train_job(twin, other, f"run.dir={other / twin.id}")
    (d / "checkpoint").mkdir()
    record = {"argv": list(job.argv), "wall_s": 1.0, "resumed": False}
    # An unrecorded student digest, other weights or another config never match.
    (d / "job.json").write_text(json.dumps(record))
    assert find_reusable(job, [str(other)]) is None
    (d / "job.json").write_text(json.dumps({**record, "student": "0" * 16}))
    assert find_reusable(job, [str(other)]) is None
    (d / "job.json").write_text(json.dumps({**record, "student": job.student}))
    assert find_reusable(job, [str(other), str(tmp_path / "missing")]) == d
    logs = []
    counts = run_jobs([job], cfg.work_dir, log=logs.append, reuse_from=[str(other)])
    assert counts == {"ran": 0, "skipped": 0, "reused": 1} and "gan-chunk-s0 reused from" in logs[0]
    here = job.dir(cfg.work_dir)
    assert job.done(cfg.work_dir) and (here / "checkpoint").is_dir() and (d / EVAL_FILE).is_file()
    assert json.loads((here / "job.json").read_text())["copied_from"] == str(d)
    assert not list(Path(cfg.work_dir).glob("*adopting*"))
    assert [r["copied_from"] for r in collect(cfg, [job])["runs"]] == [str(d)]  # the report says so
    _finish_train_job(twin, other, "train.lr=0.003")
    assert find_reusable(job, [str(other)]) is None
    # A run started here is resumed, never replaced by a copy.
    _finish_train_job(twin, other)
    started = tmp_path / "started"
    (job.dir(started) / "checkpoint").mkdir(parents=True)
    monkeypatch.setattr("afd.reproduce.jobs.subprocess.run", lambda argv, **kw: SimpleNamespace(returncode=1))
    with pytest.raises(JobFailed, match="job gan-chunk-s0 failed"):
        run_jobs([job], started, log=lambda s: None, reuse_from=[str(other)])
    assert not (job.dir(started) / "job.json").exists()


def test_list_names_reusable_jobs(tmp_path, capsys):
    cfg = smoke_cfg(tmp_path)
    other = tmp_path / "other"
    teacher = {j.id: j for j in plan_jobs(cfg)}["teacher"]
    d = other / "teacher"
    d.mkdir(parents=True)
    (d / EVAL_FILE).write_text("{}")
    (d / "job.json").write_text(json.dumps({"argv": [*teacher.argv[:-1], str(d / EVAL_FILE)], "wall_s": 1.0}))
    assert main(["reproduce", "--config", str(SMOKE), f"work_dir={cfg.work_dir}", f"report_dir={cfg.report_dir}",
                 f"configs_dir={REPO / 'configs' / 'train'}", f"reuse_from=[{other}]", "--list"]) == 0
    lines = {ln.split()[1]: ln for ln in capsys.readouterr().out.splitlines()}
    assert lines["teacher"].startswith("reuse") and str(d) in lines["teacher"]
    assert lines["loose"].startswith("todo")
    # An eval whose command differs in one argument (here the eval seed) is not the same job, nor
    # is one whose record has no command.
    argv = [*teacher.argv[:-1], str(d / EVAL_FILE)]
    seed = argv.index("--seed") + 1
    (d / "job.json").write_text(json.dumps({"argv": [*argv[:seed], "7", *argv[seed + 1:]], "wall_s": 1.0}))
    assert find_reusable(teacher, [str(other)]) is None
    for rec in ({}, [], {"wall_s": 1.0}):
        (d / "job.json").write_text(json.dumps(rec))
        assert find_reusable(teacher, [str(other)]) is None


def _fake_eval(pc: float, general: float) -> dict:
    phys = {"total": 50 + pc / 10, "physical_consistency": pc, "gravity_error": 0.5, "bounce_accuracy": 50.0,
            "dynamic_degree": 80.0, "motion_smoothness": 99.0, "temporal_flickering": 99.0}
    gen = {"total": general, "persistence": 70.0, "color_accuracy": 90.0, "size_accuracy": 80.0,
           "background_accuracy": 100.0, "direction_accuracy": 50.0, "frechet_distance": 100.0}
    return {"n_videos": 4, "groups": {"physics": phys, "general": gen}}


def _fabricate(cfg, jobs):
    """Finished job dirs as the runner and the trainer leave them (dmd-chunk-s1 left unfinished)."""
    for n, j in enumerate(jobs):
        if j.id == "dmd-chunk-s1":
            continue  # left unfinished: the report says so
        d = j.dir(cfg.work_dir)
        d.mkdir(parents=True)
        pc = {"teacher": 95.0, "loose": 40.0}.get(j.id, 10.0 + (5 if j.method == "afd" else 0) + (j.seed or 0))
        (d / EVAL_FILE).write_text(json.dumps(_fake_eval(pc, 60.0 + n)))
        (d / "job.json").write_text(json.dumps({"argv": list(j.argv), "wall_s": 10.0, "resumed": False}))
        if j.method == "afd":
            rows = [{"step": i + 1, "r_phi": 0.5 - 0.05 * i, "d_acc": 0.6, "reward_fidelity": 0.1 * i,
                     "score_fidelity": None, "cue_visible": 0.4} for i in range(6)]
            (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        if j.kind == "train":  # what the trainer leaves: the resolved config and strips
            overrides = [a for a in j.argv if "=" in a and not a.startswith("-")]
            save_config(load_config(AdaptConfig, j.argv[j.argv.index("--config") + 1], overrides), d / "config.yaml")
            (d / "samples").mkdir()
            (d / "samples" / "iter00002.png").write_bytes(b"\x89PNG not decoded: the report only copies it")
            (d / "student").mkdir()
            for f in ("model.safetensors", "config.json"):
                (d / "student" / f).write_bytes((REPO / "checkpoints" / "base-state" / f).read_bytes())


def test_report_from_finished_jobs(tmp_path):
    """Tables (mean ± std, best in bold), sweeps, figures and results.json from fabricated job dirs."""
    cfg = smoke_cfg(tmp_path, "seeds=[0,1]")
    jobs = plan_jobs(cfg)
    _fabricate(cfg, jobs)
    res = collect(cfg, jobs)
    assert res["missing"] == ["dmd-chunk-s1"]
    afd = [r for r in res["runs"] if r["method"] == "afd"]
    assert [r["seed"] for r in afd] == [0, 1] and all(r["teacher_clips"] == 200 for r in afd)
    assert {r["method"]: r["lr"] for r in res["runs"]} == {"base": None, "sft": 1e-4, "gan": 1e-5, "dmd": 1e-5,
                                                          "afd": 1e-4}
    # mean over the second half of the iterations (3 of 6: 0.3, 0.4, 0.5); an unlogged cue is None
    assert (afd[0]["fidelity"]["reward_fidelity"] == pytest.approx(0.4)
            and afd[0]["fidelity"]["cue_single_object"] is None)
    base = [r for r in res["runs"] if r["method"] == "base"]
    assert [r["seed"] for r in base] == [0, 1] and base[0]["teacher_clips"] == 0 and base[1]["wall_s"] == 0
    assert [e["steps"] for e in res["sweeps"]["sft_steps"]] == [0, 1, 2, 3]
    assert [e["eta_d"] for e in res["sweeps"]["eta_d"]] == [0.0, 1e-4]
    assert res["sweeps"]["eta_d"][1]["curves"]["r_phi"][:2] == [0.5, 0.45]
    assert {(e["method"], e["clips_per_prompt"], e["teacher_clips"]) for e in res["sweeps"]["budget"]} == \
        {("sft", 1, 200), ("sft", 2, 400), ("afd", 1, 200), ("afd", 2, 400)}
    report = write_report(cfg, jobs).read_text()
    assert "**Incomplete:** 1 job(s)" in report
    assert "| chunk / afd (n=2) | **15.5 ± 0.7** |" in report  # best PC among model rows, in bold
    assert "| world: real (teacher) | 95.0 |" in report  # reference rows are not ranked
    assert "| chunk / afd | +0.40 (n=2) | - | +0.40 (n=2) | - | - |" in report
    assert "| gan-chunk-s0 | gan | - | chunk | 0 | 1e-05 | 200 | 10 |" in report
    assert "| afd-chunk-s1 | afd | nft | chunk | 1 | 0.0001 | 200 | 10 |" in report  # the update AFD ran
    out = Path(cfg.report_dir)
    for f in ("fig1_sft_steps.png", "fig5_eta_d.png", "fig6_disc_loss.png", "fig_budget.png", "strips/afd-chunk.png"):
        assert (out / f).is_file(), f
    saved = json.loads((out / "results.json").read_text())
    assert set(saved) >= {"teacher", "loose", "runs", "sweeps", "verdicts"} and saved["teacher"]["n_videos"] == 4
    goals = saved["verdicts"]["goals"][0]
    assert goals["gap_closed"] == pytest.approx((15.5 - 10) / (95 - 10))  # AFD 15, 16 over base 10, teacher 95
    assert goals["pc_gain"]["d"] == pytest.approx(5.5) and goals["met"]["gap"] is False
    assert goals["baselines"]["sft"]["d"] == pytest.approx(0.5)  # physics total = 50 + PC / 10 in the fakes
    verdicts = {c["claim"].split(":")[0]: c["verdict"] for c in saved["verdicts"]["claims"]}
    assert (set(verdicts) >= {"Fig. 1 (physics)", "Fig. 1 (general quality)", "Fig. 5", "Fig. 6"}
            and set(verdicts.values()) <= {"holds", "does not hold", "not measured"})
    assert "| chunk / afd (nft) | +5.5" in report and "6%" in report


def test_ship_copies_the_first_seed_run_with_a_card(tmp_path):
    from afd.reproduce.ship import ship
    from afd.student.backbones.transformer import CausalVideoTransformer

    cfg = smoke_cfg(tmp_path, "seeds=[0,1]", "ship={afd-chunk: afd/chunk, dmd-chunk: dmd/chunk}")
    jobs = plan_jobs(cfg)
    _fabricate(cfg, jobs)
    (tmp_path / "ckpt").mkdir()
    written = ship(cfg, jobs, dest_root=tmp_path / "ckpt", config_path="configs/reproduce/reproduce-smoke.yaml")
    assert [p.name for p in written] == ["afd-chunk", "dmd-chunk"]  # dmd-chunk-s0 finished (s1 did not)
    CausalVideoTransformer.from_pretrained(tmp_path / "ckpt" / "afd-chunk")
    card = (tmp_path / "ckpt" / "afd-chunk" / "README.md").read_text()
    assert "afd reproduce --config configs/reproduce/reproduce-smoke.yaml" in card and "afd-chunk-s0" in card
    assert "| physical consistency | 10.0 | 15.0 | +5.0 (within noise) |" in card  # fake evals carry no stderr
    assert "200 teacher clips" in card and "not complete when this was shipped: 1 jobs left" in card
    # Shipping again replaces weights and card but keeps the hand-kept recipe beside them.
    (tmp_path / "ckpt" / "afd-chunk" / "recipe").mkdir()
    (tmp_path / "ckpt" / "afd-chunk" / "recipe" / "stage1.yaml").write_text("extends: x.yaml\n")
    with open(tmp_path / "ckpt" / "afd-chunk" / "README.md", "a") as f:
        f.write("\n## Recipe\n\n`afd train --config recipe/stage1.yaml`\n")
    ship(cfg, jobs, dest_root=tmp_path / "ckpt", config_path="configs/reproduce/reproduce-smoke.yaml")
    assert (tmp_path / "ckpt" / "afd-chunk" / "recipe" / "stage1.yaml").read_text() == "extends: x.yaml\n"
    card = (tmp_path / "ckpt" / "afd-chunk" / "README.md").read_text()
    assert card.count("## Recipe") == 1 and "`afd train --config recipe/stage1.yaml`" in card


def test_ship_a_variant_row_names_it_and_the_planned_command(tmp_path):
    from afd.reproduce.ship import ship

    cfg = smoke_cfg(tmp_path, "methods=[base,afd-f]", "variants={afd-f: [afd, afd.update=reward-filtered, "
                    "afd.top_k=1]}", "ship={afd-best: afd-f/chunk}", "sweeps.sft_steps=[]", "sweeps.eta_d=[]",
                    "sweeps.disc_loss=[]", "sweeps.budget_clips=[]")
    jobs = plan_jobs(cfg)
    _fabricate(cfg, jobs)
    job = {j.id: j for j in jobs}["afd-f-chunk-s0"]
    # A run copied in from another reproduction recorded that one's directory.
    rec = job.dir(cfg.work_dir) / "job.json"
    rec.write_text(json.dumps({**json.loads(rec.read_text()), "argv": ["train", "run.dir=elsewhere/x"]}))
    ship(cfg, jobs, dest_root=tmp_path / "ckpt", config_path="configs/reproduce/x.yaml")
    card = (tmp_path / "ckpt" / "afd-best" / "README.md").read_text()
    assert card.startswith("# afd-best — `base-chunk` adapted with AFD (row `afd-f`: afd.update=reward-filtered, "
                           "afd.top_k=1)")
    assert "afd " + " ".join(job.argv) in card and "elsewhere" not in card
    assert "student update `reward-filtered`" in card and "bt loss" in card


def test_ship_leaves_a_checkpoint_another_config_still_ships(tmp_path, monkeypatch):
    from afd.reproduce.ship import ship

    monkeypatch.chdir(tmp_path)
    cfg = smoke_cfg(tmp_path, "seeds=[0]", "ship={afd-chunk: afd/chunk}")
    jobs = plan_jobs(cfg)
    _fabricate(cfg, jobs)
    (tmp_path / "other.yaml").write_text("ship: {afd-chunk: afd/chunk}\n")
    dest = tmp_path / "ckpt" / "afd-chunk"
    dest.mkdir(parents=True)
    (dest / "README.md").write_text("# afd-chunk\n\nafd reproduce --config other.yaml   # ships this\n")
    logs = []
    assert ship(cfg, jobs, dest_root=tmp_path / "ckpt", config_path="mine.yaml", log=logs.append) == []
    assert "afd-chunk was shipped by other.yaml, which still ships it" in logs[0]
    (tmp_path / "other.yaml").write_text("ship: {}\n")  # the other config gave the name up
    assert ship(cfg, jobs, dest_root=tmp_path / "ckpt", config_path="mine.yaml", log=logs.append) == [dest]
    assert "afd reproduce --config mine.yaml" in (dest / "README.md").read_text()


@pytest.mark.parametrize("ship, msg", [("{x: afd/nope}", "not METHOD/FAMILY"),
                                       ("{base-chunk: afd/chunk}", "new folder"),
                                       ("{x: base/chunk}", "not METHOD/FAMILY")])
def test_ship_config_errors(tmp_path, ship, msg):
    with pytest.raises(ValueError, match=msg):
        smoke_cfg(tmp_path, f"ship={ship}")


def test_motion_quality_is_the_documented_mean():
    assert motion_quality(_fake_eval(10, 60)) == pytest.approx((80 + 99 + 50) / 3)


@pytest.mark.slow
def test_smoke_reproduction_end_to_end(tmp_path, capsys):
    """configs/reproduce/reproduce-smoke.yaml through the CLI, then a rerun that skips every finished job."""
    args = ["reproduce", "--config", str(SMOKE), f"work_dir={tmp_path / 'jobs'}", f"report_dir={tmp_path / 'report'}",
            f"configs_dir={REPO / 'configs' / 'train'}", "seeds=[0]", f"overrides=[train.prompts=2, train.rollouts=2, "
            f"disc.steps=1, eval.strip_prompts=1, eval.prompts_per_split=1, teacher.cache_dir={tmp_path / 'cache'}]"]
    assert main(args) == 0
    res = json.loads((tmp_path / "report" / "results.json").read_text())
    assert res["missing"] == [] and {r["method"] for r in res["runs"]} == {"base", "sft", "gan", "dmd", "afd"}
    assert res["teacher"]["groups"]["physics"]["physical_consistency"] > 80
    capsys.readouterr()
    assert main(args) == 0
    assert "ran 0, reused 0, skipped" in capsys.readouterr().out


def test_bold_marks_the_best_value_as_printed():
    from afd.reproduce.report import _table

    rows = [("ref", [(99.9, None)]), ("a", [(99.76, 0.0)]), ("b", [(99.72, 0.0)]), ("c", [(99.78, 0.0)])]
    out = _table(rows, ["flicker"], [True], [1], ref_rows=1)
    # 99.76 and 99.78 both print as 99.8 (a tie on the page); 99.72 prints as 99.7 and is not bold
    assert "| a | **99.8 ± 0.0** |" in out and "| c | **99.8 ± 0.0** |" in out and "| b | 99.7 ± 0.0 |" in out
    assert "| ref | 99.9 |" in out


def test_miniature_state_reproduction_through_the_report(tmp_path):
    """The state families with two methods and a tiny budget, every job a real `afd` process, then
    the report: tables, the against-the-base rows, the goals and the paper's claims."""
    args = ["reproduce", "--config", str(SMOKE), f"work_dir={tmp_path / 'jobs'}", f"report_dir={tmp_path / 'report'}",
            f"configs_dir={REPO / 'configs' / 'train'}",
            "families={state-chunk: base-state, state-frame: base-state-frame}",
            "methods=[base, sft, afd]", "seeds=[0]", "steps=1", "sweeps.family=state-chunk", "sweeps.sft_steps=[]",
            "sweeps.eta_d=[]", "sweeps.disc_loss=[]", "sweeps.budget_clips=[]",
            f"overrides=[train.prompts=2, train.rollouts=2, disc.steps=1, eval.strip_prompts=1, "
            f"eval.prompts_per_split=1, teacher.cache_dir={tmp_path / 'cache'}]"]
    assert main(args) == 0
    res = json.loads((tmp_path / "report" / "results.json").read_text())
    assert res["missing"] == []
    assert {(r["family"], r["method"]) for r in res["runs"]} == {
        (f, m) for f in ("state-chunk", "state-frame") for m in ("base", "sft", "afd")}
    goals = res["verdicts"]["goals"]
    assert [g["family"] for g in goals] == ["state-chunk", "state-frame"]
    assert set(goals[0]["met"]) == {"gap", "general", "baselines"}
    report = (tmp_path / "report" / "report.md").read_text()
    for section in ("## Against the base", "## AFD against its goals", "## The paper's claims on this testbed"):
        assert section in report
    assert "| state-chunk / afd |" in report and "state-frame / sft (n=1)" in report
    # one seed: no seed spread, so the margins over the baselines are undefined, not invented
    assert "(no seed sd)" in report and "nan" not in report.split("## The paper's claims")[0]


def test_no_ship_leaves_the_checkpoints_alone(tmp_path, capsys):
    CHECKPOINTS_DIR = Path(__file__).resolve().parents[1] / "checkpoints"

    extra = ["seeds=[0,1]", "ship={afd-nosuchship: afd/chunk}"]
    cfg = smoke_cfg(tmp_path, *extra)
    _fabricate(cfg, plan_jobs(cfg))
    args = ["reproduce", "--config", str(SMOKE), "--report-only", "--no-ship", f"work_dir={tmp_path / 'jobs'}",
            f"report_dir={tmp_path / 'report'}", f"configs_dir={REPO / 'configs' / 'train'}", *extra]
    assert main(args) == 0
    assert (tmp_path / "report" / "report.md").is_file() and not (CHECKPOINTS_DIR / "afd-nosuchship").exists()
    assert "shipped" not in capsys.readouterr().out


def _sft_point(steps, physics, general, se=0.3):
    return {"steps": steps, "eval": {"groups": {"physics": {"total": physics}, "general": {"total": general}},
                                     "stderr": {"physics": {"total": se}, "general": {"total": se}}}}


def test_fig1_is_two_directional_claims():
    """The paper says longer SFT lowers physics and general quality: SFT's physics still rising at
    400 updates refutes the first; its general total falling confirms the second (the numbers of
    reports/default's sweep)."""
    from afd.reproduce.claims import sft_length_claims

    phys = [88.8, 89.6, 90.6, 90.2, 92.2]
    gen = [98.7, 97.9, 96.8, 95.6, 94.7]
    pts = [_sft_point(k, p, g) for k, p, g in zip((0, 50, 100, 200, 400), phys, gen)]
    (c_p, v_p, e_p), (c_g, v_g, _) = sft_length_claims(pts)
    assert "physics" in c_p and "lowers" in c_p and v_p == "does not hold"
    assert "general" in c_g and v_g == "holds"
    assert "400 updates - best shorter run (100)" in e_p
    # a physics total that peaks and then falls by more than noise confirms the claim ...
    down = [_sft_point(k, p, 90) for k, p in zip((0, 50, 100), (88, 93, 90))]
    assert sft_length_claims(down)[0][1] == "holds"
    # ... a fall inside the noise does not, nor does a flat general total; too few points is not measured
    noisy = [_sft_point(k, p, 90, se=2.0) for k, p in zip((0, 50, 100), (88, 93, 90))]
    assert [v for _, v, _ in sft_length_claims(noisy)] == ["does not hold", "does not hold"]
    assert [v for _, v, _ in sft_length_claims(pts[:2])] == ["not measured", "not measured"]


def test_goals_for_each_afd_row_against_every_tuned_baseline_and_its_own_oracle():
    """Variant rows play their method's part: each AFD row gets goals against every SFT/GAN/DMD row,
    its oracle is the oracle row with the same update, and the paper's claims read AFD (paper)."""
    from afd.reproduce.claims import afd_goals, all_goals, markdown, paper_claims

    variants = {"afd-paper": ["afd", "disc.lr=1e-3"], "afd-filtered": ["afd", "afd.update=reward-filtered"],
                "sft-lr3e-5": ["sft", "train.lr=3e-5"], "gan-lr1e-6": ["gan", "train.lr=1e-6"],
                "oracle-filtered": ["oracle", "afd.update=reward-filtered"]}
    methods = ["base", "afd-paper", "afd-filtered", "sft-lr3e-5", "gan-lr1e-6", "oracle", "oracle-filtered"]
    # (PC per seed, update): physics total = 50 + PC / 10 in the fakes.
    rows = {"afd-paper": ([40, 41, 42], "nft"), "afd-filtered": ([60, 61, 62], "reward-filtered"),
            "sft-lr3e-5": ([50, 52, 54], None), "gan-lr1e-6": ([30, 31, 32], None),
            "oracle": ([45, 45, 45], "nft"), "oracle-filtered": ([70, 71, 72], "reward-filtered")}
    runs = [{"method": "base", "family": "chunk", "seed": s, "eval": _fake_eval(40.0, 98.0), "update": None}
            for s in range(3)]
    runs += [{"method": m, "family": "chunk", "seed": s, "eval": _fake_eval(float(pc), 97.0), "update": u}
             for m, (pcs, u) in rows.items() for s, pc in enumerate(pcs)]
    res = {"config": {"variants": variants}, "runs": runs, "teacher": _fake_eval(95.0, 99.0),
           "sweeps": {"sft_steps": [], "eta_d": [], "disc_loss": [], "budget": []}}
    best = afd_goals(res, "chunk", methods, "afd-filtered")
    assert best["oracle_row"] == "oracle-filtered" and best["oracle_gain"].d == pytest.approx(31.0)
    assert set(best["baselines"]) == {"sft-lr3e-5", "gan-lr1e-6"}
    assert best["baselines"]["sft-lr3e-5"].d == pytest.approx(0.9)  # 56.1 - 55.2
    assert best["met"]["baselines"] and best["met"]["general"]
    paper = afd_goals(res, "chunk", methods, "afd-paper")
    assert paper["oracle_row"] == "oracle" and not paper["met"]["baselines"]
    assert [g["row"] for g in all_goals(res, ["chunk"], methods)] == ["afd-paper", "afd-filtered"]
    md = "\n".join(markdown(res, ["chunk"], methods))
    assert "| chunk / afd-filtered (reward-filtered) | +21.0" in md and "sft-lr3e-5: +0.9" in md
    claims = {c: (v, e) for c, v, e in paper_claims(res, ["chunk"], methods)}
    verdict, evidence = claims["Tables 1-2 (chunk): AFD has the best physics total among adapted methods"]
    assert verdict == "does not hold" and "afd-paper - sft-lr3e-5 = " in evidence
    # An oracle with an extra option of the same update (a prior) listed first is not the pair.
    res["config"]["variants"]["oracle-prior"] = ["oracle", "afd.update=reward-filtered", "afd.lambda_prior=0.01"]
    runs += [{**r, "method": "oracle-prior"} for r in runs if r["method"] == "oracle-filtered"]
    assert afd_goals(res, "chunk", ["oracle-prior", *methods], "afd-filtered")["oracle_row"] == "oracle-filtered"
    # Without the AFD (paper) row the claims say why they are not measured.
    claims = paper_claims(res, ["chunk"], [m for m in methods if m != "afd-paper"])
    assert claims[0][1:] == ("not measured", "no AFD row ran the paper's update (nft)")


def test_goals_of_an_older_results_file_without_recorded_updates():
    """reports/default's results.json predates recorded updates: its `afd` row is AFD (paper) and
    pairs with the `oracle` row, and report.md prints no update for it."""
    from afd.reproduce.claims import afd_goals, markdown, paper_row

    runs = [{"method": m, "family": "chunk", "seed": s, "eval": _fake_eval(pc + s, 97.0)}
            for m, pc in (("base", 40.0), ("afd", 42.0), ("sft", 50.0), ("oracle", 48.0)) for s in range(3)]
    res = {"config": {"variants": {}}, "runs": runs, "teacher": _fake_eval(95.0, 99.0),
           "sweeps": {"sft_steps": [], "eta_d": [], "disc_loss": [], "budget": []}}
    methods = ["base", "sft", "afd", "oracle"]
    assert paper_row(res, "chunk", methods) == "afd"
    g = afd_goals(res, "chunk", methods)
    assert g["row"] == "afd" and g["update"] is None and g["oracle_row"] == "oracle"
    assert "| chunk / afd | +3.0" in "\n".join(markdown(res, ["chunk"], methods))


def test_budget_curve_counts_prompts_and_paid_clips(tmp_path):
    """sweeps.budget_prompts: one run per pool size, its budget that many clips, and what it paid
    read from its log; a run that paid more than its budget is an error, not a point."""
    cfg = smoke_cfg(tmp_path, "sweeps.budget_clips=[]", "sweeps.budget_prompts=[25,50]", "sweeps.budget_methods=[sft]")
    jobs = plan_jobs(cfg)
    budget_jobs = [j for j in jobs if "sweep:budget" in j.tags]
    assert sorted(a for j in budget_jobs for a in j.argv if a.startswith("train.pool_size")) == \
        ["train.pool_size=25", "train.pool_size=50"]
    _fabricate(cfg, jobs)
    for j in budget_jobs:
        k = int(next(a for a in j.argv if a.startswith("train.pool_size")).split("=")[1])
        (j.dir(cfg.work_dir) / "metrics.jsonl").write_text(
            json.dumps({"step": 1, "teacher_calls_paid": k - 1, "teacher_clips_used": k}) + "\n")
    res = collect(cfg, jobs)
    assert [(e["prompts"], e["teacher_clips"], e["used"], e["paid"]) for e in res["sweeps"]["budget"]] == [
        (25, 25, 25, 24), (50, 50, 50, 49)]
    assert "| sft | 25 | 1 | 25 | 25 | 24 |" in write_report(cfg, jobs).read_text()
    (budget_jobs[0].dir(cfg.work_dir) / "metrics.jsonl").write_text(json.dumps({"teacher_calls_paid": 99}) + "\n")
    with pytest.raises(ValueError, match="paid for 99 teacher clips, over its budget of 25"):
        collect(cfg, jobs)
    (budget_jobs[0].dir(cfg.work_dir) / "metrics.jsonl").write_text(json.dumps({"teacher_clips_used": 26}) + "\n")
    with pytest.raises(ValueError, match="drew on 26 teacher clips, over its budget of 25"):
        collect(cfg, jobs)


def test_tuning_config_evaluates_on_the_validation_splits(tmp_path):
    """configs/reproduce/baseline-lr.yaml: every eval (base, world rows, trained runs) reads the
    validation splits, never the eval splits, and each learning rate is its own row."""
    from afd.config import load_config as load
    from afd.reproduce.config import ReproduceConfig

    cfg = load(ReproduceConfig, "configs/reproduce/baseline-lr.yaml", [f"work_dir={tmp_path / 'w'}"])
    jobs = plan_jobs(cfg)
    evals = [j for j in jobs if j.kind != "train"]
    assert evals and all(" ".join(j.argv).count("--split") == 2 and "physics-val" in j.argv and "general-val" in j.argv
                         for j in evals)
    trains = [j for j in jobs if j.kind == "train"]
    assert all("eval.splits=[physics-val,general-val]" in j.argv for j in trains)
    lrs = {j.id: a for j in trains for a in j.argv if a.startswith("train.lr=")}
    assert lrs["gan-lr1e-6-state-chunk-s0"] == "train.lr=1.0e-6" and "gan-state-chunk-s0" not in lrs
    resolved = load_config(AdaptConfig, "configs/train/gan.yaml", [a for a in trains[0].argv if "=" in a])
    assert resolved.eval.splits == ["physics-val", "general-val"]


def test_verdicts_only_redecides_a_report_from_its_results(tmp_path):
    """--verdicts-only needs no job directory: it rewrites the verdicts of results.json and the
    verdict sections of report.md, and leaves every other line as it was."""
    import shutil

    from afd.reproduce.report import rewrite_verdicts

    cfg = smoke_cfg(tmp_path, "seeds=[0,1]")
    jobs = plan_jobs(cfg)
    _fabricate(cfg, jobs)
    md = write_report(cfg, jobs)
    good_md, good_res = md.read_text(), json.loads((md.parent / "results.json").read_text())
    shutil.rmtree(cfg.work_dir)  # the runs are gone
    res = dict(good_res, verdicts={"claims": []})
    (md.parent / "results.json").write_text(json.dumps(res))
    md.write_text(good_md.replace("| Fig. 1 (physics)", "| an old rule's row"))
    assert rewrite_verdicts(cfg) == md
    assert md.read_text() == good_md
    assert json.loads((md.parent / "results.json").read_text())["verdicts"] == good_res["verdicts"]
    (md.parent / "report.md").write_text("# no verdict sections\n")
    with pytest.raises(ValueError, match="no '## Against the base'"):
        rewrite_verdicts(cfg)


def _pass_report(tmp_path, name: str, methods: str, *extra: str) -> Path:
    """A written report of one pass (fabricated runs of ``methods`` on the smoke family)."""
    cfg = smoke_cfg(tmp_path / name, "seeds=[0,1]", f"methods={methods}", "sweeps.sft_steps=[]", "sweeps.eta_d=[]",
                    "sweeps.disc_loss=[]", "sweeps.budget_clips=[]", *extra)
    jobs = plan_jobs(cfg)
    _fabricate(cfg, jobs)
    write_report(cfg, jobs)
    return Path(cfg.report_dir)


def _edit_results(report: Path, edit) -> None:
    path = report / "results.json"
    res = json.loads(path.read_text())
    edit(res)
    path.write_text(json.dumps(res))


def test_combine_decides_passes_of_one_protocol_as_one_report(tmp_path, capsys):
    """--combine reads written reports only: the rows of each, one base, verdicts over all (AFD
    against an SFT row from the other pass), strips, and where each run came from."""
    import shutil

    a, b = _pass_report(tmp_path, "a", "[base,afd]"), _pass_report(tmp_path, "b", "[base,sft]")
    base_a = next(r["eval"] for r in json.loads((a / "results.json").read_text())["runs"] if r["method"] == "base")

    def same_base(res):  # the fakes' general total differs by job index; a real base eval does not
        for r in res["runs"]:
            if r["method"] == "base":
                r["eval"] = json.loads(json.dumps(base_a))

    _edit_results(b, same_base)
    shutil.rmtree(tmp_path / "a" / "jobs")  # the passes' job dirs are not needed
    out = tmp_path / "ab"
    args = ["reproduce", "--combine", str(a), "--combine", str(b), "name=ab", f"report_dir={out}"]
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["combined_from"] == [str(a), str(b)] and res["base_gaps"] == []
    assert [(r["method"], r["seed"], Path(r["report"]).parent.name) for r in res["runs"]] == [
        ("base", 0, "a"), ("base", 1, "a"), ("afd", 0, "a"), ("afd", 1, "a"), ("sft", 0, "b"), ("sft", 1, "b")]
    assert res["config"]["methods"] == ["base", "afd", "sft"] and res["config"]["ship"] == {}
    goals = res["verdicts"]["goals"][0]
    assert goals["baselines"]["sft"]["d"] == pytest.approx(0.5)  # AFD (a) against SFT (b)
    report = (out / "report.md").read_text()
    assert "`afd reproduce --combine` from the reports" in report and f"(from `{b}`)" in report
    assert (out / "strips" / "afd-chunk.png").is_file() and (out / "strips" / "sft-chunk.png").is_file()
    assert load_config(ReproduceConfig, out / "reproduce.yaml").name == "ab"
    assert "different arithmetic" not in report

    # the arithmetic (bf16 autocast or fp32) may differ between passes, and the report says so;
    # anything else in the overrides is the protocol
    _edit_results(b, lambda res: res["config"]["overrides"].append("train.amp=false"))
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["numerics"] == {str(a): [], str(b): ["train.amp=false"]}
    assert "train.amp" not in " ".join(res["config"]["overrides"])
    assert f"`{b}` with `train.amp=false`" in (out / "report.md").read_text()
    _edit_results(b, lambda res: res["config"]["overrides"].append("train.prompts=3"))
    assert main(args) != 0
    assert "overrides is [" in capsys.readouterr().err
    _edit_results(b, lambda res: res["config"]["overrides"].pop())

    # the same base scored a little differently (another CPU's numerics), within the evals' noise
    def nudge(by: float, se: float):
        def edit(res):
            for r in res["runs"]:
                if r["method"] == "base":
                    r["eval"]["groups"]["physics"]["physical_consistency"] += by
                    r["eval"]["stderr"] = {"physics": {"physical_consistency": se}}
        return edit

    _edit_results(b, nudge(0.2, 1.0))
    assert main(args) != 0  # a base eval without a bootstrap error must match exactly
    assert "must match exactly" in capsys.readouterr().err
    _edit_results(a, nudge(0.0, 1.0))
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["base_gaps"][0]["family"] == "chunk" and "physics physical consistency +0.20" in \
        (out / "report.md").read_text()
    capsys.readouterr()
    _edit_results(b, nudge(5.0, 0.1))  # beyond noise: another base
    assert main(args) != 0
    assert "chunk base eval gives physics.physical_consistency" in capsys.readouterr().err

    seeds = _pass_report(tmp_path, "c", "[base,sft]", "seeds=[0]")
    assert main(["reproduce", "--combine", str(a), "--combine", str(seeds), "name=x", f"report_dir={out}"]) != 0
    assert "seeds is [0], but" in capsys.readouterr().err
    assert main(["reproduce", "--combine", str(a), "--combine", str(a), "name=x", f"report_dir={out}"]) != 0
    assert "row afd on chunk at seed(s) [0, 1] is also in" in capsys.readouterr().err
    assert main(["reproduce", "--combine", str(a), "--combine", str(tmp_path / "none"), "name=x",
                 f"report_dir={out}"]) != 0
    assert "results.json: missing" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text(json.dumps({"config": {"methods": []}, "runs": [{"seed": 0}]}))
    assert main(["reproduce", "--combine", str(a), "--combine", str(tmp_path / "bad"), "name=x",
                 f"report_dir={tmp_path / 'x'}"]) != 0
    assert "expected results.json of `afd reproduce`" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # a refused combine writes nothing
    assert main(["reproduce", "--combine", str(a), "--combine", str(b)]) != 0
    assert "name the combined report" in capsys.readouterr().err
    assert main(args + ["--list"]) != 0 and "does not go with --list" in capsys.readouterr().err


def test_combine_reads_a_row_from_several_reports_at_disjoint_seeds(tmp_path, capsys):
    """A row whose seeds ran in two passes (a later pass running the seed a lost one did not
    reach) is one row of the combined report, over all its seeds; the same seed twice is refused."""
    a = _pass_report(tmp_path, "a", "[base,afd]")
    late = _pass_report(tmp_path, "late", "[base,afd]", "row_seeds={afd/chunk: [2]}")
    twice = _pass_report(tmp_path, "twice", "[base,afd]", "row_seeds={afd: [1, 2]}")
    base_a = next(r["eval"] for r in json.loads((a / "results.json").read_text())["runs"] if r["method"] == "base")
    for d in (late, twice):
        _edit_results(d, lambda res: [r.update(eval=json.loads(json.dumps(base_a)))
                                      for r in res["runs"] if r["method"] == "base"])
    out = tmp_path / "all"
    assert main(["reproduce", "--combine", str(a), "--combine", str(late), "name=all", f"report_dir={out}"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert [(r["method"], r["seed"], Path(r["report"]).parent.name) for r in res["runs"] if r["method"] == "afd"] == [
        ("afd", 0, "a"), ("afd", 1, "a"), ("afd", 2, "late")]
    assert res["config"]["row_seeds"] == {"afd": [0, 1, 2]}  # the union of both passes' plans
    report = (out / "report.md").read_text()
    assert f"afd on chunk: seeds 0, 1 from `{a}`, seed 2 from `{late}`" in report
    assert "| chunk / afd (n=3) |" in report
    assert main(["reproduce", "--combine", str(a), "--combine", str(twice), "name=x",
                 f"report_dir={tmp_path / 'x'}"]) != 0
    assert "row afd on chunk at seed(s) [1] is also in" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def _fabricate_long(cfg, jobs, whole: dict[str, float]) -> None:
    """The ``long`` jobs' 32-frame eval reports, whole-clip PC ``whole[method]`` + seed."""
    for j in jobs:
        if j.kind != "long":
            continue
        pc = {"teacher-f32": 98.0, "loose-f32": 40.0}.get(j.id, whole.get(j.method, 0.0) + (j.seed or 0))
        ev = _fake_eval(pc, 60.0)
        ev["horizon"] = {"seconds": 4, "window_s": 2, "windows": [{}, {}],
                         "drift": {"physical_consistency": [pc, pc - 5], "gravity_error": [0.1, None],
                                   "free_flight": [100.0, 50.0], "ball_persistence": [100.0, 100.0],
                                   "general_total": [90.0, 80.0]},
                         "whole": {"physical_consistency": pc, "physical_consistency_se": 1.0}}
        (j.dir(cfg.work_dir) / EVAL_FILE).write_text(json.dumps(ev))


def test_long_horizon_evals_table_and_exposure_bias_claim(tmp_path):
    """eval_frames: a streamed eval of every world row, base and main-grid run (right after it),
    collected under ``long``, printed as a table, and the exposure-bias claim decided
    on whole-clip PC against the noise."""
    cfg = smoke_cfg(tmp_path, "methods=[base,sft,afd,oracle]", "eval_frames=[32]", "sweeps.sft_steps=[]",
                    "sweeps.eta_d=[]", "sweeps.disc_loss=[]", "sweeps.budget_clips=[]")
    jobs = plan_jobs(cfg)
    long = [j for j in jobs if j.kind == "long"]
    assert {j.id for j in long} == {"teacher-f32", "loose-f32", "base-chunk-f32", "sft-chunk-s0-f32",
                                    "sft-chunk-s1-f32", "afd-chunk-s0-f32", "afd-chunk-s1-f32",
                                    "oracle-chunk-s0-f32", "oracle-chunk-s1-f32"}
    order = [j.id for j in jobs]
    assert all(order.index(j.id) == order.index(j.id.removesuffix("-f32")) + 1 for j in long)  # right after it
    afd0 = next(j for j in long if j.id == "afd-chunk-s0-f32")
    assert afd0.argv[:5] == ("eval", "--checkpoint", str(Path(cfg.work_dir) / "afd-chunk-s0" / "student"),
                             "--frames", "32")
    # a trained run's long eval goes stale when the run is trained again (Job.reads); the others never read one
    assert afd0.reads == afd0.argv[2]
    assert all(j.reads is None for j in long if j.id in ("teacher-f32", "base-chunk-f32"))
    _fabricate(cfg, jobs)
    _fabricate_long(cfg, jobs, {"afd": 60.0, "oracle": 31.0, "sft": 30.0, "base": 20.0})
    res = collect(cfg, jobs)
    runs = res["long"]["32"]["runs"]
    assert {(r["method"], r["seed"]) for r in runs} >= {("base", 0), ("base", 1), ("afd", 0), ("afd", 1)}
    assert res["long"]["32"]["teacher"]["horizon"]["whole"]["physical_consistency"] == 98.0
    text = write_report(cfg, jobs).read_text()
    assert "## Long horizon: 32 frames (4 s)" in text and "| chunk / afd (n=2) | " in text
    verdicts = {c["claim"]: c["verdict"] for c in json.loads((tmp_path / "report" / "results.json").read_text())
                ["verdicts"]["claims"] if c["claim"].startswith("Exposure bias")}
    assert verdicts == {
        "Exposure bias (chunk, 32 frames): afd holds physics over the long horizon better than sft (whole-clip PC)":
            "holds",
        "Exposure bias (chunk, 32 frames): oracle holds physics over the long horizon better than sft "
        "(whole-clip PC)": "does not hold"}
    with pytest.raises(ValueError, match="eval_frames"):
        smoke_cfg(tmp_path, "eval_frames=[20]")


def test_long_horizon_claims_read_weighted_rows_against_the_chance_control(tmp_path):
    """With a chance control in the grid, the exposure-bias claims also say whether a weighted
    row's long-horizon gain needs its weights, against chance on the same student update: here AFD
    and chance both beat SFT, AFD's lead over chance (+1.0) is inside its 2-SE bar (1.4), and the
    reward-filtered row, whose update no chance row ran, is not measured."""
    cfg = smoke_cfg(tmp_path, "methods=[base,sft,afd,afd-filtered,chance]", "eval_frames=[32]",
                    "variants={afd-filtered: [afd, afd.update=reward-filtered, afd.top_k=1]}", "sweeps.sft_steps=[]",
                    "sweeps.eta_d=[]", "sweeps.disc_loss=[]", "sweeps.budget_clips=[]")
    jobs = plan_jobs(cfg)
    _fabricate(cfg, jobs)
    _fabricate_long(cfg, jobs, {"afd": 40.0, "afd-filtered": 35.0, "chance": 39.0, "sft": 30.0, "base": 20.0})
    write_report(cfg, jobs)
    claims = {c["claim"].removeprefix("Exposure bias (chunk, 32 frames): "): (c["verdict"], c["evidence"])
              for c in json.loads((tmp_path / "report" / "results.json").read_text())["verdicts"]["claims"]
              if c["claim"].startswith("Exposure bias")}
    better = "holds physics over the long horizon better than sft (whole-clip PC)"
    weights = "'s weights matter over the long horizon: it beats chance on the same update"
    assert {k: v[0] for k, v in claims.items()} == {
        f"afd {better}": "holds", f"afd-filtered {better}": "holds", f"chance (control) {better}": "holds",
        f"afd{weights} (chance) (whole-clip PC)": "does not hold",
        f"afd-filtered{weights} (whole-clip PC)": "not measured"}
    assert claims[f"afd{weights} (chance) (whole-clip PC)"][1].startswith("afd - chance = +1.0")
    assert claims[f"afd-filtered{weights} (whole-clip PC)"][1] == "no chance row ran afd-filtered's update " \
        "(reward-filtered)"


def test_combine_merges_long_horizon_evals_of_passes(tmp_path, capsys):
    """Two passes of a long-horizon reproduction (a later one running the seeds the first did not
    reach) combine into one: the 64-frame rows over all their seeds, the world and base once (the
    other pass's checked against them), and the exposure-bias claim decided over both."""
    def long_pass(name: str, methods: str, row_seeds: str) -> Path:
        cfg = smoke_cfg(tmp_path / name, "seeds=[0,1]", f"methods={methods}", "eval_frames=[32]", row_seeds,
                        "sweeps.sft_steps=[]", "sweeps.eta_d=[]", "sweeps.disc_loss=[]", "sweeps.budget_clips=[]")
        jobs = plan_jobs(cfg)
        _fabricate(cfg, jobs)
        _fabricate_long(cfg, jobs, {"oracle": 40.0, "sft": 30.0, "base": 20.0})
        write_report(cfg, jobs)
        return Path(cfg.report_dir)

    a = long_pass("a", "[base,sft,oracle]", "row_seeds={oracle: [0]}")
    b = long_pass("b", "[base,oracle]", "row_seeds={oracle: [1]}")
    base_a = next(r["eval"] for r in json.loads((a / "results.json").read_text())["runs"] if r["method"] == "base")
    _edit_results(b, lambda res: [r.update(eval=json.loads(json.dumps(base_a)))
                                  for r in res["runs"] if r["method"] == "base"])
    out = tmp_path / "all"
    args = ["reproduce", "--combine", str(a), "--combine", str(b), "name=all", f"report_dir={out}"]
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    runs = res["long"]["32"]["runs"]
    assert [(r["method"], r["seed"], Path(r["report"]).parent.name) for r in runs if r["method"] != "sft"] == [
        ("base", 0, "a"), ("base", 1, "a"), ("oracle", 0, "a"), ("oracle", 1, "b")]
    assert res["long"]["32"]["teacher"]["horizon"]["whole"]["physical_consistency"] == 98.0
    assert not any(j.endswith("-f32") for j in res["missing"])
    assert "| chunk / oracle (n=2) | " in (out / "report.md").read_text()
    claim = next(c for c in res["verdicts"]["claims"] if c["claim"].startswith("Exposure bias (chunk, 32 frames)"))
    assert "oracle - sft = +10.0" in claim["evidence"]  # (40 + 41) / 2 against (30 + 31) / 2, both passes

    def long_base_pc(by: float):
        def edit(res):
            for r in res["long"]["32"]["runs"]:
                if r["method"] == "base":
                    r["eval"]["groups"]["physics"]["physical_consistency"] += by
        return edit

    _edit_results(b, long_base_pc(5.0))  # another base at 32 frames: not one reproduction
    assert main(args) != 0
    assert "32-frame chunk base eval gives physics.physical_consistency" in capsys.readouterr().err
    _edit_results(b, lambda res: res.update(long={"32": {"runs": "none"}}))
    assert main(args) != 0
    assert "long-horizon results (`long`) are not a mapping" in capsys.readouterr().err


def test_continual_adaptation_style_table_and_retention(tmp_path):
    """retention_splits: every base and main-grid run also scored on the original domain (right
    after it), collected under ``retention`` and read against the base with the 2-point goal; the
    style group of the main eval is tabled."""
    cfg = smoke_cfg(tmp_path, "methods=[base,sft,afd]", "eval_splits=[style-eval]",
                    "retention_splits=[physics-eval,general-eval]", "sweeps.sft_steps=[]", "sweeps.eta_d=[]",
                    "sweeps.disc_loss=[]", "sweeps.budget_clips=[]")
    jobs = plan_jobs(cfg)
    retain = [j for j in jobs if j.kind == "retain"]
    assert {j.id for j in retain} == {"base-chunk-retain", "sft-chunk-s0-retain", "sft-chunk-s1-retain",
                                      "afd-chunk-s0-retain", "afd-chunk-s1-retain"}
    order = [j.id for j in jobs]
    assert all(order.index(j.id) == order.index(j.id.removesuffix("-retain")) + 1 for j in retain)
    sft0 = next(j for j in retain if j.id == "sft-chunk-s0-retain")
    assert sft0.argv[:3] == ("eval", "--checkpoint", str(Path(cfg.work_dir) / "sft-chunk-s0" / "student"))
    assert "--split physics-eval --split general-eval" in " ".join(sft0.argv)
    main_eval = next(j for j in jobs if j.id == "base-chunk")
    assert "--split style-eval" in " ".join(main_eval.argv)
    _fabricate(cfg, jobs)
    # On the original domain: AFD keeps both totals, SFT loses 5 general points (beyond noise).
    for j in jobs:
        d = j.dir(cfg.work_dir)
        if not (d / EVAL_FILE).exists():
            continue
        if j.kind == "retain":
            general = {"base": 90.0, "afd": 89.0, "sft": 85.0}[j.method] + 0.1 * (j.seed or 0)
            ev = _fake_eval(40.0, general)
            ev["stderr"] = {"physics": {"total": 0.5, "physical_consistency": 2.0}, "general": {"total": 0.5}}
            (d / EVAL_FILE).write_text(json.dumps(ev))
        else:
            ev = json.loads((d / EVAL_FILE).read_text())
            style = {"base": 3.0, "afd": 50.0, "sft": 80.0, "teacher": 96.0, "loose": 96.0}[j.method]
            ev["groups"]["style"] = {"style_adherence": style, "outline": style, "shading": style, "gradient": style}
            (d / EVAL_FILE).write_text(json.dumps(ev))
    res = collect(cfg, jobs)
    assert res["retention"]["splits"] == ["physics-eval", "general-eval"]
    assert {(r["method"], r["seed"]) for r in res["retention"]["runs"]} == {
        ("base", 0), ("base", 1), ("sft", 0), ("sft", 1), ("afd", 0), ("afd", 1)}
    text = write_report(cfg, jobs).read_text()
    assert "## The new domain: style adherence (Fig. 4 analog)" in text
    assert "| world: real (teacher) | 96.0 |" in text and "| chunk / sft (n=2) | 80.0 ± 0.0 |" in text
    assert "## What is kept of the original domain" in text
    sft_row = next(line for line in text.splitlines() if line.startswith("| chunk / sft | "))
    afd_row = next(line for line in text.splitlines() if line.startswith("| chunk / afd | "))
    assert sft_row.endswith("| kept | lost |") and afd_row.endswith("| kept | kept |")
    # A rerun of a run makes its retention eval stale: the run's weights are newer than its eval.
    sft0_retain = next(j for j in retain if j.id == "sft-chunk-s0-retain")
    assert sft0_retain.stale(cfg.work_dir) is None and sft0_retain.done(cfg.work_dir)
    weights = Path(sft0_retain.reads) / "model.safetensors"
    later = (sft0_retain.dir(cfg.work_dir) / EVAL_FILE).stat().st_mtime + 5
    os.utime(weights, (later, later))
    assert sft0_retain.stale(cfg.work_dir) == "its student was trained again after it ran"
    assert not sft0_retain.done(cfg.work_dir)
    # The base's retention eval is identified by the base's weights, as its main eval.
    assert next(j for j in retain if j.id == "base-chunk-retain").student is not None
    with pytest.raises(ValueError, match="retention_splits: unknown split"):
        smoke_cfg(tmp_path, "retention_splits=[physics-evl]")

"""``afd reproduce``: the paper's tables and figures on the built-in world (see afd.reproduce)."""

from __future__ import annotations

from pathlib import Path

from afd.cli import examples


def register(sub) -> None:
    p = sub.add_parser("reproduce", help="methods x families x seeds + sweeps as separate jobs -> reports/<name>/",
                       epilog=examples("afd reproduce --config configs/reproduce/reproduce.yaml --list",
                                       "afd reproduce --config configs/reproduce/reproduce.yaml",
                                       "afd reproduce --config configs/reproduce/reproduce-smoke.yaml --no-ship",
                                       "afd reproduce --config configs/reproduce/reproduce.yaml --report-only",
                                       "afd reproduce --combine reports/decide --combine reports/decide-baselines "
                                       "name=decide-all report_dir=reports/decide-all"))
    p.add_argument("--config", default=None, help="YAML config (see configs/reproduce/reproduce.yaml)")
    p.add_argument("--report-only", action="store_true", help="run nothing; write the report from finished jobs")
    p.add_argument("--list", action="store_true", help="print the jobs (done, todo, reuse: finished as planned "
                   "in a `reuse_from` work dir and copied in, or stale: finished under a config that has since "
                   "changed, rerun by the next `afd reproduce`) and exit")
    p.add_argument("--verdicts-only", action="store_true",
                   help="run nothing and read no job directory: re-decide report_dir's verdicts (results.json, "
                        "report.md's verdict sections) from its results.json with the current rules")
    p.add_argument("--combine", action="append", metavar="REPORT_DIR", default=None,
                   help="(repeated, once per report) run nothing and read no job directory: write report_dir as "
                        "one report of these written reports (passes of one protocol, e.g. a grid's baselines run "
                        "after it), deciding the verdicts over all their rows; name and report_dir come from the "
                        "config or overrides")
    p.add_argument("--no-ship", action="store_true", help="leave checkpoints/ alone (by default the config's "
                   "`ship` entries whose runs have finished are copied there with their cards)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. seeds=[0] steps=10")
    p.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args) -> int:
    import time

    from afd.config import load_config, save_config
    from afd.reproduce.config import ReproduceConfig
    from afd.reproduce.jobs import plan_jobs, reuse_candidate, run_jobs
    from afd.reproduce.report import write_report

    cfg = load_config(ReproduceConfig, args.config, args.overrides)
    if args.combine:
        from afd.cli import CLIError

        clash = [f for f, on in (("--verdicts-only", args.verdicts_only), ("--list", args.list),
                                 ("--report-only", args.report_only)) if on]
        if clash:
            raise CLIError(f"--combine runs nothing and writes one report; it does not go with {', '.join(clash)}")
        if args.config is None and not any(o.startswith("report_dir=") for o in args.overrides):
            raise CLIError("--combine: name the combined report, e.g. name=decide-all report_dir=reports/decide-all "
                           "(the default report_dir would overwrite reports/default)")
        from afd.reproduce.combine import CombineError, combine
        from afd.reproduce.report import render_report

        try:
            combined, res, strips = combine(args.combine, cfg.name, cfg.report_dir, cfg.notes)
        except CombineError as e:
            raise CLIError(str(e)) from None
        path = render_report(combined, res, strips)
        save_config(combined, Path(combined.report_dir) / "reproduce.yaml")
        print(f"reproduce: {len(args.combine)} reports combined -> {path}")
        return 0
    if args.verdicts_only:
        from afd.reproduce.report import rewrite_verdicts

        print(f"reproduce: verdicts re-decided -> {rewrite_verdicts(cfg)}")
        return 0
    jobs = plan_jobs(cfg)
    if args.list:
        for j in jobs:
            why = j.stale(cfg.work_dir)
            src = None if why else reuse_candidate(j, cfg.work_dir, cfg.reuse_from)
            status = "stale" if why else "done" if j.done(cfg.work_dir) else "reuse" if src else "todo"
            note = f"  ({why})" if why else f"  (from {src})" if src else ""
            print(f"{status:<5}  {j.id:<40} {','.join(j.tags)}{note}")
        return 0
    Path(cfg.work_dir).mkdir(parents=True, exist_ok=True)
    save_config(cfg, Path(cfg.work_dir) / "reproduce.yaml")
    t0 = time.time()
    if not args.report_only:
        todo = sum(not j.done(cfg.work_dir) for j in jobs)
        print(f"reproduce: {len(jobs)} jobs, {todo} to run, work dir {cfg.work_dir}")
        from afd.cli import CLIError
        from afd.reproduce.jobs import JobFailed

        try:
            counts = run_jobs(jobs, cfg.work_dir, reuse_from=cfg.reuse_from)
        except JobFailed as e:
            raise CLIError(str(e)) from None
        print(f"reproduce: ran {counts['ran']}, reused {counts['reused']}, skipped {counts['skipped']} finished, "
              f"in {time.time() - t0:.0f}s")
    path = write_report(cfg, jobs)
    save_config(cfg, Path(cfg.report_dir) / "reproduce.yaml")
    print(f"reproduce: report -> {path}")
    if not args.no_ship:
        from afd.reproduce.ship import ship

        ship(cfg, jobs, config_path=args.config)
    return 0

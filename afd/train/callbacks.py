"""Loop callbacks: everything a run does besides training, kept out of the loop.

The loop (``afd.train.loop``) calls, on every rank:

- ``on_start(trainer)`` once before the first iteration of this process (after D warm-up);
- ``on_iteration(trainer, batch, prepared, row)`` after each iteration's student steps; a
  callback may add log entries to ``row``;
- ``on_eval_point(trainer, row)`` every ``eval.every`` iterations (not at the last one);
- ``on_finish(trainer, final)`` with the adapted student, after it is saved.

``JudgeCallback`` holds what needs a judge (log-only fidelity of the method's weights, the evals
and their tables); ``StripCallback`` draws teacher | base | now strips, which need none. A run
without a judge (``eval.judge=none``) still trains, logs, checkpoints, resumes and draws strips.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from afd import dist
from afd.io_utils import atomic_write_text
from afd.methods.oracle import oracle_weights
from afd.rollout_groups import per_rollout
from afd.student.sample import generate
from afd.train.fidelity import pick_lift, spearman
from afd.video.core import Video
from afd.video.io import atomic_write_bytes
from afd.video.strip import save_strip


class Callback:
    """Base class: every hook is a no-op."""

    def on_start(self, tr) -> None:
        pass

    def on_iteration(self, tr, batch, prepared, row: dict) -> None:
        pass

    def on_eval_point(self, tr, row: dict) -> None:
        pass

    def on_finish(self, tr, final) -> None:
        pass


def gather_numpy(x) -> np.ndarray:
    """A per-rollout vector (tensor or array) gathered over ranks, as float64 numpy."""
    t = torch.as_tensor(x).detach().to("cpu", torch.float64).reshape(-1, 1)
    return dist.gather_cat(t)[:, 0].numpy()


def global_groups(group_ids: torch.Tensor, n_prompts: int) -> np.ndarray:
    """Each rank's per-rollout prompt ids (0 .. n_prompts - 1, (n,) long) gathered over ranks,
    offset by rank so two ranks' prompts stay apart (every rank holds n_prompts: dist.shard)."""
    return gather_numpy(group_ids.cpu() + dist.rank() * n_prompts)


class JudgeCallback(Callback):
    """Fidelity logging, the base and final evals, the eval subset every ``eval.every`` and the
    printed base-against-adapted tables, all from one ``afd.train.judge.Judge``."""

    BEFORE = "eval_base.json"

    def __init__(self, judge):
        self.judge = judge

    # ----- fidelity: do the method's weights follow the judge's score? (log only) -----

    def on_iteration(self, tr, batch, prepared, row: dict) -> None:
        if batch.rollouts is None or (batch.measures is None and batch.step % tr.cfg.train.fidelity_every):
            return
        t0 = time.time()
        scores = prepared.scores if prepared.scores is not None else batch.d_student
        row.update(self.fidelity(tr, batch, prepared.weights, scores))
        row["t_fidelity"] = time.time() - t0

    def fidelity(self, tr, batch, weights, scores) -> dict[str, float]:
        """``reward_fidelity``: Spearman of the weights (or D's scores) with the judge's score over
        the global batch; ``oracle_fidelity``: with the weights the oracle would give this batch;
        ``cue_<name>``: with each of the judge's cues; ``rollout_pc``: the rollouts' mean score."""
        j = self.judge
        measures = batch.measures or j.measure(batch.rollouts, per_rollout(batch.prompts, tr.cfg.train.rollouts))
        score_all = gather_numpy(measures[j.score])
        out = {"rollout_pc": float(score_all.mean())}
        key = weights if weights is not None else scores
        if key is None:
            return out
        key_all = gather_numpy(key)
        out["reward_fidelity"] = spearman(key_all, score_all)
        if weights is not None:
            # The same per-prompt baseline and std as the method's weights: prompt offsets removed.
            oracle = oracle_weights(measures[j.score], batch.group_ids.cpu(), tr.cfg)
            out["oracle_fidelity"] = spearman(key_all, gather_numpy(oracle.weights))
            out["pick_lift"], out["pick_lift_max"] = pick_lift(key_all, score_all,
                                                               global_groups(batch.group_ids, len(batch.prompts)))
        out.update({f"cue_{c}": spearman(key_all, gather_numpy(measures[c])) for c in j.cues})
        if scores is not None and weights is not None:
            out["score_fidelity"] = spearman(gather_numpy(scores), score_all)
        return out

    # ----- evaluation -----

    def on_start(self, tr) -> None:
        e = tr.cfg.eval
        before = tr.out / self.BEFORE
        if tr.main and e.before and not before.exists():
            t0 = time.time()
            report = self.judge.evaluate(tr.load_base(), e.final_per_prompt, e.seed, e.final_prompts_per_split,
                                         progress=tr.progress)
            atomic_write_text(before, json.dumps(report, indent=1) + "\n")
            print(f"train: base student evaluated in {time.time() - t0:.1f}s -> {before}")
        model = tr.eval_model()  # every rank: under FSDP2 this gathers the student
        if tr.step == 0 and tr.main:
            sub = self.judge.summarize(model, e.prompts_per_split, e.per_prompt, e.seed)
            tr.logger.log(0, "eval", **sub)
            print("train: iteration 0 eval subset: " + ", ".join(f"{k} {v:.1f}" for k, v in sub.items()))

    def on_eval_point(self, tr, row: dict) -> None:
        e = tr.cfg.eval
        t0 = time.time()
        sub = self.judge.summarize(tr.eval_model(), e.prompts_per_split, e.per_prompt, e.seed)
        row.update({f"eval_{k}": v for k, v in sub.items()})
        row["t_eval"] = time.time() - t0

    def on_finish(self, tr, final) -> None:
        if not tr.main:
            return
        e, name = tr.cfg.eval, tr.cfg.train.method
        t0 = time.time()
        after = self.judge.evaluate(final, e.final_per_prompt, e.seed, e.final_prompts_per_split, progress=tr.progress)
        atomic_write_text(tr.out / "eval.json", json.dumps(after, indent=1) + "\n")
        tr.logger.log(tr.step, "final_eval", seconds=time.time() - t0)
        before = tr.out / self.BEFORE
        reports = {"base": json.loads(before.read_text())} if before.exists() else {}
        print(f"eval on {self.judge.describe()} ({e.final_per_prompt} clips per prompt, seed {e.seed}):")
        print(self.judge.tables({**reports, name: after}))


class StripCallback(Callback):
    """teacher | base | now for ``eval.strip_prompts`` prompts of the pool -> samples/iter<step>.png,
    copied to strip.png (the latest) at the run's root. Needs no judge."""

    def __init__(self):
        self.before = None

    def prompts(self, tr) -> list[str]:
        n = min(tr.cfg.eval.strip_prompts, len(tr.pool))
        return [tr.pool[i] for i in np.linspace(0, len(tr.pool) - 1, n).round().astype(int)] if n else []

    def on_start(self, tr) -> None:
        prompts = self.prompts(tr)
        model = tr.eval_model()  # every rank: under FSDP2 this gathers the student
        if tr.main and prompts:
            self.before = generate(tr.load_base(), prompts, [tr.cfg.eval.seed] * len(prompts))
            if tr.step == 0:
                self.draw(tr, model)

    def on_eval_point(self, tr, row: dict) -> None:
        self.draw(tr, tr.eval_model())

    def on_finish(self, tr, final) -> None:
        path = self.draw(tr, final)
        if path is not None:
            print(f"strip (teacher | base | {tr.cfg.train.method}, one row each per prompt): {path}")

    def draw(self, tr, model) -> Path | None:
        prompts = self.prompts(tr)
        if not prompts or not tr.main:
            return None
        teacher = tr.teacher.get(prompts, [0] * len(prompts))
        now = generate(model, prompts, [tr.cfg.eval.seed] * len(prompts))
        clips, captions = [], []
        for i, p in enumerate(prompts):
            rows = [("teacher", teacher[i]), ("base", self.before[i] if self.before is not None else None),
                    (f"{tr.cfg.train.method} (iter {tr.step})", now[i])]
            for name, v in rows:
                if v is not None:
                    clips.append(Video(v.cpu(), tr.fmt.fps))
                    captions.append(f"{name}: {p}")
        path = save_strip(tr.out / "samples" / f"iter{tr.step:05d}.png", clips, captions, n_frames=16, cell=40)
        latest = tr.out / "strip.png"
        atomic_write_bytes(latest, Path(path).read_bytes())
        return latest


def make_callbacks(judge) -> list[Callback]:
    """The default callbacks: strips always, the judge's when there is one."""
    return [StripCallback(), *([JudgeCallback(judge)] if judge is not None else [])]

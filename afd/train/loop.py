"""The one adaptation loop (``afd train``): AFD and the baselines are thin methods over it.

One iteration (paper Algorithm 1, docs/method.md section 8):

1. plan: P prompts of the adaptation split, the teacher clip used for each, G rollout seeds each
   (pure functions of (train.seed, iteration); rank r takes prompts r, r + W, ...);
2. teacher: those clips through the budgeted, shared cache (paid once, reused by every run);
3. rollouts: G per prompt from the old policy (EMA of the student), no gradient;
4. discriminator: n_D steps on prompt-paired (teacher, rollout) clips, then eval-mode scores;
5. the method's ``prepare`` (AFD: scores -> weights) and n_S student steps of its loss, each
   followed by the old policy's EMA update;
6. log one line to ``metrics.jsonl`` (+ tensorboard), and periodically evaluate, draw strips
   (teacher | student before | student now) and checkpoint.

Exact resume: every random draw of iteration i comes from generators seeded by (seed, i, purpose)
and the global torch RNG is reseeded from (seed, i) at the start of the iteration, so a
checkpoint at an iteration boundary (weights, old policy, D, both optimizers, counters, step)
determines the rest of the run; the "RNG state" is that seed and step. The advantage baseline is
per batch (no running tracker), so there is no tracker state to keep.

Black-box discipline: the loop sees the teacher only through ``TeacherClips``; the world's exact
evaluator is used only for logging (``reward_fidelity``, evals), never for training.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from afd.config import config_from_dict, config_to_dict, save_config
from afd.disc.model import Discriminator
from afd.eval.compare import HEADLINE, change_lines
from afd.eval.student import EVAL_SPLITS, eval_prompts, evaluate_student, sample_and_score
from afd.eval.table import format_reports
from afd.io_utils import atomic_write_text, file_sha256
from afd.methods.advantages import compute_weights
from afd.methods.base import Batch, Method, Models
from afd.student.codec import make_codec
from afd.student.lora import AdaptersOff, add_lora, merged_copy
from afd.student.model import CausalVideoTransformer
from afd.student.rollout import rollout, rollout_noise
from afd.student.sample import generate, guidance_kwargs
from afd.student.shipped import resolve_checkpoint
from afd.teacher import TeacherBudgetExceeded
from afd.text.encoder import get_text_encoder
from afd.train import dist
from afd.train.checkpoint import load_checkpoint, read_checkpoint_state, save_checkpoint
from afd.train.config import AdaptConfig
from afd.train.disc_phase import rerender_pair, score_pairs, train_discriminator
from afd.train.ema import ema_update, make_ema
from afd.train.fidelity import CUES, rollout_measures, spearman
from afd.train.logger import RunLogger, truncate_jsonl
from afd.train.teacher_clips import TeacherClips
from afd.video.core import Video
from afd.video.io import atomic_write_bytes
from afd.video.strip import save_strip
from afd.world.splits import load_split

CHECKPOINT_DIR = "checkpoint"
# Fields that may change when resuming: run length and bookkeeping, never the optimisation.
RESUME_MUTABLE = {("train", "steps"), ("run", "save_every"), ("run", "tensorboard"), ("eval", "every"),
                  ("teacher", "budget")}

# Streams of per-iteration randomness (so adding one never shifts another).
PLAN, DISC, STUDENT_STEP, GLOBAL, CRITIC, RERENDER = 0, 1, 2, 3, 4, 5


def make_method(cfg: AdaptConfig, models: Models) -> Method:
    from afd.methods.afd import AFD
    from afd.methods.dmd import DMD
    from afd.methods.gan import GAN
    from afd.methods.oracle import OracleAFD
    from afd.methods.sft import SFT

    methods = {"afd": AFD, "sft": SFT, "gan": GAN, "dmd": DMD, "oracle": OracleAFD}
    if cfg.disc.rerender_t > 0 and cfg.train.method != "afd":
        raise ValueError(f"disc.rerender_t applies to afd only (train.method is {cfg.train.method!r}): "
                         "a method with a gradient through D would need it through the re-rendering too")
    return methods[cfg.train.method](cfg, models)


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint32).view(np.uint64)[0] >> 1)


def _generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(_seed(*parts))


def resumable_config(saved: AdaptConfig, cfg: AdaptConfig, where: Path) -> AdaptConfig:
    """``saved`` with the fields of ``cfg`` that may change on resume; any other difference is an
    error naming the field."""
    a, b = config_to_dict(saved), config_to_dict(cfg)
    for section in a:
        for key in a[section]:
            if a[section][key] != b[section][key]:
                if (section, key) not in RESUME_MUTABLE:
                    allowed = ", ".join(f"{s}.{k}" for s, k in sorted(RESUME_MUTABLE))
                    raise ValueError(f"{where}: {section}.{key} is {a[section][key]!r} in the checkpoint but "
                                     f"{b[section][key]!r} now; only {allowed} may change on resume")
                a[section][key] = b[section][key]
    return config_from_dict(AdaptConfig, a, source=str(where))


class Plan:
    """What iteration ``it`` asks for, globally: prompts, teacher clip ids, rollout seeds."""

    def __init__(self, cfg: AdaptConfig, it: int, pool: list[str]):
        rng = np.random.default_rng(_seed(cfg.train.seed, it, PLAN))
        idx = rng.choice(len(pool), cfg.train.prompts, replace=False)
        self.prompts = [pool[i] for i in idx]
        self.clip_ids = [int(k) for k in rng.integers(0, cfg.teacher.clips_per_prompt, len(idx))]
        G = cfg.train.rollouts
        self.seeds = [[int(s) for s in rng.integers(0, 2**31 - 1, G)] for _ in idx]

    def local(self) -> tuple[list[str], list[int], list[list[int]]]:
        return dist.shard(self.prompts), dist.shard(self.clip_ids), dist.shard(self.seeds)


class Trainer:
    """Holds a run's state; ``run()`` executes the loop. Built by ``train()``."""

    def __init__(self, cfg: AdaptConfig, resume: bool, progress: bool):
        dist.init()
        self.out = Path(cfg.run.dir)
        self.ckpt = self.out / CHECKPOINT_DIR
        if self.ckpt.exists() and not resume:
            raise FileExistsError(f"{self.ckpt} exists: pass --resume to continue that run, or set run.dir=")
        state = {}
        if resume:
            if not self.ckpt.exists():
                raise FileNotFoundError(f"{self.ckpt}: nothing to resume")
            state = read_checkpoint_state(self.ckpt)
            cfg = resumable_config(config_from_dict(AdaptConfig, state["config"], source=str(self.ckpt)), cfg, self.ckpt)
        self.cfg, self.progress = cfg, progress
        torch.manual_seed(cfg.train.seed)
        torch.set_flush_denormal(True)  # D's tiny activations otherwise hit slow denormal paths

        self.base_dir = resolve_checkpoint(cfg.student.checkpoint)
        self.base_sha = file_sha256(self.base_dir / "model.safetensors")
        if state and state.get("reference_sha256") != self.base_sha:
            raise ValueError(f"{self.ckpt}: the run started from {state.get('reference')} with sha256 "
                             f"{state.get('reference_sha256')}, but {self.base_dir} now has {self.base_sha}")
        student = CausalVideoTransformer.from_pretrained(self.base_dir).train()
        cfg.student.apply(student)
        if cfg.student.lora_rank:
            add_lora(student, cfg.student.lora_rank, cfg.student.lora_alpha)
            ref = AdaptersOff(student)
        else:
            ref = make_ema(student)  # a frozen copy of the initial student
        old = make_ema(student)
        disc = Discriminator(cfg.disc.model)
        self.models = Models(student=student, old=old, ref=ref, disc=disc, codec=make_codec(student.config))
        self.method = make_method(cfg, self.models)
        t = cfg.train
        self.opt_s = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=t.lr,
                                       betas=t.betas, weight_decay=t.weight_decay)
        self.opt_d = torch.optim.AdamW(disc.trainable_parameters(), lr=cfg.disc.lr, betas=cfg.disc.betas,
                                       weight_decay=cfg.disc.weight_decay)

        self.pool = load_split(t.split)
        if t.prompts > len(self.pool):
            raise ValueError(f"train.prompts={t.prompts} exceeds the {len(self.pool)} prompts of split {t.split!r}")
        if t.prompts % dist.world_size():
            raise ValueError(f"train.prompts={t.prompts} must be divisible by the {dist.world_size()} ranks")
        sc = student.config
        self.fmt = sc.video_format()
        self.teacher = TeacherClips(cfg.teacher, self.pool, self.fmt)
        self.encoder = get_text_encoder()
        self.first_levels, self.levels = sc.sampler_levels()

        self.step = 0
        self.warmup_done = cfg.disc.warmup_iters == 0
        if resume:
            state = load_checkpoint(self.ckpt, self._modules(), self._optimizers())
            self.step = state["step"]
            self.warmup_done = state["warmup_done"]
            self.teacher.paid, self.teacher.cached = state["teacher_calls_paid"], state["teacher_calls_cached"]
        self.main = dist.is_main()
        self.logger = RunLogger(self.out, tensorboard=cfg.run.tensorboard) if self.main else None
        if self.main:
            self.logger.truncate_after(self.step)
            truncate_jsonl(self.out / "metrics.jsonl", self.step)
            save_config(cfg, self.out / "config.yaml")

    # ----- state -----

    def _modules(self) -> dict:
        m = self.models
        return {"student": m.student, "old": m.old, "disc": m.disc, **self.method.modules()}

    def _optimizers(self) -> dict:
        return {"student": self.opt_s, "disc": self.opt_d, **self.method.optimizers()}

    def save(self) -> None:
        if not self.main:
            return
        save_checkpoint(self.ckpt, self._modules(), self._optimizers(), {
            "step": self.step, "config": config_to_dict(self.cfg), "warmup_done": self.warmup_done,
            "reference": str(self.base_dir), "reference_sha256": self.base_sha,
            "teacher_calls_paid": self.teacher.paid, "teacher_calls_cached": self.teacher.cached,
            "rng": {"seed": self.cfg.train.seed, "note": "per-iteration generators are seeded by (seed, step)"},
        })

    # ----- one iteration's pieces -----

    def collect(self, it: int) -> tuple[Batch, dict[str, float]]:
        """Teacher clips and old-policy rollouts for iteration ``it`` (this rank's shard)."""
        prompts, clip_ids, seeds = Plan(self.cfg, it, self.pool).local()
        times = {}
        t0 = time.time()
        try:
            teacher = self.teacher.get(prompts, clip_ids)
        except TeacherBudgetExceeded as e:
            self.save()
            raise TeacherBudgetExceeded(
                f"{e}. Stopped before iteration {it}; the run up to there is saved in {self.ckpt} "
                f"(continue with --resume teacher.budget=N)") from None
        times["t_teacher"] = time.time() - t0
        text = self.encoder.encode(prompts)
        batch = Batch(step=it, prompts=prompts, text=text, teacher=teacher)
        if self.method.uses_rollouts:
            t0 = time.time()
            G = self.cfg.train.rollouts
            batch.rollout_latents, batch.rollouts = self.rollouts(prompts, seeds)
            batch.rollout_text = text.repeat_interleave(G)
            batch.group_ids = torch.arange(len(prompts)).repeat_interleave(G)
            times["t_rollout"] = time.time() - t0
        return batch, times

    @torch.no_grad()
    def rollouts(self, prompts: list[str], seeds: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """G rollouts per prompt with the old policy: their latents (P * G, T, C, H', W') in the
        student's space, exactly as generated, and their decodes (P * G, T, 3, H, W) in [-1, 1]."""
        G = len(seeds[0]) if seeds else 0
        flat_p = [p for p in prompts for _ in range(G)]
        flat_s = [s for row in seeds for s in row]
        old = self.models.old
        noise = rollout_noise(flat_p, flat_s, old, len(self.first_levels))
        x0 = rollout(old, self.encoder.encode(flat_p), noise, self.levels, amp=self.cfg.train.amp,
                     first_levels=self.first_levels, **guidance_kwargs(old, len(flat_p)))
        return x0.detach(), self.models.codec.decode(x0).detach()

    def discriminator(self, batch: Batch, it: int) -> dict[str, float]:
        cfg = self.cfg
        m = self.models
        teacher, rollouts = rerender_pair(m.ref, m.codec, batch.teacher, batch.rollouts, batch.text, cfg.disc.rerender_t,
                                          _generator(cfg.train.seed, it, RERENDER), cfg.train.amp)
        stats = train_discriminator(self.models.disc, self.opt_d, cfg.disc, teacher, rollouts,
                                    batch.prompts, batch.text, _generator(cfg.train.seed, it, DISC))
        batch.d_teacher, batch.d_student, scored = score_pairs(self.models.disc, cfg.disc, teacher,
                                                               rollouts, batch.text)
        stats.update({k: dist.mean_scalar(v) for k, v in scored.items()})
        return stats

    def student_steps(self, batch: Batch, prepared, it: int) -> dict[str, float]:
        t = self.cfg.train
        student = self.models.student
        params = [p for p in student.parameters() if p.requires_grad]
        sums: dict[str, float] = {}
        for s in range(t.student_steps):
            n_step = it * t.student_steps + s + 1  # optimizer steps taken once this one is
            gen = _generator(t.seed, it, STUDENT_STEP, s)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=t.amp):
                out = self.method.student_loss(batch, prepared, gen)
            loss = out["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"iteration {it}: student loss is {float(loss)}; lower train.lr")
            self.opt_s.zero_grad(set_to_none=True)
            loss.backward()
            dist.average_gradients(params)
            gn = float(torch.nn.utils.clip_grad_norm_(params, t.grad_clip))
            self.opt_s.step()
            ema_update(self.models.old, student, t.old_decay_at(n_step))
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            sums["grad_norm"] = sums.get("grad_norm", 0.0) + gn
        n = max(1, t.student_steps)
        return {k: dist.mean_scalar(v / n) for k, v in sums.items()}

    def fidelity(self, batch: Batch, weights, scores) -> dict[str, float]:
        """Log-only: rank agreement of the method's weights (or D's scores) with the true physics
        (``reward_fidelity``) and with the rendering cues (``cue_<name>``, see afd.train.fidelity)."""
        measures = batch.measures or rollout_measures(batch.rollouts,
                                                      [p for p in batch.prompts for _ in range(self.cfg.train.rollouts)])
        pc_all = self._gather(measures["physical_consistency"])
        out = {"rollout_pc": float(pc_all.mean())}
        key = weights if weights is not None else scores
        if key is None:
            return out
        key_all = self._gather(key)
        out["reward_fidelity"] = spearman(key_all, pc_all)
        if weights is not None:
            # The weights the oracle would give this batch (same per-prompt baseline and std): the
            # ceiling the method's weights are read against, prompt offsets removed.
            oracle = compute_weights(torch.as_tensor(measures["physical_consistency"], dtype=torch.float32),
                                     batch.group_ids, self.cfg.afd.advantage, gather=dist.gather_cat)
            out["oracle_fidelity"] = spearman(key_all, self._gather(oracle.weights))
        out.update({f"cue_{c}": spearman(key_all, self._gather(measures[c])) for c in CUES})
        if scores is not None and weights is not None:
            out["score_fidelity"] = spearman(self._gather(scores), pc_all)
        return out

    @staticmethod
    def _gather(x) -> np.ndarray:
        """A per-rollout vector (tensor or array) gathered over ranks, as float64 numpy."""
        t = torch.as_tensor(x).detach().to(torch.float64).reshape(-1, 1)
        return dist.gather_cat(t)[:, 0].numpy()

    # ----- evaluation and pictures -----

    def strip_prompts(self) -> list[str]:
        n = min(self.cfg.eval.strip_prompts, len(self.pool))
        return [self.pool[i] for i in np.linspace(0, len(self.pool) - 1, n).round().astype(int)] if n else []

    def strip(self, before: torch.Tensor | None) -> Path | None:
        """teacher | base | now for the strip prompts -> samples/iter<step>.png, also copied to
        strip.png (the latest) at the run's root; returns that copy."""
        prompts = self.strip_prompts()
        if not prompts or not self.main:
            return None
        teacher = self.teacher.get(prompts, [0] * len(prompts))
        now = generate(self.models.student, prompts, [self.cfg.eval.seed] * len(prompts))
        clips, captions = [], []
        for i, p in enumerate(prompts):
            rows = [("teacher", teacher[i]), ("base", before[i] if before is not None else None),
                    (f"{self.cfg.train.method} (iter {self.step})", now[i])]
            for name, v in rows:
                if v is not None:
                    clips.append(Video(v, self.fmt.fps))
                    captions.append(f"{name}: {p}")
        path = save_strip(self.out / "samples" / f"iter{self.step:05d}.png", clips, captions, n_frames=16, cell=40)
        latest = self.out / "strip.png"
        atomic_write_bytes(latest, Path(path).read_bytes())
        return latest

    def eval_subset(self) -> dict[str, float]:
        e = self.cfg.eval
        return evaluate_student(self.models.student, e.prompts_per_split, e.per_prompt, e.seed)

    def full_eval(self, model) -> dict:
        e = self.cfg.eval
        report, _, _, _ = sample_and_score(model, eval_prompts(e.final_prompts_per_split), e.final_per_prompt, e.seed)
        return report

    # ----- the loop -----

    def run(self) -> Path:
        cfg = self.cfg
        t = cfg.train
        if cfg.teacher.prefetch:
            if self.main:
                t0 = time.time()
                try:
                    self.teacher.prefetch()
                except TeacherBudgetExceeded as e:
                    raise TeacherBudgetExceeded(f"{e} (while prefetching the teacher budget; nothing trained)") from None
                print(f"train: teacher clips ready ({self.teacher.paid} paid by this run, "
                      f"{self.teacher.paid_total} in {self.teacher.teacher.dir}) in {time.time() - t0:.1f}s")
            dist.barrier()  # other ranks then read the paid clips from the shared cache
        base = CausalVideoTransformer.from_pretrained(self.base_dir)  # the student before adaptation
        cfg.student.apply(base)
        before_path = self.out / "eval_base.json"
        if self.main and cfg.eval.before and not before_path.exists():
            t0 = time.time()
            atomic_write_text(before_path, json.dumps(self.full_eval(base), indent=1) + "\n")
            print(f"train: base student evaluated in {time.time() - t0:.1f}s -> {before_path}")
        strip_before = None
        if self.main and self.strip_prompts():
            strip_before = generate(base, self.strip_prompts(), [cfg.eval.seed] * len(self.strip_prompts()))
        del base
        if not self.warmup_done:
            self.disc_warmup()
        if self.step == 0 and self.main:
            sub = self.eval_subset()
            self.logger.log(0, "eval", **sub)
            self.strip(strip_before)
            print("train: iteration 0 eval subset: " + ", ".join(f"{k} {v:.1f}" for k, v in sub.items()))

        from tqdm import tqdm

        bar = tqdm(total=t.steps, initial=self.step, disable=not (self.progress and self.main), dynamic_ncols=True,
                   desc=cfg.train.method)
        while self.step < t.steps:
            row = self.iteration(self.step)
            self.step += 1
            if cfg.eval.every and self.step % cfg.eval.every == 0 and self.step < t.steps:
                t0 = time.time()
                sub = self.eval_subset()
                row.update({f"eval_{k}": v for k, v in sub.items()})
                row["t_eval"] = time.time() - t0
                self.strip(strip_before)
            if self.main:
                self._log(row)
                bar.update(1)
                bar.set_postfix({k: f"{row[k]:.3g}" for k in ("d_acc", "r_phi", "reward_fidelity", "loss_nft", "seconds")
                                 if k in row and row[k] is not None and math.isfinite(row[k])})
            if self.step % cfg.run.save_every == 0 or self.step == t.steps:
                self.save()
        bar.close()
        return self.finish(strip_before)

    def iteration(self, it: int) -> dict[str, float]:
        """One iteration (module docstring, steps 1-5); returns its log row (not yet written)."""
        t = self.cfg.train
        torch.manual_seed(_seed(t.seed, it, GLOBAL))
        t_start = time.time()
        batch, times = self.collect(it)
        row: dict[str, float] = {}
        if self.method.uses_discriminator:
            t0 = time.time()
            row.update(self.discriminator(batch, it))
            times["t_disc"] = time.time() - t0
        t0 = time.time()
        critic = self.method.critic_steps(batch, _generator(t.seed, it, CRITIC))
        if critic:
            row.update(critic)
            times["t_critic"] = time.time() - t0
        prepared = self.method.prepare(batch)
        row.update(prepared.stats)
        t0 = time.time()
        row.update(self.student_steps(batch, prepared, it))
        times["t_student"] = time.time() - t0
        if batch.rollouts is not None and (batch.measures is not None or it % t.fidelity_every == 0):
            t0 = time.time()
            row.update(self.fidelity(batch, prepared.weights,
                                     prepared.scores if prepared.scores is not None else batch.d_student))
            times["t_fidelity"] = time.time() - t0
        row.update(times)
        row.update({"teacher_calls_paid": self.teacher.paid, "teacher_calls_cached": self.teacher.cached,
                    "teacher_clips_total": self.teacher.paid_total, "seconds": time.time() - t_start})
        row.pop("loss", None)
        return row

    def disc_warmup(self) -> None:
        """D-only iterations on teacher clips vs the base's rollouts, before any student update."""
        cfg = self.cfg
        for j in range(cfg.disc.warmup_iters):
            it = -(j + 1)  # negative iteration ids: their own random streams, disjoint from training
            torch.manual_seed(_seed(cfg.train.seed, 2**31 + j, GLOBAL))
            plan_it = 2**31 + j
            batch, _ = self.collect(plan_it)
            stats = self.discriminator(batch, plan_it)
            if self.main:
                self.logger.log(it, "disc_warmup", **stats)
        self.warmup_done = True
        self.save()

    def _log(self, row: dict) -> None:
        clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in row.items()}
        rec = {"step": self.step, **clean}
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        self.logger.log(self.step, "train", **{k: v for k, v in clean.items() if v is not None})

    def finish(self, strip_before) -> Path:
        if not self.main:
            return self.out
        student = self.models.student
        final = merged_copy(student) if self.cfg.student.lora_rank else student
        final.save_pretrained(self.out / "student", extra={"adapted_with": config_to_dict(self.cfg), "step": self.step,
                                                           "base": str(self.base_dir), "base_sha256": self.base_sha})
        self.models.disc.save_pretrained(self.out / "disc")
        strip = self.strip(strip_before)
        t0 = time.time()
        after = self.full_eval(final)
        atomic_write_text(self.out / "eval.json", json.dumps(after, indent=1) + "\n")
        before_path = self.out / "eval_base.json"
        reports = {"base": json.loads(before_path.read_text())} if before_path.exists() else {}
        self.logger.log(self.step, "final_eval", seconds=time.time() - t0)
        self.logger.close()
        print(f"train: {self.cfg.train.method} finished {self.step} iterations -> {self.out}")
        print(f"eval on {', '.join(EVAL_SPLITS)} ({self.cfg.eval.final_per_prompt} clips per prompt, "
              f"seed {self.cfg.eval.seed}):")
        print(format_reports({**reports, self.cfg.train.method: after}))
        if reports:
            print("\n".join(change_lines(reports["base"], after, HEADLINE, ("base", self.cfg.train.method))))
        if strip is not None:
            print(f"strip (teacher | base | {self.cfg.train.method}, one row each per prompt): {strip}")
        return self.out


def train(cfg: AdaptConfig, resume: bool = False, progress: bool = True) -> Path:
    """Run (or resume) an adaptation run; returns ``cfg.run.dir``."""
    return Trainer(cfg, resume, progress).run()

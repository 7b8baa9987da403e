"""The one adaptation loop (``afd train``): AFD and the baselines are thin methods over it.

One iteration (paper Algorithm 1, docs/method.md section 8):

1. plan: P prompts of the pool, the teacher clip used for each, G rollout seeds each
   (``afd.train.plan``: pure functions of (train.seed, iteration); each rank takes a contiguous share);
2. teacher: those clips through the budgeted, shared cache (paid once, reused by every run);
3. rollouts: G per prompt from the old policy (EMA of the student), no gradient;
4. discriminator: n_D steps on prompt-paired (teacher, rollout) clips, then eval-mode scores;
5. the method's ``prepare`` (AFD: scores -> weights) and n_S student steps of its loss, each
   followed by the old policy's EMA update;
6. callbacks (``afd.train.callbacks``: log-only fidelity, evals, strips), one log line, and a
   checkpoint every ``run.save_every`` iterations.

Black-box discipline: the loop sees the teacher only through ``TeacherClips``, prompts only as a
pool of strings, and a judge (the world's exact evaluator, optional) only through callbacks.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from afd import dist
from afd.config import config_to_dict, save_config
from afd.device import autocast, describe_precision, dist_backend, resolve_device
from afd.io_utils import load_safetensors
from afd.methods.base import Batch
from afd.prompts import load_prompt_pool, subset_pool
from afd.rollout_groups import group_ids, per_rollout
from afd.student.rollout import SamplerRecord, rollout, rollout_noise
from afd.student.sample import blocks_for_frames, guidance_kwargs
from afd.teacher import TeacherBudgetExceeded
from afd.train.build import build_run, load_base
from afd.train.callbacks import make_callbacks
from afd.train.checkpoint import load_checkpoint, save_checkpoint
from afd.train.config import AdaptConfig, public_config
from afd.train.disc_phase import ReplayBuffer, crop_windows, rerender_pair, score_pairs, train_discriminator
from afd.train.ema import ema_update, make_ema
from afd.train.judge import make_judge
from afd.train.logger import RunLogger, truncate_jsonl
from afd.train.parallel import full_optimizer_state, full_state_dict
from afd.train.plan import CRITIC, DISC, DISC_WINDOW, GLOBAL, RERENDER, STUDENT_STEP, Plan, generator, seed_of
from afd.train.resume import resumed_config
from afd.train.teacher_clips import TeacherClips

CHECKPOINT_DIR = "checkpoint"
REPLAY = "disc_replay"  # the checkpoint's file of D's replay buffer (disc.replay > 0)


class Trainer:
    """Holds a run's state; ``run()`` executes the loop. Built by ``train()``."""

    def __init__(self, cfg: AdaptConfig, resume: bool, progress: bool, callbacks=None):
        self.device = resolve_device(cfg.train.device)
        dist.init(dist_backend(self.device))
        self.out = Path(cfg.run.dir)
        self.ckpt = self.out / CHECKPOINT_DIR
        if self.ckpt.exists() and not resume:
            raise FileExistsError(f"{self.ckpt} exists: pass --resume to continue that run, or set run.dir=")
        state = {}
        if resume:
            cfg, state = resumed_config(cfg, self.ckpt)
        self.cfg, self.progress = cfg, progress
        t = cfg.train
        self.pool, where = load_prompt_pool(t.split, t.prompts_file)
        self.pool = subset_pool(self.pool, t.pool_size, where)
        if t.prompts > len(self.pool):
            raise ValueError(f"train.prompts={t.prompts} exceeds the {len(self.pool)} prompts of the {where}")
        if t.prompts % dist.world_size():
            raise ValueError(f"train.prompts={t.prompts} must be divisible by the {dist.world_size()} ranks")
        self.judge = make_judge(cfg.eval.judge)
        if self.judge is not None:
            self.judge.check_prompts(self.pool, where)
            self.judge.use_splits(tuple(cfg.eval.splits))
        self.callbacks = make_callbacks(self.judge) if callbacks is None else callbacks
        torch.manual_seed(t.seed)
        torch.set_flush_denormal(True)  # D's tiny activations otherwise hit slow denormal paths

        parts = build_run(cfg, self.device, self.judge)
        if state and state.get("reference_sha256") != parts.base_sha:
            raise ValueError(f"{self.ckpt}: the run started from {state.get('reference')} with sha256 "
                             f"{state.get('reference_sha256')}, but {parts.base_dir} now has {parts.base_sha}")
        self.models, self.method = parts.models, parts.method
        self.opt_s, self.opt_d = parts.opt_student, parts.opt_disc
        self.base_dir, self.base_sha = parts.base_dir, parts.base_sha
        self.parallel = parts.parallel
        self._plain: tuple[int, torch.nn.Module] | None = None  # (step, unsharded student) for callbacks
        self.fmt = parts.student.fmt  # teacher clips are adapted to what the codec decodes to
        if self.judge is not None:
            self.judge.clip_fps = self.fmt.fps  # the log-only measures time the student's clips
        self.teacher = TeacherClips(cfg.teacher, self.pool, self.fmt)
        self.encoder = parts.student.text
        self.first_levels, self.levels = self.models.student.config.sampler_levels()
        # Blocks of each on-policy rollout: the student's own, or train.frames streamed.
        frames = cfg.train.frames
        try:
            self.rollout_blocks = (blocks_for_frames(self.models.student.config, frames) if frames is not None
                                   else self.models.student.config.n_blocks)
        except ValueError as e:
            raise ValueError(f"train.frames: {e}") from None

        self.step = 0
        self.warmup_done = cfg.disc.warmup_iters == 0
        self.replay = ReplayBuffer(cfg.disc.replay) if cfg.disc.replay and self.method.uses_discriminator else None
        self.disc_ema = make_ema(self.models.disc) if cfg.disc.ema and self.method.uses_discriminator else None
        if resume:
            state = load_checkpoint(self.ckpt, self._modules(), self._optimizers(), self._adapters_only())
            if self.replay is not None:
                self._load_replay()
            self.step = state["step"]
            self.warmup_done = state["warmup_done"]
            self.teacher.paid, self.teacher.cached = state["teacher_calls_paid"], state["teacher_calls_cached"]
        self.main = dist.is_main()
        self.logger = RunLogger(self.out, tensorboard=cfg.run.tensorboard) if self.main else None
        if self.main:
            self.logger.truncate_after(self.step)
            truncate_jsonl(self.out / "metrics.jsonl", self.step)
            save_config(public_config(cfg), self.out / "config.yaml")

    # ----- state -----

    def _modules(self) -> dict:
        m = self.models
        extra = {"disc_ema": self.disc_ema} if self.disc_ema is not None else {}
        return {"student": m.student, "old": m.old, "disc": m.disc, **extra, **self.method.modules()}

    def _optimizers(self) -> dict:
        return {"student": self.opt_s, "disc": self.opt_d, **self.method.optimizers()}

    def _adapters_only(self) -> frozenset[str]:
        """Modules whose checkpoint holds only their LoRA tensors (the base is the reference student)."""
        return frozenset({"student", "old"}) if self.cfg.student.lora_rank else frozenset()

    def _load_replay(self) -> None:
        """Each rank's share of the saved replay buffer (ranks saved theirs in rank order)."""
        path = self.ckpt / f"{REPLAY}.safetensors"
        if not path.exists():
            raise ValueError(f"{self.ckpt}: no {path.name}, but disc.replay={self.cfg.disc.replay} "
                             "(the run was started without a replay buffer)")
        tensors = load_safetensors(path)
        n, ws = (next(iter(tensors.values())).shape[0] if tensors else 0), dist.world_size()
        if n % ws:
            raise ValueError(f"{path}: {n} replayed groups do not split over {ws} ranks "
                             "(resume with the world size the run was saved with)")
        r, k = dist.rank(), n // ws
        self.replay.load_state_dict({name: t[r * k:(r + 1) * k] for name, t in tensors.items()})

    def _replay_state(self) -> dict[str, torch.Tensor]:
        """The replay buffers of every rank, concatenated in rank order (every rank calls it)."""
        sd = self.replay.state_dict()
        if dist.world_size() == 1 or not sd:
            return sd
        return {k: dist.gather_cat(v.to(self.device, torch.uint8 if v.dtype == torch.bool else v.dtype)).cpu()
                for k, v in sd.items()}

    def save(self) -> None:
        """Write the training checkpoint; every rank calls it (a sharded student is gathered first)."""
        modules = {k: full_state_dict(m) for k, m in self._modules().items()}
        if self.replay is not None:
            modules[REPLAY] = self._replay_state()
        optimizers = {k: full_optimizer_state(o) for k, o in self._optimizers().items()}
        if not self.main:
            return
        save_checkpoint(self.ckpt, modules, optimizers, {
            "step": self.step, "config": config_to_dict(public_config(self.cfg)), "warmup_done": self.warmup_done,
            "reference": str(self.base_dir), "reference_sha256": self.base_sha,
            "teacher_calls_paid": self.teacher.paid, "teacher_calls_cached": self.teacher.cached,
            "rng": {"seed": self.cfg.train.seed, "note": "per-iteration generators are seeded by (seed, step)"},
        }, self._adapters_only())

    def load_base(self):
        """A fresh copy of the student before adaptation (sampler overrides applied, on the run's device)."""
        return load_base(self.cfg, self.base_dir, self.device)

    def eval_model(self):
        """The student as the callbacks sample and evaluate it: the trained module itself, or under
        FSDP2 an unsharded copy gathered at this step (every rank calls this; cached per step)."""
        if not self.parallel.sharded:
            return self.models.student
        if self._plain is None or self._plain[0] != self.step:  # shared by the callbacks of one hook
            self._plain = (self.step, self.parallel.plain_copy(self.models.student, self.models.old))
        return self._plain[1]

    def _call(self, hook: str, *args) -> None:
        try:
            for cb in self.callbacks:
                getattr(cb, hook)(self, *args)
        finally:
            self._plain = None  # a gathered copy lives only while the hook's callbacks run

    # ----- one iteration's pieces -----

    def collect(self, it: int) -> tuple[Batch, dict[str, float]]:
        """Teacher clips and old-policy rollouts for iteration ``it`` (this rank's shard)."""
        prompts, clip_ids, seeds = Plan.for_config(self.cfg, it, self.pool).local()
        times = {}
        t0 = time.time()
        over = None
        try:
            teacher = self.teacher.get(prompts, clip_ids).to(self.device)
        except TeacherBudgetExceeded as e:
            over = e
        # Every rank stops together (saving gathers a sharded student from all of them).
        if dist.any_true(over is not None):
            self.save()
            raise TeacherBudgetExceeded(
                f"{over or 'another rank reached the teacher budget'}. Stopped before iteration {it}; the run up to "
                f"there is saved in {self.ckpt} (continue with --resume teacher.budget=N)") from None
        times["t_teacher"] = time.time() - t0
        text = self.encoder.encode(prompts).to(self.device)
        batch = Batch(step=it, prompts=prompts, text=text, teacher=teacher)
        if self.method.uses_rollouts:
            t0 = time.time()
            G = self.cfg.train.rollouts
            batch.branch_block = (Plan.branch_block(self.cfg.train.seed, it, self.models.old.config.n_blocks)
                                  if self.method.prefix_groups else 0)
            batch.rollout_latents, batch.rollouts, batch.sampler = self.rollouts(
                prompts, seeds, branch_block=batch.branch_block, record=self.method.records_sampler)
            batch.rollout_text = per_rollout(text, G)
            batch.group_ids = group_ids(len(prompts), G, self.device)
            times["t_rollout"] = time.time() - t0
        return batch, times

    @torch.no_grad()
    def rollouts(self, prompts: list[str], seeds: list[list[int]], *, branch_block: int = 0,
                 record: bool = False) -> tuple[torch.Tensor, torch.Tensor, SamplerRecord | None]:
        """G rollouts per prompt with the old policy: their latents (P * G, T, C, H', W') in the
        student's space, exactly as generated, their decodes (P * G, T, 3, H, W) in [-1, 1], and
        with ``record`` every sampler state they visited (else None).

        ``branch_block`` b > 0 makes prefix groups: each prompt's blocks < b are generated once
        (a trunk, from its first rollout seed's noise) and all G rollouts continue that trunk, so
        they share it bit for bit and differ from block b on."""
        G = len(seeds[0]) if seeds else 0
        flat_p = per_rollout(prompts, G)
        flat_s = [s for row in seeds for s in row]
        old = self.models.old
        n_levels = len(self.first_levels)
        sampler = dict(first_levels=self.first_levels, amp=self.cfg.train.amp)
        prefix = None
        if branch_block:
            trunk_noise = rollout_noise(prompts, [row[0] for row in seeds], old, n_levels)
            trunk = rollout(old, self.encoder.encode(prompts), trunk_noise, self.levels, n_blocks=branch_block,
                            **sampler, **guidance_kwargs(old, len(prompts)))
            prefix = per_rollout(trunk, G)
        K = self.rollout_blocks
        noise = rollout_noise(flat_p, flat_s, old, n_levels, K)
        out = rollout(old, self.encoder.encode(flat_p), noise, self.levels, prefix=prefix, record=record, n_blocks=K,
                      **sampler, **guidance_kwargs(old, len(flat_p)))
        x0, rec = out if record else (out, None)
        return x0.detach(), self.models.codec.decode(x0).detach(), rec

    def discriminator(self, batch: Batch, it: int) -> dict[str, float]:
        cfg, m = self.cfg, self.models
        teacher, rollouts = rerender_pair(m.ref, m.codec, batch.teacher, batch.rollouts, batch.text,
                                          cfg.disc.rerender_t, generator(cfg.train.seed, it, RERENDER), cfg.train.amp)
        # Rollouts longer than the teacher's clips: D compares a random teacher-length window of each.
        L = teacher.shape[1]
        if rollouts.shape[1] <= L:
            windows = rollouts
        elif cfg.disc.window == "first":
            windows = rollouts[:, :L]
        else:
            windows = crop_windows(rollouts, L, generator(cfg.train.seed, it, DISC_WINDOW))
        stats = train_discriminator(m.disc, self.opt_d, cfg.disc, teacher, windows, batch.prompts, batch.text,
                                    generator(cfg.train.seed, it, DISC), replay=self.replay)
        if self.disc_ema is not None:
            ema_update(self.disc_ema, m.disc, cfg.disc.ema)
        scorer = m.disc if self.disc_ema is None else self.disc_ema
        batch.d_teacher, batch.d_student, scored = score_pairs(scorer, cfg.disc, teacher, rollouts, batch.text)
        stats.update({k: dist.mean_scalar(v) for k, v in scored.items()})
        return stats

    def student_steps(self, batch: Batch, prepared, it: int) -> dict[str, float]:
        t = self.cfg.train
        student = self.models.student
        params = [p for p in student.parameters() if p.requires_grad]
        sums: dict[str, float] = {}
        for s in range(t.student_steps):
            n_step = it * t.student_steps + s + 1  # optimizer steps taken once this one is
            with self.parallel.routed(student), autocast(student, t.amp):
                out = self.method.student_loss(batch, prepared, generator(t.seed, it, STUDENT_STEP, s))
            loss = out["loss"]
            self.opt_s.zero_grad(set_to_none=True)
            loss.backward()  # the engine (DDP, FSDP2) averages the gradients over ranks
            gn = self.parallel.clip_grad_norm(params, t.grad_clip)
            # The norm is global (a NaN on any rank reaches all), so every rank stops together.
            if not (torch.isfinite(loss) and math.isfinite(gn)):
                raise FloatingPointError(f"iteration {it}: student loss is {float(loss)}, gradient norm {gn}; "
                                         "lower train.lr")
            self.opt_s.step()
            ema_update(self.models.old, student, t.old_decay_at(n_step))
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            sums["grad_norm"] = sums.get("grad_norm", 0.0) + gn
        n = max(1, t.student_steps)
        return {k: dist.mean_scalar(v / n) for k, v in sums.items()}

    def iteration(self, it: int) -> dict[str, float]:
        """One iteration (module docstring, steps 1-5, and the callbacks' entries); returns its
        log row (not yet written)."""
        t = self.cfg.train
        torch.manual_seed(seed_of(t.seed, it, GLOBAL))
        t_start = time.time()
        batch, times = self.collect(it)
        row: dict[str, float] = {}
        if self.method.uses_discriminator:
            t0 = time.time()
            row.update(self.discriminator(batch, it))
            times["t_disc"] = time.time() - t0
        t0 = time.time()
        critic = self.method.critic_steps(batch, generator(t.seed, it, CRITIC))
        if critic:
            row.update(critic)
            times["t_critic"] = time.time() - t0
        prepared = self.method.prepare(batch)
        row.update(prepared.stats)
        t0 = time.time()
        row.update(self.student_steps(batch, prepared, it))
        times["t_student"] = time.time() - t0
        self._call("on_iteration", batch, prepared, row)
        row.update(times)
        row.update({"teacher_calls_paid": self.teacher.paid, "teacher_calls_cached": self.teacher.cached,
                    "teacher_clips_used": self.teacher.used,
                    "teacher_clips_total": self.teacher.paid_total, "seconds": time.time() - t_start})
        row.pop("loss", None)
        return row

    def disc_warmup(self) -> None:
        """D-only iterations on teacher clips vs the base's rollouts, before any student update."""
        cfg = self.cfg
        for j in range(cfg.disc.warmup_iters):
            # Iteration ids 2^31 + j: their own random streams, disjoint from training's.
            torch.manual_seed(seed_of(cfg.train.seed, 2**31 + j, GLOBAL))
            batch, _ = self.collect(2**31 + j)
            stats = self.discriminator(batch, 2**31 + j)
            if self.main:
                self.logger.log(-(j + 1), "disc_warmup", **stats)
        self.warmup_done = True
        self.save()

    # ----- the loop -----

    def run(self) -> Path:
        cfg, t = self.cfg, self.cfg.train
        if self.main:
            print(f"train: student computes in {describe_precision(t.amp, self.models.student)}")
        if cfg.teacher.prefetch:
            if self.main:  # the other ranks then read the paid clips from the shared cache
                print(f"train: {self.teacher.prefetch_budget()}")
            dist.barrier()
        self._call("on_start")  # the base eval and the "before" strip first, as the run's reference
        if not self.warmup_done:
            self.disc_warmup()
        from tqdm import tqdm

        bar = tqdm(total=t.steps, initial=self.step, disable=not (self.progress and self.main), dynamic_ncols=True,
                   desc=t.method)
        while self.step < t.steps:
            row = self.iteration(self.step)
            self.step += 1
            if cfg.eval.every and self.step % cfg.eval.every == 0 and self.step < t.steps:
                self._call("on_eval_point", row)
            if self.main:
                self._log(row)
                bar.update(1)
                keys = (*self.method.progress_keys, "seconds")
                bar.set_postfix({k: f"{row[k]:.3g}" for k in keys
                                 if row.get(k) is not None and math.isfinite(row[k])})
            if self.step % cfg.run.save_every == 0 or self.step == t.steps:
                self.save()
        bar.close()
        return self.finish()

    def _log(self, row: dict) -> None:
        clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in row.items()}
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": self.step, **clean}) + "\n")
        self.logger.log(self.step, "train", **{k: v for k, v in clean.items() if v is not None})

    def finish(self) -> Path:
        """Save the adapted student (LoRA merged; the adapters alone too) and D, then the callbacks
        (final eval, strip)."""
        final = self.eval_model()
        if self.main:
            from afd.student.lora import merged_copy, save_adapter

            extra = {"adapted_with": config_to_dict(public_config(self.cfg)), "step": self.step,
                     "base": str(self.base_dir), "base_sha256": self.base_sha}
            if self.cfg.student.lora_rank:
                save_adapter(final, self.out / "adapter", extra)
                final = merged_copy(final)
            final.save_pretrained(self.out / "student", extra=extra)
            self.models.disc.save_pretrained(self.out / "disc")
            print(f"train: {self.cfg.train.method} finished {self.step} iterations -> {self.out}")
        self._call("on_finish", final)
        if self.main:
            self.logger.close()
        return self.out


def train(cfg: AdaptConfig, resume: bool = False, progress: bool = True) -> Path:
    """Run (or resume) an adaptation run; returns ``cfg.run.dir``."""
    out = Trainer(cfg, resume, progress).run()
    dist.shutdown()
    return out

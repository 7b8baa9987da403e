"""Pretraining the base student: flow matching with clean context on the loose world.

One loop, nanoGPT style: every step draws a fresh batch from the world (prompts of the
pretraining pool, loose physics), noises each block at its own t and regresses the clean-context
view (``afd.losses.flow_matching_loss``) under bf16 autocast, AdamW, linear warm-up + cosine
decay, gradient clipping, and an EMA copy that is what gets evaluated and shipped.

Exact resume: the batch, the noise and the timesteps of step i are functions of (seed, i) only,
so a checkpoint needs weights, EMA, optimizer state and the step - no data-loader or RNG state.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch

from afd.config import check_choices, config_from_dict, config_to_dict, save_config
from afd.device import autocast, describe_precision
from afd.eval.student import evaluate_student
from afd.losses import flow_matching_loss
from afd.student.backbones.transformer import CausalVideoTransformer
from afd.student.backbones.transformer_config import StudentConfig
from afd.student.codec import make_codec
from afd.student.shipped import resolve_checkpoint
from afd.text.encoder import get_text_encoder
from afd.train.checkpoint import load_checkpoint, read_checkpoint_state, save_checkpoint
from afd.train.ema import ema_update, make_ema, warmup_decay
from afd.train.logger import RunLogger
from afd.train.resume import resumable_config as _resumable_config
from afd.video.core import stack
from afd.world.sample import sample_world
from afd.world.splits import load_split


@dataclass
class OptimConfig:
    lr: float = 8e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.01
    warmup_steps: int = 200
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at the last step
    grad_clip: float = 1.0


@dataclass
class PretrainEvalConfig:
    every: int = 500  # steps between evaluations (0: only at the end)
    prompts_per_split: int = 12  # physics-eval and general-eval prompts, spread over each split
    per_prompt: int = 1
    strip_clips: int = 6


@dataclass
class PretrainConfig:
    # Removed knobs and the value they had in every shipped recipe (afd.config: a file naming
    # one loads only with that value). trainable: "refine" trained the refinement head alone.
    REMOVED_FIELDS = {"trainable": "all"}

    out: str = "runs/pretrain"
    export: str | None = None  # where the final EMA student is saved (default: <out>/final)
    # Start from these weights instead of a random init (a directory or a shipped name). The
    # shapes must match; block_frames and the sampler defaults may differ, so a frame-wise student
    # can start from the chunk-wise base (the attention rule has no weights of its own).
    init: str | None = None
    seed: int = 0
    steps: int = 3000
    batch_size: int = 16
    split: str = "pretrain"
    world_mode: str = "loose"
    t_shift: float = 1.0  # shift applied to uniform training timesteps
    loss_weighting: Literal["x0", "velocity"] = "x0"
    ema_decay: float = 0.999
    # Fraction of clips whose prompt is replaced by ``model.null_prompt`` (the clip stays), so the
    # student also learns the unconditional model its sampler's classifier-free guidance needs.
    text_dropout: float = 0.0
    amp: bool | Literal["auto"] = "auto"  # bf16 autocast (afd.device.resolve_amp)
    log_every: int = 10
    save_every: int = 250
    model: StudentConfig = field(default_factory=StudentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: PretrainEvalConfig = field(default_factory=PretrainEvalConfig)

    def __post_init__(self):
        check_choices(self)
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}")
        if not 0 <= self.text_dropout < 1:
            raise ValueError(f"text_dropout must be in [0, 1), got {self.text_dropout}")


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine down to ``lr * min_lr_ratio``."""
    o = cfg.optim
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    progress = (step - o.warmup_steps) / max(1, cfg.steps - o.warmup_steps)
    return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def batch_at(step: int, cfg: PretrainConfig, pool: list[str]) -> tuple[list[str], torch.Tensor, torch.Generator]:
    """The prompts, clean clips (B, T, 3, H, W) pixels in [-1, 1] and noise generator of ``step``
    (pure in (seed, step))."""
    rng = np.random.default_rng([cfg.seed, step])
    prompts = [pool[i] for i in rng.integers(0, len(pool), cfg.batch_size)]
    seeds = [int(s) for s in rng.integers(0, 2**31 - 1, cfg.batch_size)]
    clips = sample_world(prompts, seeds, cfg.world_mode, cfg.model.video_format())
    gen = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
    return prompts, stack([c.video for c in clips]), gen


def conditioning_prompts(step: int, cfg: PretrainConfig, prompts: list[str]) -> list[str]:
    """The prompts the student is shown at ``step``: ``prompts`` with a ``text_dropout`` fraction
    replaced by ``model.null_prompt`` (pure in (seed, step); its own stream, so the clips of a
    step do not depend on the dropout)."""
    if not cfg.text_dropout:
        return prompts
    drop = np.random.default_rng([cfg.seed, step, 1]).random(len(prompts)) < cfg.text_dropout
    return [cfg.model.null_prompt if d else p for p, d in zip(prompts, drop)]


class StepResult(NamedTuple):
    loss: float
    lr: float
    grad_norm: float


@dataclass
class Pretrainer:
    """The student being pretrained, its EMA copy and its optimizer, and the one step that
    updates them. ``pretrain`` runs it and ``afd bench train-step`` times it: one function, so the
    benchmark cannot drift from what training does."""

    cfg: PretrainConfig
    model: CausalVideoTransformer
    ema: CausalVideoTransformer
    opt: torch.optim.Optimizer
    params: list[torch.nn.Parameter]  # what the optimizer updates

    @classmethod
    def build(cls, cfg: PretrainConfig) -> Pretrainer:
        """A freshly initialised student from ``cfg.seed`` (in training mode), its EMA and AdamW."""
        torch.manual_seed(cfg.seed)
        model = CausalVideoTransformer(cfg.model).train()
        ema = make_ema(model)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=cfg.optim.betas,
                                weight_decay=cfg.optim.weight_decay)
        return cls(cfg, model, ema, opt, params)

    def step(self, step: int, prompts: list[str], x0: torch.Tensor, gen: torch.Generator, encoder) -> StepResult:
        """Optimizer step number ``step`` (0-based) on clean clips ``x0`` (B, T, C, H, W, codec
        space) of ``prompts``: the lr of the schedule, text dropout, the flow-matching loss under
        bf16 autocast, gradient clipping, AdamW and the EMA update. ``gen`` draws the noise and
        timesteps; ``encoder`` is the text encoder. Raises FloatingPointError on a non-finite loss."""
        cfg = self.cfg
        lr = lr_at(step, cfg)
        for g in self.opt.param_groups:
            g["lr"] = lr
        with autocast(self.model, cfg.amp):
            loss = flow_matching_loss(self.model, x0, encoder.encode(conditioning_prompts(step, cfg, prompts)), gen,
                                      shift=cfg.t_shift, weighting=cfg.loss_weighting)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"step {step}: loss is {loss.item()}; lower optim.lr or check the data")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.optim.grad_clip)
        self.opt.step()
        ema_update(self.ema, self.model, warmup_decay(cfg.ema_decay, step))
        return StepResult(loss.item(), lr, float(grad_norm))


CHECKPOINT_DIR = "checkpoint"
FINAL_DIR = "final"


# What may change on resume: the run length (to extend a finished run), where the run and its
# export are written (to extend a copy of a run without touching the original or the shipped
# checkpoint), and the student's default sampler, which only affects evaluation and the exported
# config. None of them changes a training step.
RESUME_MUTABLE = ("steps", "out", "export")
RESUME_MUTABLE_MODEL = ("steps", "first_steps", "shift", "renoise", "guidance", "first_guidance", "project_blocks")


def resumable_config(saved: PretrainConfig, cfg: PretrainConfig, where: Path) -> PretrainConfig:
    """The config to resume with: ``saved`` updated with the fields of ``cfg`` that may change.

    Raises ValueError naming the first differing field that may not change."""
    return _resumable_config(saved, cfg, where, {*RESUME_MUTABLE, *(f"model.{k}" for k in RESUME_MUTABLE_MODEL)})


INIT_MAY_DIFFER = ("block_frames", "steps", "first_steps", "shift", "renoise", "guidance", "first_guidance",
                   "null_prompt", "project_blocks")
# Switches that add zero-initialised modules: a checkpoint without them may initialise a model
# with them (the new weights keep their zero init), not the other way round.
INIT_MAY_ADD = ("refine",)


def init_from(model: CausalVideoTransformer, ema: CausalVideoTransformer, spec: str) -> None:
    """Copy the weights of checkpoint ``spec`` into ``model`` and ``ema``.

    Raises ValueError naming the first model field that differs, other than INIT_MAY_DIFFER and
    an INIT_MAY_ADD switch turned on here but off in the checkpoint."""
    src_dir = resolve_checkpoint(spec)
    src = CausalVideoTransformer.from_pretrained(src_dir)
    a, b = vars(src.config), vars(model.config)
    for key in a:
        added = key in INIT_MAY_ADD and not a[key] and b[key]
        if key not in INIT_MAY_DIFFER and a[key] != b[key] and not added:
            raise ValueError(f"init={spec}: model.{key} is {a[key]!r} in {src_dir} but {b[key]!r} in this config; "
                             f"only {', '.join(INIT_MAY_DIFFER)} may differ (and {', '.join(INIT_MAY_ADD)} "
                             "may be switched on)")
    state = src.state_dict()
    # Non-strict only for the zero-initialised modules an INIT_MAY_ADD switch adds (the config
    # check above allows nothing else); a key of the checkpoint the model lacks is still an error.
    for target in (model, ema):
        unexpected = target.load_state_dict(state, strict=False).unexpected_keys
        if unexpected:
            raise ValueError(f"init={spec}: {src_dir} has weights this model lacks: {sorted(unexpected)[:5]}")


def pretrain(cfg: PretrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Run (or resume) pretraining; returns the directory of the final EMA student."""
    out = Path(cfg.out)
    ckpt_dir = out / CHECKPOINT_DIR
    if ckpt_dir.exists() and not resume:
        raise FileExistsError(f"{ckpt_dir} exists: pass --resume to continue that run, or choose another out=")
    if resume:
        if not ckpt_dir.exists():
            raise FileNotFoundError(f"{ckpt_dir}: nothing to resume")
        saved = config_from_dict(PretrainConfig, read_checkpoint_state(ckpt_dir)["config"])
        cfg = resumable_config(saved, cfg, ckpt_dir)

    trainer = Pretrainer.build(cfg)
    model, ema, opt = trainer.model, trainer.ema, trainer.opt
    step = 0
    logger = RunLogger(out)
    if cfg.init and not resume:
        init_from(model, ema, cfg.init)
    if resume:
        state = load_checkpoint(ckpt_dir, {"model": model, "ema": ema}, {"model": opt})
        step = state["step"]
        logger.truncate_after(step)
    save_config(cfg, out / "config.yaml")

    pool = load_split(cfg.split)
    encoder = get_text_encoder()
    codec = make_codec(cfg.model)
    encoder.encode(pool + [cfg.model.null_prompt])  # warm the cache once: later steps only look prompts up
    print(f"pretrain: {model.num_params() / 1e6:.2f}M params, {cfg.steps} steps x batch {cfg.batch_size}, "
          f"from step {step}, out {out}; {describe_precision(cfg.amp, model)}")

    def checkpoint(at: int) -> None:
        save_checkpoint(ckpt_dir, {"model": model, "ema": ema}, {"model": opt},
                        {"step": at, "config": config_to_dict(cfg)})

    from tqdm import tqdm

    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, dynamic_ncols=True)
    t_last, losses = time.time(), []
    while step < cfg.steps:
        prompts, clips, gen = batch_at(step, cfg, pool)
        result = trainer.step(step, prompts, codec.encode(clips), gen, encoder)
        step += 1
        losses.append(result.loss)
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            dt = (time.time() - t_last) / len(losses)
            rec = {"loss": float(np.mean(losses)), "lr": result.lr, "grad_norm": result.grad_norm, "s_per_step": dt}
            logger.log(step, "train", **rec)
            bar.set_postfix(loss=f"{rec['loss']:.4f}", s_step=f"{dt:.2f}")
            t_last, losses = time.time(), []
        if (cfg.eval.every and step % cfg.eval.every == 0) or step == cfg.steps:
            t0 = time.time()
            scores = evaluate_student(ema, cfg.eval.prompts_per_split, cfg.eval.per_prompt, seed=cfg.seed,
                                      strip_path=out / "samples" / f"step{step:06d}.png",
                                      strip_clips=cfg.eval.strip_clips)
            logger.log(step, "eval", **scores, seconds=time.time() - t0)
            bar.write(f"step {step}: " + ", ".join(f"{k} {v:.1f}" for k, v in scores.items()))
            t_last = time.time()
        if step % cfg.save_every == 0 or step == cfg.steps:
            checkpoint(step)
    bar.close()
    logger.close()
    final = ema.save_pretrained(Path(cfg.export) if cfg.export else out / FINAL_DIR,
                                extra={"trained_with": config_to_dict(cfg), "step": step})
    print(f"pretrain: done; EMA student saved to {final}")
    return final

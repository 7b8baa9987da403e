"""Training the learned frame codec (``afd codec train``) on frames of the loose and real worlds.

One loop: each step draws fresh clips from the world (prompts of the ``pretrain`` split, half in
each physics mode, seeds from the run's seed and the step, so a resumed run sees the same data),
encodes every frame, adds Gaussian noise of ``latent_noise`` to the unit-RMS code, decodes, and
takes an object-weighted squared error against the frame. The noise teaches the decoder to draw a
clean frame from a latent that is near, not on, a frame's code: what a student's sample is. At the
end the per-channel normalisation is measured and the codec is exported (docs/latent-student.md).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from afd.config import config_from_dict, config_to_dict, save_config
from afd.device import autocast, check_device_spec, describe_precision, resolve_device
from afd.student.codecs.learned import FrameAutoencoder, FrameCodecConfig
from afd.train.checkpoint import load_checkpoint, read_checkpoint_state, save_checkpoint
from afd.train.logger import RunLogger
from afd.video.core import STUDENT, VideoFormat
from afd.world.sample import sample_world
from afd.world.splits import load_split


@dataclass
class CodecTrainConfig:
    out: str = "runs/codec-world"
    export: str | None = None  # where the final codec is saved (default: <out>/final)
    seed: int = 0
    steps: int = 4000
    batch_clips: int = 32  # clips per step
    frames_per_clip: int = 4  # frames drawn from each (at random): more clips per unit of compute
    split: str = "pretrain"
    lr: float = 2e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    latent_noise: float = 0.1  # std of the noise added to the unit-RMS code before decoding
    object_weight: float = 10.0  # weight of pixels that differ from the frame's background
    amp: bool | Literal["auto"] = "auto"  # bf16 autocast for the training steps (afd.device.resolve_amp)
    device: str = "auto"  # afd.device.resolve_device: auto, cpu, cuda, cuda:N
    norm_clips: int = 256  # clips whose frames set the latent normalisation at the end
    log_every: int = 20
    save_every: int = 250
    model: FrameCodecConfig = field(default_factory=FrameCodecConfig)

    def __post_init__(self):
        if not 1 <= self.frames_per_clip <= STUDENT.frames:
            raise ValueError(f"frames_per_clip must be in [1, {STUDENT.frames}], got {self.frames_per_clip}")
        if self.steps < 1 or self.batch_clips < 2:
            raise ValueError(f"steps must be >= 1 and batch_clips >= 2 (half loose, half real), got "
                             f"{self.steps}, {self.batch_clips}")
        check_device_spec(self.device)
        if self.latent_noise < 0 or self.object_weight < 1:
            raise ValueError(f"latent_noise must be >= 0 and object_weight >= 1, got {self.latent_noise}, "
                             f"{self.object_weight}")

    def video_format(self) -> VideoFormat:
        return VideoFormat(frames=STUDENT.frames, height=self.model.size, width=self.model.size, fps=STUDENT.fps)


def lr_at(step: int, cfg: CodecTrainConfig) -> float:
    """Linear warm-up, then cosine down to ``lr * min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def world_frames(cfg: CodecTrainConfig, pool: list[str], n_clips: int, key: list[int],
                 per_clip: int | None = None) -> torch.Tensor:
    """Frames (n_clips * per_clip, 3, S, S) in [-1, 1]: ``per_clip`` frames (None: all) of each
    of ``n_clips`` world clips, half loose and half real, drawn by the generator seeded with
    ``key`` (pure in it)."""
    rng = np.random.default_rng(key)
    prompts = [pool[i] for i in rng.integers(0, len(pool), n_clips)]
    seeds = [int(s) for s in rng.integers(0, 2**31 - 1, n_clips)]
    half = n_clips // 2
    clips = (sample_world(prompts[:half], seeds[:half], "loose", cfg.video_format())
             + sample_world(prompts[half:], seeds[half:], "real", cfg.video_format()))
    frames = torch.stack([c.video.frames for c in clips]).float()
    if per_clip is not None:
        pick = torch.from_numpy(np.argsort(rng.random((n_clips, frames.shape[1])), 1)[:, :per_clip])
        frames = frames[torch.arange(n_clips)[:, None], pick]
    return frames.flatten(0, 1)


def reconstruction_loss(model: FrameAutoencoder, frames: torch.Tensor, noise: torch.Tensor,
                        object_weight: float) -> torch.Tensor:
    """Object-weighted squared error of ``decode(encode(frames) + noise)`` (frames (N, 3, S, S))."""
    raw = model.encode_raw(frames)
    recon = model.decode_raw(raw + noise.to(raw.dtype)).float()
    border = torch.cat([frames[..., 0, :], frames[..., -1, :], frames[..., :, 0], frames[..., :, -1]], -1)
    background = border.median(-1).values[..., None, None]
    weight = 1 + (object_weight - 1) * ((frames - background).abs().amax(1, keepdim=True) > 0.05).float()
    return (weight * (recon - frames).pow(2)).mean()


def train_codec(cfg: CodecTrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Run (or resume) codec training; returns the exported codec's directory."""
    from tqdm import tqdm

    out = Path(cfg.out)
    ckpt_dir = out / "checkpoint"
    if ckpt_dir.exists() and not resume:
        raise FileExistsError(f"{ckpt_dir} exists: pass --resume to continue that run, or choose another out=")
    if resume:
        if not ckpt_dir.exists():
            raise FileNotFoundError(f"{ckpt_dir}: nothing to resume")
        saved = config_from_dict(CodecTrainConfig, read_checkpoint_state(ckpt_dir)["config"])
        for key in ("out", "export", "steps"):  # what may change: where it is written and how long it runs
            setattr(saved, key, getattr(cfg, key))
        cfg = saved
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    model = FrameAutoencoder(cfg.model).train().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step = 0
    logger = RunLogger(out)
    if resume:
        step = load_checkpoint(ckpt_dir, {"model": model}, {"model": opt})["step"]
        logger.truncate_after(step)
    save_config(cfg, out / "config.yaml")
    pool = load_split(cfg.split)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"codec train: {n_params / 1e3:.0f}k params, {cfg.steps} steps x {cfg.batch_clips} clips, "
          f"from step {step}, out {out}; "
          f"{describe_precision(cfg.amp, device)}")
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, dynamic_ncols=True)
    losses, t_last = [], time.time()
    while step < cfg.steps:
        frames = world_frames(cfg, pool, cfg.batch_clips, [cfg.seed, step], cfg.frames_per_clip)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        noise = cfg.latent_noise * torch.randn((frames.shape[0], *cfg.model.latent_shape), generator=gen)
        frames, noise = frames.to(device), noise.to(device)
        lr = lr_at(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        with autocast(device, cfg.amp):
            loss = reconstruction_loss(model, frames, noise, cfg.object_weight)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"step {step}: loss is {loss.item()}; lower lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        losses.append(loss.item())
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            dt = (time.time() - t_last) / len(losses)
            logger.log(step, "train", loss=float(np.mean(losses)), lr=lr, s_per_step=dt)
            bar.set_postfix(loss=f"{np.mean(losses):.5f}", s_step=f"{dt:.2f}")
            losses, t_last = [], time.time()
        if step % cfg.save_every == 0 or step == cfg.steps:
            save_checkpoint(ckpt_dir, {"model": model}, {"model": opt}, {"step": step, "config": config_to_dict(cfg)})
    bar.close()
    logger.close()
    model.eval()
    with torch.no_grad():
        raw = torch.cat([model.encode_raw(world_frames(cfg, pool, 32, [cfg.seed, 2**32, k]).to(device))
                         for k in range(max(1, cfg.norm_clips // 32))])
    model.set_normalisation(raw)
    final = model.cpu().save_pretrained(Path(cfg.export) if cfg.export else out / "final",
                                  extra={"trained_with": config_to_dict(cfg), "step": step})
    print(f"codec train: done; codec saved to {final}")
    return final

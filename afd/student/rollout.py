"""The one AR rollout: prompts -> clips, block by block, a few denoising steps each.

Used for inference (``afd sample``), on-policy data collection, evaluation, and - with
``grad_steps`` - the gradient-through-rollout baselines. For each block k (docs/method.md section 3):
start from noise at t = 1; at each level predict x0, then re-noise to the next level with fresh
noise; the last x0 estimate is the block. Then the clean block is run once at t = 0 to write its
keys/values into the cache, which the next block attends to. With ``use_cache=False`` every
denoising call instead recomputes the clean prefix in the same forward pass (same attention
rule, quadratic cost) - the reference the cache is tested and benchmarked against.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from afd.device import AmpSetting, autocast, device_of
from afd.student.base import StudentModel
from afd.student.cache import KVCache
from afd.student.codec import make_codec
from afd.text.encoder import TextEncoding


def clip_seed(prompt: str, seed: int) -> int:
    """A 63-bit seed for one clip, so clip (prompt, seed) is the same whatever the batch."""
    digest = hashlib.sha256(f"afd-student\x00{prompt}\x00{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def rollout_noise(prompts: list[str], seeds: list[int], model: StudentModel, steps: int) -> torch.Tensor:
    """All the noise a rollout draws: (B, K blocks, steps, F, C, H, W), float32 N(0, 1).

    Index [:, k, 0] starts block k; [:, k, i] re-noises it before step i.
    """
    if len(prompts) != len(seeds):
        raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds")
    cfg = model.config
    shape = (cfg.n_blocks, steps, cfg.block_frames, cfg.channels, cfg.height, cfg.width)
    out = torch.empty((len(prompts), *shape))
    for i, (p, s) in enumerate(zip(prompts, seeds)):
        out[i] = torch.randn(shape, generator=torch.Generator().manual_seed(clip_seed(p, s)))
    return out


@dataclass
class SamplerRecord:
    """Every state a rollout's sampler queried the model at (what the ``sampler-states`` and
    ``policy-gradient`` updates train on, afd/methods/sampler_updates.py).

    states: (B, K, S, F, C, H, W) float32, the model-space input ``x`` of denoising call i of
    block k (zeros where there was no call); levels: (K, S) float32, that call's noise level,
    nan where block k made no call i (a prefix block, or a shorter level list than block 0's).
    With ``renoise="fresh"``, state i+1 of a block is ``(1 - t_{i+1}) x0_i + t_{i+1} eps``: a
    Gaussian transition around the model's x0 estimate at state i."""

    states: torch.Tensor
    levels: torch.Tensor


def rollout(
    model: StudentModel,
    text: TextEncoding,
    noise: torch.Tensor,
    levels: list[float] | None = None,
    *,
    use_cache: bool = True,
    grad_steps: list[int] | None = None,
    amp: AmpSetting = "auto",
    n_blocks: int | None = None,
    renoise: str | None = None,
    prefix: torch.Tensor | None = None,
    first_levels: list[float] | None = None,
    guidance: float = 1.0,
    null_text: TextEncoding | None = None,
    first_guidance: float | None = None,
    record: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, SamplerRecord]:
    """Generate clips in the model's space.

    text: B prompt encodings; noise: (B, K, S, F, C, H, W) from ``rollout_noise`` with S >= the
    number of levels of the longest block; levels: decreasing noise levels (default: the model config's step list).
    grad_steps: one step index per block whose forward pass keeps its graph; that step's x0
    estimate becomes the block (Self-Forcing's early exit), earlier steps and every cache
    write run without gradient. None: no gradient anywhere.
    n_blocks: generate only the first n_blocks blocks (1 <= n_blocks <= the config's n_blocks;
    noise then needs at least n_blocks blocks, later ones are ignored), e.g. to time rollouts of
    growing length with one model. None: all of the config's blocks (noise must have exactly that many).
    renoise: "fresh" | "ddim" between steps (default: the model config's ``renoise``); with
    "ddim" only noise[:, k, 0] is used.
    prefix: (B, P * F, C, H, W) clean frames of the first P < K blocks to continue from (e.g. a
    real clip's opening, for teacher-forced evaluation); they are written to the cache as they
    are and only blocks P .. K-1 are generated (grad_steps then still lists one entry per block;
    the prefix blocks' entries are ignored).
    first_levels: the levels of block 0, which has no context (default: the config's
    ``sampler_levels`` when ``levels`` is None, else ``levels``); noise then needs S >= the longer
    list, and block 0's grad_steps entry indexes this list.
    guidance / first_guidance: classifier-free guidance scales of blocks >= 1 and of block 0
    (None: ``guidance``); each step's prediction is ``null + scale * (prompt - null)``, with the
    null prediction from ``null_text`` (B encodings, required unless both scales are 1) in the
    same doubled batch. ``guidance_kwargs`` gives a model's defaults.
    record: also return the ``SamplerRecord`` of every state the model was queried at.
    Returns x0 of shape (B, K * F, C, H, W), float32 (not clamped unless the config's
    ``project_blocks``; decode with the codec); with a prefix its frames come first, unchanged.
    With ``record``, returns ``(x0, SamplerRecord)``.
    """
    cfg = model.config
    dev = device_of(model)
    # Noise is drawn on CPU generators (the same clip on every device) and moved here.
    noise, text = noise.to(dev), text.to(dev)
    null_text = null_text.to(dev) if null_text is not None else None
    if levels is None:
        default_first, levels = cfg.sampler_levels()
        first_levels = first_levels if first_levels is not None else default_first
    first_levels = first_levels if first_levels is not None else levels
    n_levels = max(len(levels), len(first_levels))
    renoise = renoise or cfg.renoise
    if renoise not in ("fresh", "ddim"):
        raise ValueError(f"renoise must be 'fresh' or 'ddim', got {renoise!r}")
    B, K_noise, S = noise.shape[:3]
    if n_blocks is None:
        K = cfg.n_blocks
        if K_noise != K or S < n_levels:
            raise ValueError(f"noise has shape {tuple(noise.shape)}; expected (B, {K}, >= {n_levels}, ...)")
    else:
        K = n_blocks
        if not 1 <= K <= cfg.n_blocks:
            raise ValueError(f"n_blocks must be in [1, {cfg.n_blocks}] (the model's blocks), got {n_blocks}")
        if K_noise < K or S < n_levels:
            raise ValueError(f"noise has shape {tuple(noise.shape)}; expected (B, >= {K}, >= {n_levels}, ...)")
    if grad_steps is not None and (len(grad_steps) != K or any(
            not 0 <= g < len(first_levels if k == 0 else levels) for k, g in enumerate(grad_steps))):
        raise ValueError(f"grad_steps must give one step index per block in [0, number of that block's levels), "
                         f"got {grad_steps} for {len(first_levels)} levels in block 0 and {len(levels)} after")
    first_guidance = guidance if first_guidance is None else first_guidance
    guided = guidance != 1.0 or first_guidance != 1.0
    if guided:
        if null_text is None or len(null_text) != B:
            raise ValueError(f"guidance {guidance} (block 0: {first_guidance}) needs null_text with {B} encodings "
                             f"(got {None if null_text is None else len(null_text)})")
        text = text.cat(null_text)

    def both(z: torch.Tensor) -> torch.Tensor:
        return torch.cat([z, z]) if guided else z

    def guide(raw: torch.Tensor, scale: float) -> torch.Tensor:
        if not guided:
            return raw
        cond, null = raw.chunk(2)
        return null + scale * (cond - null)

    n_pre = 0
    if prefix is not None:
        F_ = cfg.block_frames
        if prefix.dim() != 5 or prefix.shape[0] != B or prefix.shape[2:] != noise.shape[4:] or prefix.shape[1] % F_:
            raise ValueError(f"prefix must be (B={B}, a multiple of {F_} frames, "
                             f"{', '.join(map(str, noise.shape[4:]))}), "
                             f"got {tuple(prefix.shape)}")
        n_pre = prefix.shape[1] // F_
        if not 1 <= n_pre < K:
            raise ValueError(f"prefix holds {n_pre} blocks; it must leave at least one of the {K} blocks to generate")
    project = make_codec(cfg).project if cfg.project_blocks else None
    if record:
        rec_states = torch.zeros((B, K, n_levels, *noise.shape[3:]), device=dev)
        rec_levels = torch.full((K, n_levels), float("nan"))
    cache = KVCache.empty()
    blocks: list[torch.Tensor] = []
    if n_pre:
        blocks = list(prefix.float().to(dev).split(cfg.block_frames, dim=1))
        if use_cache:
            with torch.no_grad(), autocast(dev, amp):
                _, cache = model(both(prefix.to(dev)), torch.zeros(len(text), prefix.shape[1], device=dev), text, None,
                                 clean=True)
    for k in range(n_pre, K):
        lv = first_levels if k == 0 else levels
        x = noise[:, k, 0]
        last = grad_steps[k] if grad_steps is not None else len(lv) - 1
        for i in range(last + 1):
            if record:
                rec_states[:, k, i] = x.detach().float()
                rec_levels[k, i] = lv[i]
            t = torch.full((B, cfg.block_frames), lv[i], device=dev)
            with torch.set_grad_enabled(grad_steps is not None and i == last), autocast(dev, amp):
                if use_cache:
                    raw, _ = model(both(x), both(t), text, cache if k else None)
                else:
                    prefix = both(torch.cat(blocks, dim=1).detach()) if k else None
                    raw = model.forward_with_prefix(prefix, both(x), both(t), text)
            x0 = model.to_x0(guide(raw, first_guidance if k == 0 else guidance), x, t)
            if i < last:
                nxt = lv[i + 1]
                if renoise == "fresh":
                    eps = noise[:, k, i + 1]
                else:
                    eps = (x - (1 - lv[i]) * x0) / lv[i]
                x = (1 - nxt) * x0 + nxt * eps
        if project is not None:
            x0 = project(x0)
        blocks.append(x0)
        if use_cache and k < K - 1:
            with torch.no_grad(), autocast(dev, amp):
                _, cache = model(both(x0.detach()), torch.zeros(len(text), cfg.block_frames, device=dev), text,
                                 cache if k else None, clean=True)
    if record:
        return torch.cat(blocks, dim=1), SamplerRecord(rec_states, rec_levels)
    return torch.cat(blocks, dim=1)

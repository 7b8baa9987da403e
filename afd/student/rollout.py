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


def rollout_noise(prompts: list[str], seeds: list[int], model: StudentModel, steps: int,
                  n_blocks: int | None = None) -> torch.Tensor | "StreamNoise":
    """All the noise a rollout draws: (B, K blocks, steps, F, C, H, W), float32 N(0, 1).

    Index [:, k, 0] starts block k; [:, k, i] re-noises it before step i. ``n_blocks`` past the
    config's (a streamed rollout) gives a ``StreamNoise`` instead, which draws blocks as they are
    asked for; its first blocks are this tensor's, so a long clip opens like the short one.
    """
    if len(prompts) != len(seeds):
        raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds")
    if n_blocks is not None and n_blocks > model.config.n_blocks:
        return StreamNoise(prompts, seeds, model.config, steps, n_blocks)
    return _noise_chunk(prompts, seeds, model.config, steps, 0)


def _noise_chunk(prompts: list[str], seeds: list[int], cfg, steps: int, chunk: int) -> torch.Tensor:
    """The noise of blocks chunk * n_blocks .. (chunk + 1) * n_blocks - 1 of each clip."""
    narrow = getattr(cfg, "widened_from", 0) or cfg.channels
    shape = (cfg.n_blocks, steps, cfg.block_frames, cfg.channels, cfg.height, cfg.width)
    out = torch.empty((len(prompts), *shape))
    for i, (p, s) in enumerate(zip(prompts, seeds)):
        seed = clip_seed(p, s) if chunk == 0 else clip_seed(f"{p}\x00chunk{chunk}", s)
        out[i, :, :, :, :narrow] = torch.randn((*shape[:3], narrow, *shape[4:]),
                                               generator=torch.Generator().manual_seed(seed))
        if narrow < cfg.channels:  # a widened student's new channels: a stream of their own
            extra = (*shape[:3], cfg.channels - narrow, *shape[4:])
            out[i, :, :, :, narrow:] = torch.randn(extra, generator=torch.Generator().manual_seed(
                clip_seed(f"{p}\x00widened{chunk}", s)))
    return out


class StreamNoise:
    """The noise of a rollout longer than the model's ``frames``, drawn one config-length chunk
    of blocks at a time (only the newest chunk is held), so its memory does not grow with the
    clip. ``noise[:, k]`` is block k's (B, steps, F, C, H, W); chunk 0 is ``rollout_noise``'s
    tensor, each later chunk has its own per-clip seed."""

    def __init__(self, prompts: list[str], seeds: list[int], cfg, steps: int, n_blocks: int):
        self.prompts, self.seeds, self.cfg, self.steps = list(prompts), list(seeds), cfg, steps
        self.shape = (len(prompts), n_blocks, steps, cfg.block_frames, cfg.channels, cfg.height, cfg.width)
        self._chunk: tuple[int, torch.Tensor] | None = None

    def __getitem__(self, index) -> torch.Tensor:
        if not (isinstance(index, tuple) and len(index) == 2 and index[0] == slice(None) and isinstance(index[1], int)):
            raise TypeError("StreamNoise is read one block at a time: noise[:, k]")
        k = index[1]
        if not 0 <= k < self.shape[1]:
            raise IndexError(f"block {k} of a {self.shape[1]}-block rollout")
        chunk, j = divmod(k, self.cfg.n_blocks)
        if self._chunk is None or self._chunk[0] != chunk:
            self._chunk = (chunk, _noise_chunk(self.prompts, self.seeds, self.cfg, self.steps, chunk))
        return self._chunk[1][:, j]

    def to(self, device) -> "StreamNoise":
        """Blocks are drawn on the CPU and moved by the rollout."""
        return self


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


def context_blocks(k: int, cfg) -> list[int]:
    """The blocks block k attends to, oldest first; a block's place in the list is its position
    in the model. All earlier blocks while they fit in the config's ``context_window()`` (W
    frames; by default every earlier block of a clip of the config's ``frames``), then the newest
    W / block_frames blocks, or with ``sink`` block 0 and the newest others, re-indexed so no
    position leaves the trained range (docs/long-videos.md)."""
    w = cfg.context_window() // cfg.block_frames
    if k <= w:
        return list(range(k))
    if w < 1:
        raise ValueError(f"a {cfg.frames}-frame model in blocks of {cfg.block_frames} frames has no room for "
                         f"context past its length; it cannot stream")
    if cfg.sink:
        return [0, *range(k - w + 1, k)]
    return list(range(k - w, k))


def check_stream_length(cfg, frames: int) -> None:
    """A ValueError if the model cannot make a ``frames``-frame clip (a rolling cache's rotary
    table bounds it)."""
    longest = cfg.max_frames()
    if longest is not None and frames > longest:
        raise ValueError(f"frames {frames} is past the {longest} frame positions a rolling cache can number "
                         f"(rope_max_seq_len); use stream_cache 'reencode' or a shorter clip")


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
    stats: dict | None = None,
) -> torch.Tensor | tuple[torch.Tensor, SamplerRecord]:
    """Generate clips in the model's space.

    text: B prompt encodings; noise: (B, K, S, F, C, H, W) from ``rollout_noise`` with S >= the
    number of levels of the longest block; levels: decreasing noise levels (default: the model config's step list).
    grad_steps: one step index per block whose forward pass keeps its graph; that step's x0
    estimate becomes the block (Self-Forcing's early exit), earlier steps and every cache
    write run without gradient. None: no gradient anywhere.
    n_blocks: generate this many blocks (>= 1; noise then needs at least n_blocks blocks, later
    ones are ignored). Fewer than the config's: a shorter clip. More: a streamed clip past the
    training length, each block attending to the window ``context_blocks`` gives, whose cache is
    re-encoded at re-indexed positions when the window moves, or with ``stream_cache`` "roll"
    keeps its frames as written and drops the stale ones (noise: a ``StreamNoise``). None:
    the config's blocks (noise must have exactly that many).
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
    stats: a dict that receives ``cache_frames_max`` and ``cache_bytes_max``, the largest KV
    cache the rollout held (bounded by the window however long the clip; a rolling cache holds
    the window and one block between writing a block and dropping a stale one).
    Returns x0 of shape (B, K * F, C, H, W), float32 (not clamped unless the config's
    ``project_blocks``; decode with the codec); with a prefix its frames come first, unchanged.
    With ``record``, returns ``(x0, SamplerRecord)``.
    """
    cfg = model.config
    dev = device_of(model)
    text = text.to(dev)
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
        if K < 1:
            raise ValueError(f"n_blocks must be >= 1, got {n_blocks}")
        if K_noise < K or S < n_levels:
            raise ValueError(f"noise has shape {tuple(noise.shape)}; expected (B, >= {K}, >= {n_levels}, ...)")
        if K > cfg.n_blocks:
            context_blocks(K - 1, cfg)  # the model can stream (an error naming why not)
            check_stream_length(cfg, K * cfg.block_frames)
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

    F_ = cfg.block_frames
    n_pre = 0
    if prefix is not None:
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
    blocks: list[torch.Tensor] = list(prefix.float().to(dev).split(F_, dim=1)) if n_pre else []
    # The cache holds the blocks ``cached`` (block indices, in position order).
    cache, cached = KVCache.empty(), []
    rolls = cfg.rolls()

    def clean_pass(ids: list[int], past: KVCache | None) -> KVCache:
        x = torch.cat([blocks[j] for j in ids], dim=1).detach()
        with torch.no_grad(), autocast(dev, amp):
            return model(both(x), torch.zeros(len(text), x.shape[1], device=dev), text, past, clean=True)[1]

    def keep(cache: KVCache, cached: list[int], ctx: list[int]) -> tuple[KVCache, list[int]]:
        if cached == ctx:
            return cache, cached
        if not set(ctx) <= set(cached):
            raise RuntimeError(f"a rolling cache of blocks {cached} cannot serve the window {ctx}")
        slots = [i * F_ + f for i, b in enumerate(cached) if b in ctx for f in range(F_)]
        return cache.kept(slots), [b for b in cached if b in ctx]

    def note(cache: KVCache) -> None:
        if stats is not None:
            stats["cache_frames_max"] = max(stats.get("cache_frames_max", 0), cache.n_frames)
            stats["cache_bytes_max"] = max(stats.get("cache_bytes_max", 0), cache.nbytes())

    for k in range(n_pre, K):
        ctx = context_blocks(k, cfg)
        if use_cache and rolls:
            # A rolling cache: each block's keys are written once, attending to its own window,
            # and dropped when it leaves every later window (docs/long-videos.md). Between the
            # write and the drop it holds the window and the new block.
            for j in range(cache.next_frame // F_ if cached else 0, k):
                cache, cached = keep(cache, cached, context_blocks(j, cfg))
                cache, cached = clean_pass([j], cache if cached else None), [*cached, j]
                note(cache)
            cache, cached = keep(cache, cached, ctx)
        elif use_cache and ctx != cached:
            # Extend while the window only grows; once it moves, every position shifts: re-encode.
            grows = ctx[:len(cached)] == cached
            cache = clean_pass(ctx[len(cached):] if grows else ctx, cache if grows and cached else None)
            cached = ctx
            note(cache)
        lv = first_levels if k == 0 else levels
        blk = noise[:, k].to(dev)
        x = blk[:, 0]
        last = grad_steps[k] if grad_steps is not None else len(lv) - 1
        for i in range(last + 1):
            if record:
                rec_states[:, k, i] = x.detach().float()
                rec_levels[k, i] = lv[i]
            t = torch.full((B, F_), lv[i], device=dev)
            with torch.set_grad_enabled(grad_steps is not None and i == last), autocast(dev, amp):
                if use_cache:
                    raw, _ = model(both(x), both(t), text, cache if ctx else None)
                else:
                    # A rolling cache's window is the model's mask over the whole clip so far.
                    seen = list(range(k)) if rolls else ctx
                    past = both(torch.cat([blocks[j] for j in seen], dim=1).detach()) if seen else None
                    raw = model.forward_with_prefix(past, both(x), both(t), text)
            x0 = model.to_x0(guide(raw, first_guidance if k == 0 else guidance), x, t)
            if i < last:
                nxt = lv[i + 1]
                if renoise == "fresh":
                    eps = blk[:, i + 1]
                else:
                    eps = (x - (1 - lv[i]) * x0) / lv[i]
                x = (1 - nxt) * x0 + nxt * eps
        if project is not None:
            x0 = project(x0)
        blocks.append(x0)
    if record:
        return torch.cat(blocks, dim=1), SamplerRecord(rec_states, rec_levels)
    return torch.cat(blocks, dim=1)

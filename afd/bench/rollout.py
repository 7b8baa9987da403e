"""Rollout throughput of the causal student: KV cache vs recomputing the clean prefix.

For n = 1 .. max_blocks blocks, time ``rollout(..., n_blocks=n)`` both ways and report generated
frames per second. With the cache every denoising call runs only the current block's tokens (plus
one clean pass per block to write the cache), so the cost of a rollout grows linearly in n; without
it each call re-runs all earlier clean blocks too, so the cost grows quadratically and the speedup
of the cache grows with n. The target is a speedup of at least 3x at 4 blocks (the built-in
student's 16-frame clip). The table also shows the ratio of tokens processed (``work_ratio``):
at 4 steps and 4 blocks it is only 40 / 19 = 2.1x, because the cached path pays an extra clean
pass per block, so 3x there needs the quadratic attention term (long prefixes) to matter.

Settings match real use: ``amp="auto"`` (bf16 autocast where bf16 is native), ``torch.no_grad``, the model's own
rollout code. Timing does not depend on the weights, so without ``--checkpoint`` a freshly
initialised default-size student is used.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from afd.bench.train_step import num_threads
from afd.student.backbones.transformer import CausalVideoTransformer
from afd.student.backbones.transformer_config import StudentConfig
from afd.student.rollout import rollout
from afd.student.schedule import step_levels
from afd.student.shipped import resolve_checkpoint
from afd.text.encoder import get_text_encoder
from afd.world.splits import load_split

TARGET_SPEEDUP = 3.0  # at REF_BLOCKS blocks
REF_BLOCKS = 4


def build_model(max_blocks: int, checkpoint: str | Path | None = None,
                config: StudentConfig | None = None) -> tuple[CausalVideoTransformer, str]:
    """A student long enough for ``max_blocks`` blocks, and a note on where its weights come from.

    Without a checkpoint: random init of ``config`` (default: StudentConfig()) with ``frames =
    max_blocks * block_frames``. With one: its config and weights; if max_blocks is beyond its
    trained length, the frame-position table is extended with freshly initialised rows (the
    clips past the trained length are meaningless, but the timing is what a trained model of
    that length would show - compute does not depend on weight values).
    """
    if checkpoint is None:
        base = config or StudentConfig()
        torch.manual_seed(0)
        cfg = replace(base, frames=max_blocks * base.block_frames)
        return CausalVideoTransformer(cfg).eval(), "random init (timing does not depend on weights)"
    trained = CausalVideoTransformer.from_pretrained(resolve_checkpoint(checkpoint))
    tc = trained.config
    if max_blocks <= tc.n_blocks:
        return trained, f"weights from {checkpoint}"
    cfg = replace(tc, frames=max_blocks * tc.block_frames)
    torch.manual_seed(0)
    model = CausalVideoTransformer(cfg).eval()
    state = trained.state_dict()
    pos = model.pos_frame.detach().clone()
    pos[:tc.frames] = state["pos_frame"]
    model.load_state_dict({**state, "pos_frame": pos})
    return model, (f"weights from {checkpoint}; frame positions beyond its {tc.n_blocks} trained blocks "
                   f"are untrained (fine for timing, not for looking at the clips)")


def work_ratio(n: int, steps: int) -> float:
    """Tokens run through the network without / with the cache for an n-block rollout.

    With the cache, each block costs ``steps`` denoising passes over its own frames plus one
    clean pass to write them into the cache (not after the last block): ``n * steps + n - 1``
    block-passes. Without it, the denoising passes of block k also carry the k earlier blocks:
    ``steps * n (n + 1) / 2``. The ratio is the speedup of the per-token work (Linears, MLP);
    attention, quadratic in length without the cache, adds to it, fixed per-call costs take
    from it. E.g. 4 steps, 4 blocks: 40 / 19 = 2.1.
    """
    return steps * n * (n + 1) / 2 / (n * steps + n - 1)


def _time_once(model, text, noise, levels, n: int, use_cache: bool) -> float:
    t0 = time.perf_counter()
    rollout(model, text, noise, levels, use_cache=use_cache, amp="auto", n_blocks=n)
    return time.perf_counter() - t0


def run(batch: int = 8, max_blocks: int = 8, steps: int = 4, repeats: int = 3,
        checkpoint: str | Path | None = None, config: StudentConfig | None = None,
        threads: int | None = None) -> dict:
    """Time cached vs recomputed rollouts of 1..max_blocks blocks; returns the figures.

    ``config`` (no checkpoint only) sets the model shape, e.g. a tiny one for tests;
    ``threads``: torch intra-op threads for the run (None: leave torch's setting).
    """
    if min(batch, max_blocks, steps, repeats) < 1:
        raise ValueError(f"batch, max_blocks, steps and repeats must be >= 1, "
                         f"got {batch}, {max_blocks}, {steps}, {repeats}")
    if checkpoint is not None and config is not None:
        raise ValueError("give a checkpoint or a config, not both")
    with num_threads(threads), torch.no_grad():
        return _run(batch, max_blocks, steps, repeats, checkpoint, config)


def _run(batch, max_blocks, steps, repeats, checkpoint, config) -> dict:
    model, weights_note = build_model(max_blocks, checkpoint, config)
    cfg = model.config
    levels = step_levels(steps, cfg.shift)
    pool = load_split("pretrain")
    text = get_text_encoder().encode([pool[i % len(pool)] for i in range(batch)])
    g = torch.Generator().manual_seed(0)
    noise = torch.randn((batch, max_blocks, steps, cfg.block_frames, cfg.channels, cfg.height, cfg.width), generator=g)

    # Warm-up: block k has the same shapes whatever the rollout length, so one full-length run
    # per mode builds every kernel/allocator state the timed runs need.
    for use_cache in (True, False):
        _time_once(model, text, noise, levels, max_blocks, use_cache)

    by_blocks: dict[str, dict] = {}
    for n in range(1, max_blocks + 1):
        cached, recompute = [], []
        # Alternate the two modes so slow drift (other load on the machine) hits both alike.
        for _ in range(repeats):
            cached.append(_time_once(model, text, noise, levels, n, True))
            recompute.append(_time_once(model, text, noise, levels, n, False))
        frames = batch * n * cfg.block_frames
        c, r = statistics.median(cached), statistics.median(recompute)
        by_blocks[str(n)] = {"frames_per_s_cached": round(frames / c, 1),
                             "frames_per_s_recompute": round(frames / r, 1),
                             "speedup": round(r / c, 2),
                             "work_ratio": round(work_ratio(n, steps), 2)}

    ref = str(min(REF_BLOCKS, max_blocks))
    return {
        "speedup_at_4_blocks": by_blocks[str(REF_BLOCKS)]["speedup"] if max_blocks >= REF_BLOCKS else None,
        "frames_per_s_cached": by_blocks[ref]["frames_per_s_cached"],
        "frames_per_s_recompute": by_blocks[ref]["frames_per_s_recompute"],
        "ref_blocks": int(ref),
        "by_blocks": by_blocks,
        "batch": batch,
        "steps": steps,
        "repeats": repeats,
        "block_frames": cfg.block_frames,
        "model": f"dim {cfg.dim}, depth {cfg.depth}, {cfg.tokens_per_frame} tokens/frame",
        "weights": weights_note,
        "threads": torch.get_num_threads(),
    }


def report(r: dict) -> str:
    """Human-readable table of ``run``'s figures."""
    lines = [f"rollout throughput: batch {r['batch']}, {r['steps']} denoising steps/block, "
             f"{r['block_frames']} frames/block, bf16 autocast, median of {r['repeats']}, "
             f"{r['threads']} threads",
             f"model: {r['model']}; {r['weights']}",
             f"{'blocks':>6}  {'frames/s cached':>15}  {'frames/s recompute':>18}  {'speedup':>7}  "
             f"{'token-work ratio':>16}"]
    for n, row in r["by_blocks"].items():
        lines.append(f"{n:>6}  {row['frames_per_s_cached']:>15.1f}  {row['frames_per_s_recompute']:>18.1f}  "
                     f"{row['speedup']:>6.2f}x  {row['work_ratio']:>15.2f}x")
    s = r["speedup_at_4_blocks"]
    if s is None:
        lines.append(f"target: >= {TARGET_SPEEDUP:g}x at {REF_BLOCKS} blocks (not measured: max-blocks < {REF_BLOCKS})")
    else:
        verdict = "met" if s >= TARGET_SPEEDUP else "NOT met"
        lines.append(f"KV cache speedup at {REF_BLOCKS} blocks: {s:.2f}x (target >= {TARGET_SPEEDUP:g}x: {verdict}; "
                     f"token-work ratio {r['by_blocks'][str(REF_BLOCKS)]['work_ratio']:.2f}x, attention aside)")
    return "\n".join(lines)


def emit(r: dict) -> None:
    """Print the report, then the figures as one JSON line (always the last line of stdout)."""
    print(report(r))
    print(json.dumps(r), flush=True)


def main(args) -> int:
    emit(run(args.batch, args.max_blocks, args.steps, args.repeats, args.checkpoint, threads=args.threads))
    return 0

"""Streaming cost: seconds per generated frame and peak memory at several clip lengths.

A student streams past its training length with a rolling window (docs/long-videos.md), so both
should stay flat in the clip's length N: every block past the window attends to the same number
of frames, and the cache never holds more than the window. Each length runs in a fresh process
(spawned), so its peak memory is its own: ``peak_mb`` is that process's peak resident memory on
CPU (the model, torch and the rollout; only the finished clip and one chunk of noise grow with
N), or the peak CUDA memory the rollout allocated on a GPU. ``cache_mb`` is the largest KV cache
the rollout held, exactly.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import statistics
import time

# ``--checkpoint random-wan``: a random Wan student (rotary frame positions) with the default
# student's model space, blocks, width and depth, and its MiniLM text, to time the two ways a
# window's cache can move (``--stream-cache``) without weights from a hub.
RANDOM_WAN = "random-wan"
RANDOM_WAN_CONFIG = dict(channels=3, height=32, width=32, frames=16, block_frames=4, patch_size=(1, 8, 8), heads=3,
                         head_dim=64, layers=6, ffn_dim=768, text_dim=384, rope_max_seq_len=1024)


def _one_length(checkpoint: str | None, frames: int, batch: int, repeats: int, threads: int | None,
                device: str, stream_cache: str | None = None) -> dict:
    """Runs in a spawned process: load, warm up on one training-length clip, time ``repeats``
    rollouts of ``frames`` frames."""
    import resource

    import torch

    from afd.student.backbones.transformer import CausalVideoTransformer
    from afd.student.backbones.transformer_config import StudentConfig
    from afd.student.base import load_student_model
    from afd.student.rollout import rollout, rollout_noise
    from afd.student.sample import blocks_for_frames
    from afd.text.select import text_encoder_for
    from afd.world.splits import load_split

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    if checkpoint == RANDOM_WAN:
        from afd.student.backbones.wan import CausalWanStudent
        from afd.student.backbones.wan_config import WanStudentConfig

        model = CausalWanStudent(WanStudentConfig(**RANDOM_WAN_CONFIG)).eval().to(device)
    elif checkpoint:
        model = load_student_model(checkpoint, device)
    else:
        model = CausalVideoTransformer(StudentConfig()).eval().to(device)
    cfg = model.config
    if stream_cache:
        cfg.stream_cache = stream_cache
        cfg.check_sampler()
    n_blocks = blocks_for_frames(cfg, frames)
    first, levels = cfg.sampler_levels()
    pool = load_split("pretrain")
    prompts = [pool[i % len(pool)] for i in range(batch)]
    text = text_encoder_for(cfg).encode(prompts)
    seeds = list(range(batch))
    cuda = torch.device(device).type == "cuda"
    with torch.no_grad():
        rollout(model, text, rollout_noise(prompts, seeds, model, len(first)), levels, first_levels=first)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        times, stats = [], {}
        for _ in range(repeats):
            noise = rollout_noise(prompts, seeds, model, len(first), n_blocks)
            t0 = time.perf_counter()
            rollout(model, text, noise, levels, first_levels=first, n_blocks=n_blocks, stats=stats)
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    peak = ((torch.cuda.max_memory_allocated() - base) / 2**20 if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"s_per_frame": statistics.median(times) / (batch * frames), "peak_mb": round(peak, 1),
            "cache_mb": round(stats.get("cache_bytes_max", 0) / 2**20, 3),
            "cache_frames": stats.get("cache_frames_max", 0), "model_frames": cfg.frames,
            "block_frames": cfg.block_frames, "window": cfg.context_window(), "sink": cfg.sink,
            "stream_cache": cfg.stream_cache}


def run(frames: list[int], checkpoint: str | None = None, batch: int = 4, repeats: int = 2,
        threads: int | None = None, device: str = "cpu", stream_cache: str | None = None) -> dict:
    """Time streamed rollouts at each length in ``frames`` (each a whole number of blocks);
    ``stream_cache``: "reencode" or "roll" (None: the checkpoint's)."""
    if not frames or min(frames) < 1 or min(batch, repeats) < 1:
        raise ValueError(f"frames must be a non-empty list of lengths >= 1 and batch, repeats >= 1; "
                         f"got frames {frames}, batch {batch}, repeats {repeats}")
    ctx = mp.get_context("spawn")
    by_frames = {}
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        for n in frames:
            by_frames[str(n)] = pool.apply(_one_length, (checkpoint, n, batch, repeats, threads, device,
                                                         stream_cache))
    one = next(iter(by_frames.values()))
    return {"by_frames": {n: {"s_per_frame": round(r["s_per_frame"], 6), "peak_mb": r["peak_mb"],
                              "cache_mb": r["cache_mb"]} for n, r in by_frames.items()},
            "checkpoint": checkpoint or "random init of the default student (timing does not depend on weights)",
            "model_frames": one["model_frames"], "block_frames": one["block_frames"], "window": one["window"],
            "sink": one["sink"], "stream_cache": one["stream_cache"], "batch": batch, "repeats": repeats,
            "device": device,
            "peak": "peak CUDA memory of the rollout" if device.startswith("cuda") else "peak RSS of the process"}


def report(r: dict) -> str:
    lines = [f"streamed rollouts: {r['checkpoint']}; trained on {r['model_frames']} frames in blocks of "
             f"{r['block_frames']}, window {r['window']} frames{' + sink' if r['sink'] else ''}, "
             f"{r['stream_cache']} cache; batch {r['batch']}, "
             f"median of {r['repeats']}; peak_mb = {r['peak']}",
             f"{'frames':>7}  {'ms/frame':>9}  {'frames/s':>9}  {'peak MB':>8}  {'cache MB':>9}"]
    for n, row in r["by_frames"].items():
        lines.append(f"{n:>7}  {1000 * row['s_per_frame']:>9.2f}  {1 / row['s_per_frame']:>9.1f}  "
                     f"{row['peak_mb']:>8.0f}  {row['cache_mb']:>9.2f}")
    return "\n".join(lines)


def main(args) -> int:
    frames = [int(x) for x in args.frames.split(",")]
    r = run(frames, args.checkpoint, args.batch, args.repeats, args.threads, args.device,
            args.stream_cache)
    print(report(r))
    print(json.dumps(r), flush=True)
    return 0

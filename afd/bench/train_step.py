"""Pretraining step time and MFU of the causal student.

Times ``afd.train.pretrain.Pretrainer.step``, the very step ``pretrain`` runs (lr schedule, text
dropout, ``flow_matching_loss`` under the config's ``amp``, ``backward``, ``clip_grad_norm_``, ``AdamW.step``
over the trainable parameters, EMA update), on the student, EMA and optimizer that
``Pretrainer.build`` makes from a pretraining config, on batches drawn by the loop's own
``batch_at``. The batches are rendered and codec-encoded before timing (reported separately as
data time: it is the world simulator, not the model).

MFU = (model FLOPs per step / seconds per step) / peak, where the peak is the best matmul
throughput measured in the same process in the precision the step runs in (large square
``bf16 @ bf16`` products under bf16 autocast, ``fp32 @ fp32`` otherwise: ``amp`` resolved by
``afd.device.resolve_amp``), so it reflects this machine, its thread count and its current load.
Model FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one real step (taught
the CPU flash-attention kernels, which it does not know) and cross-checked against the analytic count of
``analytic_step_flops``. A ``torch.profiler`` pass over one step shows where the time goes.
"""

from __future__ import annotations

import json
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from afd.device import resolve_amp
from afd.student.backbones.transformer_config import StudentConfig
from afd.text.encoder import MAX_TOKENS

# Ops whose self time is matmul / attention kernel work: what MFU counts as useful. Everything
# else (elementwise, norms, dtype casts, reductions, the optimizer, autograd bookkeeping) is
# overhead from MFU's point of view.
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm",
              "aten::_scaled_dot_product_flash_attention_for_cpu",
              "aten::_scaled_dot_product_flash_attention_for_cpu_backward")


def _sig(x: float, digits: int = 4) -> float:
    """x rounded to ``digits`` significant digits (figures span tiny test models to real ones)."""
    return float(f"{x:.{digits}g}")


@contextmanager
def num_threads(n: int | None):
    """Run with ``n`` intra-op threads (None: leave torch's setting), restoring it afterwards."""
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def peak_tflops(dtype: torch.dtype = torch.bfloat16, sizes: tuple[int, ...] = (1024, 2048, 4096),
                repeats: int = 3) -> dict:
    """Best measured matmul throughput (TFLOPS) in ``dtype`` over square sizes n x n @ n x n.

    The inputs are ``dtype`` tensors (no autocast casts in the timed region), so this is the
    kernel's own peak on this machine in the precision the step computes in: the ceiling its
    matmuls could reach.
    """
    by_size = {}
    for n in sizes:
        g = torch.Generator().manual_seed(n)
        a = torch.randn(n, n, generator=g).to(dtype)
        b = torch.randn(n, n, generator=g).to(dtype)
        a @ b  # warm-up: kernel selection, packing buffers
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
        by_size[str(n)] = round(2 * n**3 / best / 1e12, 3)
    return {"tflops": max(by_size.values()), "by_size": by_size}


def analytic_step_flops(cfg: StudentConfig, batch: int, text_tokens: int = MAX_TOKENS) -> dict:
    """Matmul FLOPs of one training step (forward + backward), counted from the architecture,
    with every parameter trainable.

    The training pass runs the doubled sequence ``[clean | noised]``: ``slots = 2 * frames``
    frame slots, ``N = slots * tokens_per_frame`` tokens per clip, ``L = text_tokens`` prompt
    tokens (the encoder pads to 32). With D = dim, a Linear ``in -> out`` applied to R rows
    costs ``2 * in * out * R`` forward; per clip:

    * token Linears (R = N): patch_in (patch_dim -> D), per layer qkv (D -> 3D), proj (D -> D),
      cross_q (D -> D), cross_proj (D -> D), mlp (D -> 4D -> D); patch_out (D -> patch_dim)
    * frame-slot Linears (R = slots, the adaLN conditioning): t_mlp (256 -> D -> D), per layer
      ada (D -> 6D), final_ada (D -> 2D)
    * text Linears: text_proj (384 -> D) and per layer cross_kv (D -> 2D) on R = L rows;
      pooled_proj (384 -> D) on R = 1
    * attention per layer (all heads): QK^T and AV, ``2 * 2 * Nq * Nk * D``; self-attention
      has Nq = Nk = N and is counted in full, block-causal mask and all, since the CPU kernel
      computes every score; cross-attention has Nq = N, Nk = L.

    A Linear's backward costs twice its forward (grad wrt input and wrt weight): x3 in all.
    Linears whose input needs no gradient skip the input-grad matmul and are x2: patch_in (the
    clip), t_mlp's first layer (the timestep features), text_proj and pooled_proj (the frozen
    encoder's output). Attention backward is 5 matmuls - the flash kernel recomputes QK^T, then
    dV, dP, dQ, dK - i.e. 2.5x its forward: x3.5 in all (FlashAttention's and FlopCounterMode's
    convention). This matches FlopCounterMode's count of a real step exactly.
    Returns the parts and ``total`` (FLOPs for ``batch`` clips).
    """
    D, depth = cfg.dim, cfg.depth
    hidden = int(D * cfg.mlp_ratio)
    patch_dim = cfg.channels * cfg.patch * cfg.patch
    slots = 2 * cfg.frames
    N = slots * cfg.tokens_per_frame
    L = text_tokens

    def lin(i, o, rows, mult=3):
        return 2 * i * o * rows * mult

    parts = {
        "token_linears": (lin(patch_dim, D, N, 2) + lin(D, patch_dim, N)
                          + depth * (lin(D, 3 * D, N) + 3 * lin(D, D, N) + lin(D, hidden, N) + lin(hidden, D, N))),
        "conditioning_linears": (lin(256, D, slots, 2) + lin(D, D, slots) + depth * lin(D, 6 * D, slots)
                                 + lin(D, 2 * D, slots)),
        "text_linears": lin(cfg.text_dim, D, L, 2) + lin(cfg.text_dim, D, 1, 2) + depth * lin(D, 2 * D, L),
        "self_attention": depth * 7 * 2 * N * N * D,  # 3.5 x (2 * 2 * N * N * D)
        "cross_attention": depth * 7 * 2 * N * L * D,
    }
    parts = {k: v * batch for k, v in parts.items()}
    parts["total"] = sum(parts.values())
    return parts


def _cpu_flash_flops():
    """FlopCounterMode formulas for the CPU flash-attention ops (it only knows the GPU ones)."""
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    def fwd(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    def bwd(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)

    aten = torch.ops.aten
    return {aten._scaled_dot_product_flash_attention_for_cpu: fwd,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: bwd}


def counted_flops(fn) -> int:
    """FLOPs of ``fn()`` as counted by FlopCounterMode (matmuls and attention kernels)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=_cpu_flash_flops()) as counter:
        fn()
    return counter.get_total_flops()


def profile_step(fn, rows: int = 8) -> dict:
    """Self-CPU-time breakdown of ``fn()``: the top ``rows`` ops and the matmul/attention share."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total_us = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    top = [{"op": e.key, "self_ms": round(e.self_cpu_time_total / 1e3, 2),
            "share": round(e.self_cpu_time_total / total_us, 3), "calls": e.count} for e in events[:rows]]
    matmul_us = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS)
    return {"top_ops": top, "matmul_share": round(matmul_us / total_us, 3),
            "matmul_ms": round(matmul_us / 1e3, 2), "profiled_ms": round(total_us / 1e3, 2)}


def run(batch: int = 16, steps: int = 10, config_path: str | Path | None = "configs/pretrain/pretrain.yaml",
        overrides: list[str] | tuple[str, ...] = (), *, warmup: int = 2,
        peak_sizes: tuple[int, ...] = (1024, 2048, 4096), profile_rows: int = 8,
        threads: int | None = None) -> dict:
    """Time ``steps`` pretraining steps at the config's model size; returns the figures.

    ``overrides`` are ``key=value`` strings as for ``afd pretrain`` (e.g. ``model.dim=32`` for a
    tiny model in tests); ``batch`` overrides ``batch_size``.
    """
    from afd.config import load_config
    from afd.student.codec import make_codec
    from afd.text.encoder import get_text_encoder
    from afd.train.pretrain import PretrainConfig, Pretrainer, batch_at
    from afd.world.splits import load_split

    if min(batch, steps) < 1 or warmup < 0:
        raise ValueError(f"batch and steps must be >= 1 and warmup >= 0, got {batch}, {steps}, {warmup}")
    cfg = load_config(PretrainConfig, config_path, [*overrides, f"batch_size={batch}"])

    with num_threads(threads):
        trainer = Pretrainer.build(cfg)
        model = trainer.model
        pool = load_split(cfg.split)
        encoder = get_text_encoder()
        codec = make_codec(cfg.model)
        encoder.encode(pool + [cfg.model.null_prompt])  # as in pretrain: warm the prompt cache

        # One fresh batch per step (warm-up, timed, flop-counted, profiled), made up front.
        n_batches = warmup + steps + 2
        t0 = time.perf_counter()
        batches = []
        for i in range(n_batches):
            prompts, clips, gen = batch_at(i, cfg, pool)
            batches.append((prompts, codec.encode(clips), gen))
        data_ms = (time.perf_counter() - t0) / n_batches * 1e3

        def train_step(i: int) -> float:
            """Step i of pretraining, as pretrain() runs it (minus logging, eval and checkpoints)."""
            return trainer.step(i, *batches[i], encoder).loss

        for i in range(warmup):  # allocator, kernel selection, AdamW state creation
            train_step(i)
        times = []
        for i in range(warmup, warmup + steps):
            t0 = time.perf_counter()
            train_step(i)
            times.append(time.perf_counter() - t0)
        step_s = statistics.median(times)

        flops = counted_flops(lambda: train_step(warmup + steps))
        analytic = analytic_step_flops(cfg.model, batch)
        prof = profile_step(lambda: train_step(warmup + steps + 1), profile_rows)
        bf16 = resolve_amp(cfg.amp, model)
        peak = peak_tflops(torch.bfloat16 if bf16 else torch.float32, peak_sizes)
        threads_used = torch.get_num_threads()

    achieved = flops / step_s / 1e12
    m = cfg.model
    return {
        "ms_per_step": round(step_s * 1e3, 2),
        "ms_per_step_mean": round(statistics.fmean(times) * 1e3, 2),
        "mfu": _sig(achieved / peak["tflops"]),
        "achieved_tflops": _sig(achieved),
        "precision": "bf16" if bf16 else "fp32",
        "peak_tflops": peak["tflops"],
        "peak_by_size": peak["by_size"],
        "model_tflops_per_step": _sig(flops / 1e12),
        "analytic_tflops_per_step": _sig(analytic["total"] / 1e12),
        "analytic_parts_gflops": {k: _sig(v / 1e9) for k, v in analytic.items() if k != "total"},
        # matmul kernels' own throughput: model FLOPs over the time spent inside them (profiled step)
        "matmul_kernel_tflops": _sig(flops / (prof["matmul_ms"] / 1e3) / 1e12) if prof["matmul_ms"] else None,
        "matmul_share": prof["matmul_share"],
        "top_ops": prof["top_ops"],
        "data_ms_per_step": round(data_ms, 2),
        "batch": batch,
        "steps": steps,
        "model": f"dim {m.dim}, depth {m.depth}, heads {m.heads}, {m.frames} frames of {m.tokens_per_frame} tokens",
        "dim": m.dim,
        "params_m": round(model.num_params() / 1e6, 3),
        "amp": cfg.amp,  # the setting; "precision" is what it resolved to here
        "threads": threads_used,
    }


def report(r: dict) -> str:
    """Human-readable summary of ``run``'s figures, ending with what limits MFU."""
    ratio = (r["model_tflops_per_step"] / r["analytic_tflops_per_step"] if r["analytic_tflops_per_step"]
             else float("nan"))
    lines = [
        f"pretraining step: batch {r['batch']}, {r['model']} ({r['params_m']:.2f}M params), "
        f"{'bf16 autocast' if r['precision'] == 'bf16' else 'fp32'} (amp={str(r['amp']).lower()}), "
        f"{r['threads']} threads",
        f"  {r['ms_per_step']:.1f} ms/step (median of {r['steps']}; mean {r['ms_per_step_mean']:.1f}), "
        f"+ {r['data_ms_per_step']:.1f} ms/step world rendering and codec encoding in the real loop (not included)",
        f"  model FLOPs/step: {r['model_tflops_per_step'] * 1e3:.2f} GFLOP counted (FlopCounterMode), "
        f"{r['analytic_tflops_per_step'] * 1e3:.2f} GFLOP analytic (counted/analytic = {ratio:.3f})",
        "    analytic parts (GFLOP): " + ", ".join(f"{k} {v:.2f}" for k, v in r["analytic_parts_gflops"].items()),
        f"  achieved {r['achieved_tflops']:.3f} TFLOPS; peak {r['precision']} matmul {r['peak_tflops']:.3f} TFLOPS "
        f"(best of sizes {', '.join(f'{n}: {t:.3f}' for n, t in r['peak_by_size'].items())})",
        f"  MFU {r['mfu']:.1%}",
        f"where the time goes (one profiled step, top {len(r['top_ops'])} ops by self CPU time):",
    ]
    for op in r["top_ops"]:
        lines.append(f"  {op['share']:6.1%}  {op['self_ms']:8.2f} ms  {op['calls']:5d} calls  {op['op']}")
    # MFU factors (roughly, profiler overhead aside) into the share of time spent in matmul /
    # attention kernels times how fast those kernels run relative to the peak.
    share, kt = r["matmul_share"], r["matmul_kernel_tflops"]
    eff = kt / r["peak_tflops"] if kt else 0.0
    top = r["top_ops"][0] if r["top_ops"] else None
    lines.append(f"MFU ~ {share:.0%} of the step in matmul/attention kernels x {eff:.0%} kernel efficiency "
                 f"(they run at {kt or 0:.3f} TFLOPS vs the {r['peak_tflops']:.3f} peak)")
    if share < eff:
        lines.append(f"=> mainly limited by non-matmul work ({1 - share:.0%} of the step: elementwise ops, norms, "
                     "dtype casts, the optimizer, autograd bookkeeping)")
    else:
        lines.append(f"=> mainly limited by kernel efficiency: at dim {r['dim']} the matmuls and attention are far "
                     "smaller than the ones that reach the measured peak")
    if top:
        lines.append(f"   largest single op: {top['op']} ({top['share']:.0%} of the step)")
    return "\n".join(lines)


def emit(r: dict) -> None:
    """Print the report, then the figures as one JSON line (always the last line of stdout)."""
    print(report(r))
    print(json.dumps(r), flush=True)


def main(args) -> int:
    emit(run(args.batch, args.steps, args.config, args.overrides, threads=args.threads))
    return 0

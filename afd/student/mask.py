"""The block-causal attention rule shared by every backbone (docs/method.md sections 3 and 6).

Tokens are either *clean* context or *noised* frames being denoised. A clean frame in block b
sees clean frames of blocks <= b; a noised frame in block b sees clean frames of blocks < b and
the noised frames of block b. The KV cache only ever holds clean frames, which come first in the
key sequence. With a window (a rolling cache's rule, docs/long-videos.md) a frame sees only the
clean frames of the blocks ``afd.student.rollout.context_blocks`` gives its block.
"""

from __future__ import annotations

import torch


def block_causal_mask(q_frames: torch.Tensor, q_clean: torch.Tensor, k_frames: torch.Tensor,
                      k_clean: torch.Tensor, block_frames: int, tokens_per_frame: int,
                      window: tuple[int, bool] | None = None) -> torch.Tensor | None:
    """Bool (Nq, Nk) token mask, True where a query may attend, from per-slot frame indices
    (long) and clean flags (bool) of queries (Sq,) and keys (Sk,); Nq = Sq * tokens_per_frame.
    window: (W in blocks, sink): a query of block b also needs the key's block within the W
    blocks before b (with sink: block 0, or within the W - 1 before). None when every key is
    visible to every query."""
    qb, kb = (q_frames // block_frames)[:, None], (k_frames // block_frames)[None, :]
    qc, kc = q_clean[:, None], k_clean[None, :]
    allowed = torch.where(kc, (kb < qb) | ((kb == qb) & qc), (kb == qb) & ~qc)
    if window is not None:
        w, sink = window
        allowed &= ((kb == 0) | (qb - kb <= w - 1)) if sink else (qb - kb <= w)
    if bool(allowed.all()):
        return None
    S = tokens_per_frame
    return allowed.repeat_interleave(S, dim=0).repeat_interleave(S, dim=1)


def attention_mask(frames: torch.Tensor, clean: torch.Tensor, n_past: int, block_frames: int,
                   tokens_per_frame: int, h: torch.Tensor, window: tuple[int, bool] | None = None
                   ) -> torch.Tensor | None:
    """The additive (Nq, n_past * tokens + Nq) mask of a call whose slots are ``frames`` /
    ``clean`` (Sq,) after ``n_past`` cached clean frames, in the dtype attention will run in
    (``h``'s, or the autocast dtype); None when nothing is masked. ``window``: as
    ``block_causal_mask``'s, among the call's own slots; the cached frames are earlier blocks,
    visible to every query (a rolling cache holds only its window)."""
    own = block_causal_mask(frames, clean, frames, clean, block_frames, tokens_per_frame, window)
    if own is None:
        return None
    past = torch.ones(own.shape[0], n_past * tokens_per_frame, dtype=torch.bool, device=own.device)
    mask = torch.cat([past, own], dim=1)
    # An additive mask in the compute dtype: the CPU flash kernel's backward is ~25% faster
    # with it than with a bool mask.
    dev = h.device.type
    dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else h.dtype
    return torch.zeros(mask.shape, dtype=dtype, device=h.device).masked_fill_(~mask, float("-inf"))

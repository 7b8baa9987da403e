"""The explicit KV cache of the causal student.

The caller creates it, passes it into the model and gets an extended copy back; the model keeps
no state between calls. It holds, per layer, the keys and values of *clean* frames only
(docs/method.md section 3): every block attends to the clean past, never to a noisy draft of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class KVCache:
    """Keys/values of ``n_frames`` clean frames: the first ones of the clip, or, once a rolling
    cache has dropped stale frames (``kept``), the ones it kept, in clip order.

    keys[l], values[l]: (B, heads, n_frames * tokens_per_frame, head_dim) for layer l; empty
    lists when nothing is cached yet. last_frame: (B, C, H, W) the newest clean frame itself, for
    a student whose refinement head reads the previous frame's pixels (None when empty).
    end: the clip index of the frame after the newest cached one, where the next frames go
    (None: ``n_frames``, nothing dropped).
    """

    n_frames: int = 0
    keys: tuple[torch.Tensor, ...] = field(default_factory=tuple)
    values: tuple[torch.Tensor, ...] = field(default_factory=tuple)
    last_frame: torch.Tensor | None = None
    end: int | None = None

    @property
    def next_frame(self) -> int:
        """The clip index the next frames written or denoised after this cache take."""
        return self.n_frames if self.end is None else self.end

    @classmethod
    def empty(cls) -> "KVCache":
        return cls()

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        return (self.keys[i], self.values[i]) if self.n_frames else None

    def extended(self, new_keys: list[torch.Tensor], new_values: list[torch.Tensor], frames: int,
                 last_frame: torch.Tensor) -> "KVCache":
        """A new cache with ``frames`` more frames appended, the newest being ``last_frame``
        (B, C, H, W); this one is left untouched."""
        if self.n_frames:
            keys = tuple(torch.cat([a, b], dim=2) for a, b in zip(self.keys, new_keys))
            values = tuple(torch.cat([a, b], dim=2) for a, b in zip(self.values, new_values))
        else:
            keys, values = tuple(new_keys), tuple(new_values)
        end = None if self.end is None else self.end + frames
        return KVCache(self.n_frames + frames, keys, values, last_frame, end)

    def kept(self, frames: list[int]) -> "KVCache":
        """A new cache of only the cached frames at ``frames`` (indices into this cache, in
        order), each as it was computed, not recomputed: the rolling cache dropping stale frames
        (docs/long-videos.md). The next frames still go at ``next_frame``."""
        if not self.n_frames:
            raise ValueError("an empty cache has no frames to keep")
        if any(not 0 <= f < self.n_frames for f in frames) or sorted(set(frames)) != list(frames):
            raise ValueError(f"frames to keep must be increasing indices below {self.n_frames}, got {frames}")
        per = self.keys[0].shape[2] // self.n_frames
        idx = torch.tensor([f * per + i for f in frames for i in range(per)], device=self.keys[0].device)
        keys = tuple(k.index_select(2, idx) for k in self.keys)
        values = tuple(v.index_select(2, idx) for v in self.values)
        return KVCache(len(frames), keys, values, self.last_frame, self.next_frame)

    def detach(self) -> "KVCache":
        last = self.last_frame.detach() if self.last_frame is not None else None
        return KVCache(self.n_frames, tuple(k.detach() for k in self.keys), tuple(v.detach() for v in self.values),
                       last, self.end)

    def nbytes(self) -> int:
        extra = (self.last_frame,) if self.last_frame is not None else ()
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values, *extra))

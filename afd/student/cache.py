"""The explicit KV cache of the causal student.

The caller creates it, passes it into the model and gets an extended copy back; the model keeps
no state between calls. It holds, per layer, the keys and values of *clean* frames only
(method.md section 3): every block attends to the clean past, never to a noisy draft of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class KVCache:
    """Keys/values of the first ``n_frames`` clean frames.

    keys[l], values[l]: (B, heads, n_frames * tokens_per_frame, head_dim) for layer l; empty
    lists when nothing is cached yet.
    """

    n_frames: int = 0
    keys: tuple[torch.Tensor, ...] = field(default_factory=tuple)
    values: tuple[torch.Tensor, ...] = field(default_factory=tuple)

    @classmethod
    def empty(cls) -> "KVCache":
        return cls()

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        return (self.keys[i], self.values[i]) if self.n_frames else None

    def extended(self, new_keys: list[torch.Tensor], new_values: list[torch.Tensor], frames: int) -> "KVCache":
        """A new cache with ``frames`` more frames appended (this one is left untouched)."""
        if self.n_frames:
            keys = tuple(torch.cat([a, b], dim=2) for a, b in zip(self.keys, new_keys))
            values = tuple(torch.cat([a, b], dim=2) for a, b in zip(self.values, new_values))
        else:
            keys, values = tuple(new_keys), tuple(new_values)
        return KVCache(self.n_frames + frames, keys, values)

    def detach(self) -> "KVCache":
        return KVCache(self.n_frames, tuple(k.detach() for k in self.keys), tuple(v.detach() for v in self.values))

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

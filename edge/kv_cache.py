"""The KV cache between decoder steps, in the layout the manifest records.

Shared buffer (fused graphs): one preallocated (1, kv_heads, capacity, head_dim) array per
tensor, bound as both past and present, so GroupQueryAttention writes each step's new
entries in place: no per-step copy that grows with the context. Capacity doubles when
needed (up to the context length), copying once.

Concatenated (plain graphs): the graph returns present = concat(past, new) and the cache
keeps it as the next past.

Either way `rewind_to(n)` keeps the first n tokens, so a chat turn can reuse the prefix it
shares with the previous turn.
"""

from __future__ import annotations

import mmap

import numpy as np
import onnxruntime as ort

from edge.manifest import KVLayout, ModelConfig

INITIAL_CAPACITY = 256
# Private pages where the platform has the flag (Unix); Python's default is a shared map.
_PRIVATE = {"flags": mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS} if hasattr(mmap, "MAP_ANONYMOUS") else {}


class KVCache:
    def __init__(self, layout: KVLayout, model: ModelConfig):
        layers = range(model.num_layers)
        self.past_names = [n.format(layer=i) for i in layers for n in (layout.past_key, layout.past_value)]
        self.present_names = [n.format(layer=i) for i in layers for n in (layout.present_key, layout.present_value)]
        self.model = model
        self.length = 0  # tokens held

    def rewind_to(self, n: int) -> None:
        """Keep the first n tokens (0 <= n <= length)."""
        if not 0 <= n <= self.length:
            raise ValueError(f"cannot rewind a cache of {self.length} tokens to {n}")
        self.length = n

    def reset(self) -> None:
        self.rewind_to(0)

    def reserve(self, tokens: int) -> None:
        """Room for `tokens` in all, when the layout preallocates (no-op otherwise)."""


class SharedKVCache(KVCache):
    def __init__(self, layout: KVLayout, model: ModelConfig):
        super().__init__(layout, model)
        self._buffers: list[np.ndarray] = []  # each (1, kv_heads, capacity, head_dim)
        self._bound_to: ort.IOBinding | None = None

    @property
    def capacity(self) -> int:
        return self._buffers[0].shape[2] if self._buffers else 0

    def reserve(self, tokens: int) -> None:
        if tokens > self.capacity:
            self._grow(tokens, exact=True)

    def bind(self, io: ort.IOBinding, new_tokens: int) -> None:
        """Make room for `new_tokens` more and bind the buffers as past and present."""
        needed = self.length + new_tokens
        if needed > self.capacity:
            self._grow(needed)
        if self._bound_to is not io:
            for past, present, buffer in zip(self.past_names, self.present_names, self._buffers):
                value = ort.OrtValue.ortvalue_from_numpy(buffer)  # shares the numpy memory
                io.bind_ortvalue_input(past, value)
                io.bind_ortvalue_output(present, value)
            self._bound_to = io

    def _grow(self, needed: int, exact: bool = False) -> None:
        """Doubling amortizes the copies when the final length is unknown; `exact` when it is."""
        capacity = needed if exact else min(max(needed, 2 * self.capacity, INITIAL_CAPACITY), self.model.context_length)
        shape = (1, self.model.num_kv_heads, capacity, self.model.head_dim)
        grown = _mapped_zeros(shape, len(self.past_names))
        for old, new in zip(self._buffers, grown):
            new[:, :, : self.length] = old[:, :, : self.length]
        self._buffers, self._bound_to = grown, None


def _mapped_zeros(shape: tuple[int, ...], count: int) -> list[np.ndarray]:
    """`count` float32 zero arrays of `shape` in one anonymous memory map.

    Pages become resident only as the cache fills, and all go back to the system when the
    cache is dropped. With np.zeros, malloc served a regrown cache from its heap (it raises
    its mmap threshold after the first large free), zeroed every page at once and kept them
    after the free: +20 MB peak RSS for a 1,000-token context after a 500-token one.
    """
    size = int(np.prod(shape))
    memory = mmap.mmap(-1, size * count * 4, **_PRIVATE)
    block = np.frombuffer(memory, dtype=np.float32)  # the arrays keep the map alive
    return [block[i * size : (i + 1) * size].reshape(shape) for i in range(count)]


class ConcatKVCache(KVCache):
    def __init__(self, layout: KVLayout, model: ModelConfig):
        super().__init__(layout, model)
        self._empty = np.zeros((1, model.num_kv_heads, 0, model.head_dim), dtype=np.float32)
        self._arrays = [self._empty] * len(self.past_names)  # each (1, kv_heads, length, head_dim)

    def feeds(self) -> dict[str, np.ndarray]:
        return {name: a[:, :, : self.length] for name, a in zip(self.past_names, self._arrays)}

    def update(self, outputs: dict[str, np.ndarray]) -> None:
        self._arrays = [outputs[name] for name in self.present_names]


def make_cache(layout: KVLayout, model: ModelConfig) -> KVCache:
    return (SharedKVCache if layout.shared_buffer else ConcatKVCache)(layout, model)

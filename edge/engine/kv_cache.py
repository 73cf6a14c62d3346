"""The KV cache between decoder calls: one interface, whatever the layout the manifest records.

A cache holds `slots` sequences, each with its own length. A graph call that appends n new
tokens to a slot goes through the same four steps for every layout:

    cache.reserve(total, slot)        # optional: room for `total` tokens up front
    cache.bind(io, n, slot)           # past and present tensors (and attention lengths) bound
    session.run_bound(io)             # the runner binds the tokens and logits and runs
    cache.commit(n, slot)             # the slot now holds n more tokens

`rewind_to(n, slot)` keeps a slot's first n tokens: what a chat turn reuses of the last one,
or what a verified draft keeps (the rejected positions are overwritten by the next call).
`copy_prefix(source, slot, n)` gives a slot another slot's first n tokens (a prompt prefix two
requests share, read once).
`reset()` empties every slot, `fork()` gives an empty cache of the same layout.

Two layouts:
- shared buffer (fused graphs): one preallocated (slots, kv_heads, capacity, head_dim)
  array per tensor, bound as both past and present, so GroupQueryAttention writes a call's
  new entries in place at each slot's length (no per-step copy that grows with the
  context). A call on one slot binds that slot's rows, a view (no copy). Capacity grows
  (doubling, up to the context length) with one copy. `bind_batch(io, count)` binds the
  first `count` slots' rows at once for a call of one new token per slot (continuous
  batching): onnxruntime's GroupQueryAttention reads each slot's own length from
  `seqlens_k` over the right-padded rows.
- concatenated (plain graphs: traced models, inspection): present = concat(past, new), and
  the cache keeps present as the next past.
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
    """What every layout shares: tensor names, per-slot lengths, rewinding."""

    def __init__(self, layout: KVLayout, model: ModelConfig, slots: int = 1):
        if slots < 1:
            raise ValueError(f"a cache needs at least one slot, got {slots}")
        layers = range(model.num_layers)
        self.layout, self.model, self.slots = layout, model, slots
        self.past_names = [n.format(layer=i) for i in layers for n in (layout.past_key, layout.past_value)]
        self.present_names = [n.format(layer=i) for i in layers for n in (layout.present_key, layout.present_value)]
        self._lengths = [0] * slots  # tokens each slot holds

    def length(self, slot: int = 0) -> int:
        return self._lengths[slot]

    def commit(self, new_tokens: int, slot: int = 0) -> None:
        """After the call `bind` prepared: the slot holds `new_tokens` more."""
        self._lengths[slot] += new_tokens

    def rewind_to(self, n: int, slot: int = 0) -> None:
        """Keep the slot's first n tokens (0 <= n <= length)."""
        if not 0 <= n <= self._lengths[slot]:
            raise ValueError(f"cannot rewind slot {slot} of {self._lengths[slot]} tokens to {n}")
        self._lengths[slot] = n

    def reset(self) -> None:
        self._lengths = [0] * self.slots

    def copy_prefix(self, source: int, slot: int, n: int) -> None:
        """Slot `slot` holds the first n tokens of slot `source` (0 <= n <= its length),
        and nothing after them: the same entries a prefill of those tokens wrote there."""
        if source == slot or not 0 <= n <= self._lengths[source]:
            raise ValueError(f"cannot copy {n} tokens of slot {source} (holding {self._lengths[source]}) to slot {slot}")
        self._copy(source, slot, n)
        self._lengths[slot] = n

    def _copy(self, source: int, slot: int, n: int) -> None:
        raise NotImplementedError(f"{type(self).__name__} runs one slot per call: sharing rows between slots "
                                  "needs a fused graph (a shared-buffer KV cache)")

    def fork(self) -> KVCache:
        """An empty cache of the same layout and slot count."""
        return type(self)(self.layout, self.model, self.slots)

    def reserve(self, tokens: int, slot: int = 0) -> None:
        """Room for `tokens` in all in the slot, when the layout preallocates (no-op otherwise)."""

    def bind(self, io: ort.IOBinding, new_tokens: int, slot: int = 0) -> None:
        raise NotImplementedError

    def bind_batch(self, io: ort.IOBinding, count: int) -> None:
        raise NotImplementedError(f"{type(self).__name__} runs one slot per call: batching needs a fused graph "
                                  "(a shared-buffer KV cache)")


class SharedKVCache(KVCache):
    def __init__(self, layout: KVLayout, model: ModelConfig, slots: int = 1):
        super().__init__(layout, model, slots)
        self._buffers: list[np.ndarray] = []  # each (slots, kv_heads, capacity, head_dim)
        self._seqlens = np.zeros(1, dtype=np.int32)  # (batch,) tokens in the slot after the call - 1
        self._total = np.array(0, dtype=np.int32)  # () tokens after the call (longest slot)
        self._bound: dict[ort.IOBinding, object] = {}  # io -> the slot (or ("batch", count)) its names are bound to
        self._batch_seqlens: dict[int, np.ndarray] = {}  # count -> (count,) lengths, bound by bind_batch

    @property
    def capacity(self) -> int:
        return self._buffers[0].shape[2] if self._buffers else 0

    def reserve(self, tokens: int, slot: int = 0) -> None:
        if tokens > self.capacity:
            self._grow(tokens, exact=True)

    def bind(self, io: ort.IOBinding, new_tokens: int, slot: int = 0) -> None:
        """Room for `new_tokens` more in `slot`, its rows bound as past and present, and the
        attention lengths written in place (bound once per binding)."""
        total = self._lengths[slot] + new_tokens
        if total > self.capacity:
            self._grow(total)
        if self._bound.get(io) != slot:
            self._bind_rows(io, slice(slot, slot + 1), self._seqlens)
            self._bound[io] = slot
        self._seqlens[0], self._total[...] = total - 1, total

    def bind_batch(self, io: ort.IOBinding, count: int) -> None:
        """Rows of slots [0, count) bound for a call of one new token per slot: each slot's
        token lands at its own length. Commit the slots whose token counts (`commit(1, slot)`);
        a slot that is not committed only had a position past its end written, which its next
        call overwrites."""
        lengths = self._lengths[:count]
        if not 0 < count <= self.slots:
            raise ValueError(f"a batch of {count} slots does not fit a cache of {self.slots}")
        if max(lengths) + 1 > self.capacity:
            self._grow(max(lengths) + 1)
        seqlens = self._batch_seqlens.setdefault(count, np.zeros(count, dtype=np.int32))  # (count,)
        if self._bound.get(io) != ("batch", count):
            self._bind_rows(io, slice(0, count), seqlens)
            self._bound[io] = ("batch", count)
        seqlens[:], self._total[...] = lengths, max(lengths) + 1  # one new token: length after - 1 = length

    def _copy(self, source: int, slot: int, n: int) -> None:
        for buffer in self._buffers:  # each (slots, kv_heads, capacity, head_dim)
            buffer[slot, :, :n] = buffer[source, :, :n]

    def _bind_rows(self, io: ort.IOBinding, rows: slice, seqlens: np.ndarray) -> None:
        for past, present, buffer in zip(self.past_names, self.present_names, self._buffers):
            value = ort.OrtValue.ortvalue_from_numpy(buffer[rows])  # (slots in rows, kv_heads, capacity, head_dim), shared
            io.bind_ortvalue_input(past, value)
            io.bind_ortvalue_output(present, value)
        io.bind_ortvalue_input("seqlens_k", ort.OrtValue.ortvalue_from_numpy(seqlens))
        io.bind_ortvalue_input("total_sequence_length", ort.OrtValue.ortvalue_from_numpy(self._total))

    def _grow(self, needed: int, exact: bool = False) -> None:
        """Doubling amortizes the copies when the final length is unknown; `exact` when it is."""
        if exact:
            capacity = needed
        else:
            capacity = min(max(needed, 2 * self.capacity, INITIAL_CAPACITY), self.model.context_length)
        shape = (self.slots, self.model.num_kv_heads, capacity, self.model.head_dim)
        grown = _mapped_zeros(shape, len(self.past_names))
        held = max(self._lengths)
        for old, new in zip(self._buffers, grown):
            new[:, :, :held] = old[:, :, :held]
        self._buffers = grown
        self._bound.clear()


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
    def __init__(self, layout: KVLayout, model: ModelConfig, slots: int = 1):
        super().__init__(layout, model, slots)
        empty = np.zeros((1, model.num_kv_heads, 0, model.head_dim), dtype=np.float32)
        self._pasts = [[empty] * len(self.past_names) for _ in range(slots)]  # each (1, kv_heads, held, head_dim)
        self._presents: list[np.ndarray] = []  # the call in flight's outputs

    def bind(self, io: ort.IOBinding, new_tokens: int, slot: int = 0) -> None:
        """The slot's past as inputs; present arrays (1, kv_heads, length + new, head_dim) as outputs."""
        held = self._lengths[slot]
        shape = (1, self.model.num_kv_heads, held + new_tokens, self.model.head_dim)
        self._presents = [np.empty(shape, dtype=np.float32) for _ in self.present_names]
        for name, past in zip(self.past_names, self._pasts[slot]):
            io.bind_cpu_input(name, np.ascontiguousarray(past[:, :, :held]))
        for name, present in zip(self.present_names, self._presents):
            io.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(present))

    def commit(self, new_tokens: int, slot: int = 0) -> None:
        super().commit(new_tokens, slot)
        self._pasts[slot], self._presents = self._presents, []


def make_cache(layout: KVLayout, model: ModelConfig, slots: int = 1) -> KVCache:
    return (SharedKVCache if layout.shared_buffer else ConcatKVCache)(layout, model, slots)

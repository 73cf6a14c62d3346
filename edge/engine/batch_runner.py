"""The batched decoder: B sequences over one session, one KV buffer per tensor shared by all.

In: token ids per slot. Out: logits. Two kinds of call, because onnxruntime's CPU
GroupQueryAttention refuses a batch above 1 when a call has several new tokens and a past:

    runner.prefill(slot, ids)      # batch 1: a block of a prompt, straight into the slot's rows
    runner.decode(tokens)          # batch m: one new token for each of slots 0..m-1

The cache is one (slots, kv_heads, capacity, head_dim) buffer per tensor (SharedKVCache),
reserved up front for `capacity` tokens per slot; a prefill binds one slot's rows (a
view), a decode the first m slots' rows with `seqlens_k` = each slot's own length. A slot
without a token this step (free, or between prompt blocks) gets a pad token whose entry,
written just past the slot's end, is never committed and is overwritten by its next call.
The runner knows nothing about requests, text or sampling (generation/scheduler.py does).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge.engine.decoder_runner import PREFILL_CHUNK, CallBuffers, DecoderRunner, prefill_blocks
from edge.engine.kv_cache import SharedKVCache
from edge.errors import ContextWindowError, InputError

PAD = 0  # the token fed to a slot that has none this step (its entry is never committed)


def refusal(decoder: DecoderRunner) -> str | None:
    """Why this decoder's graph cannot run slots of different lengths in one call (None: it can)."""
    if not decoder.manifest.graph.kv.shared_buffer:
        return (f"batched generation needs a fused graph (shared KV buffer); {decoder.manifest.graph.file} "
                "concatenates its cache")
    if decoder.model.positional.kind != "rotary":
        # Learned positions (GPT-2) are sliced from total_sequence_length, one range for the
        # whole batch; rotary ones come from each row's seqlens_k inside the attention.
        return (f"batched generation needs rotary positions; this {decoder.model.architecture} bundle has "
                f"{decoder.model.positional.kind} ones (one position range per call)")
    return None


class BatchRunner:
    def __init__(self, decoder: DecoderRunner, slots: int, capacity: int):
        """`slots` sequences of at most `capacity` tokens each, over `decoder`'s session."""
        if reason := refusal(decoder):
            raise InputError(f"{reason}: generate one request at a time.")
        if not 0 < capacity <= decoder.context_length:
            raise InputError(f"{{param}} must be in [1, {decoder.context_length}], got {capacity}.", param="capacity")
        self.session, self.model, self.slots, self.capacity = decoder.session, decoder.model, slots, capacity
        self.quantization = decoder.manifest.quantization.scheme  # "none", "int8", "int4"
        self.cache = SharedKVCache(decoder.manifest.graph.kv, decoder.model, slots)
        self.cache.reserve(capacity)  # mapped lazily: pages become resident only as slots fill
        self._prefill_io, self._decode_io = self.session.io_binding(), self.session.io_binding()
        self._prefill_calls = CallBuffers(decoder.model, decoder.rows)
        self._decode_calls = CallBuffers(decoder.model, decoder.rows)
        self._tokens = {m: np.full((m, 1), PAD, dtype=np.int64) for m in range(1, slots + 1)}  # m -> (m, 1)

    @property
    def bytes_per_slot(self) -> int:
        """KV bytes one slot holds when full: keys and values of every layer, float32."""
        return 2 * self.model.num_layers * self.model.num_kv_heads * self.capacity * self.model.head_dim * 4

    def length(self, slot: int) -> int:
        return self.cache.length(slot)

    def rewind_to(self, n: int, slot: int) -> None:
        self.cache.rewind_to(n, slot)

    def copy_prefix(self, source: int, slot: int, n: int) -> None:
        """The slot holds the source slot's first n tokens (a shared prompt prefix, not read again)."""
        self.cache.copy_prefix(source, slot, n)

    @staticmethod
    def blocks(count: int) -> list[int]:
        """The sizes `count` prompt tokens are prefilled in, as DecoderRunner runs them (the
        same blocks give the same logits as a solo run)."""
        return prefill_blocks(count)

    def prefill(self, slot: int, ids: Sequence[int]) -> np.ndarray:
        """Append `ids` (at most PREFILL_CHUNK) to the slot; logits (vocab,) after the last."""
        return self._call(slot, ids, keep=1)[0]

    def logits(self, slot: int, ids: Sequence[int]) -> np.ndarray:
        """Append `ids` (at most PREFILL_CHUNK: a token and the drafts after it) to the slot;
        logits (len(ids), vocab) at every one of their positions."""
        return self._call(slot, ids, keep=len(ids))

    def _call(self, slot: int, ids: Sequence[int], keep: int) -> np.ndarray:
        """One batch-1 call on the slot's rows (a view); logits (keep, vocab) of the last `keep`."""
        tokens = np.asarray(ids, dtype=np.int64)  # (seq,)
        if not 0 < tokens.size <= PREFILL_CHUNK:
            raise ValueError(f"a batch-1 call takes 1 to {PREFILL_CHUNK} tokens, got {tokens.size}")
        self._check_room(slot, tokens.size)
        self.cache.bind(self._prefill_io, tokens.size, slot)
        logits = self._prefill_calls.bind(self._prefill_io, tokens[None], keep)  # (1, keep, vocab)
        self.session.run_bound(self._prefill_io)
        self.cache.commit(tokens.size, slot)
        return logits[0].copy()  # (keep, vocab)

    def decode(self, tokens: Sequence[int | None]) -> np.ndarray:
        """One new token for each of slots 0..m-1 (None: the slot has none this step) in one
        call; logits (m, vocab), row i for slot i (meaningless where the token was None)."""
        m = len(tokens)
        fed = self._tokens[m]  # (m, 1)
        for slot, token in enumerate(tokens):
            fed[slot, 0] = PAD if token is None else token
            if token is not None:
                self._check_room(slot, 1)
        self.cache.bind_batch(self._decode_io, m)
        logits = self._decode_calls.bind(self._decode_io, fed, 1)  # (m, 1, vocab)
        self.session.run_bound(self._decode_io)
        for slot, token in enumerate(tokens):
            if token is not None:
                self.cache.commit(1, slot)
        return logits[:, 0].copy()  # (m, vocab); the next call of this shape overwrites the buffer

    def _check_room(self, slot: int, new_tokens: int) -> None:
        total = self.cache.length(slot) + new_tokens
        if total > self.capacity:
            raise ContextWindowError(f"{total} tokens do not fit a slot of {self.capacity}: use a smaller "
                                     "{param} or a larger KV budget per slot.", param="max_tokens")

"""The decoder: token ids in, next-token logits out, the KV cache kept in between.

Two phases: `prefill(ids)` runs the prompt in one graph call; `decode_step(id)` runs one
token. Both return the last position's logits (vocab,). `logits(ids)` returns every
position's, for perplexity. The engine knows nothing about text or sampling.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

from edge.bundle import Bundle
from edge.errors import ContextWindowError, InputError
from edge.kv_cache import ConcatKVCache, SharedKVCache, make_cache
from edge.manifest import Manifest
from edge.session import Session


class Decoder:
    def __init__(self, session: Session, manifest: Manifest):
        self.session = session
        self.model = manifest.model
        self.cache = make_cache(manifest.graph.kv, manifest.model)
        self._io = session.io_binding() if isinstance(self.cache, SharedKVCache) else None

    @classmethod
    def open(cls, bundle: Bundle, threads: int | None = None) -> Decoder:
        graph = bundle.manifest.graph
        session = Session(bundle.file(graph.file), graph.inputs, graph.outputs, threads)
        return cls(session, bundle.manifest)

    @property
    def context_length(self) -> int:
        return self.model.context_length

    @property
    def cache_length(self) -> int:
        return self.cache.length

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        """Append `ids` to the cache; logits (vocab,) after the last of them."""
        return self._run(ids, keep=1)[0]

    def decode_step(self, token_id: int) -> np.ndarray:
        return self._run([token_id], keep=1)[0]

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Append `ids`; logits (len(ids), vocab) at every one of their positions."""
        return self._run(ids, keep=len(ids))

    def rewind_to(self, n: int) -> None:
        self.cache.rewind_to(n)

    def reset(self) -> None:
        self.cache.reset()

    def _run(self, ids: Sequence[int], keep: int) -> np.ndarray:
        tokens = self._check(ids)[None, :]  # (1, seq)
        keep_array = np.array(keep, dtype=np.int64)
        if isinstance(self.cache, ConcatKVCache):
            outputs = self.session.run({"input_ids": tokens, "logits_to_keep": keep_array, **self.cache.feeds()})
            self.cache.update(outputs)
            logits = outputs["logits"]
        else:
            logits = self._run_bound(tokens, keep_array)
        self.cache.length += tokens.shape[1]
        return logits[0]  # (keep, vocab)

    def _run_bound(self, tokens: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """One step over the shared cache buffers; only the logits are copied out."""
        io, total = self._io, self.cache.length + tokens.shape[1]
        self.cache.bind(io, tokens.shape[1])
        io.bind_cpu_input("input_ids", tokens)
        io.bind_cpu_input("logits_to_keep", keep)
        io.bind_cpu_input("seqlens_k", np.array([total - 1], dtype=np.int32))
        io.bind_cpu_input("total_sequence_length", np.array(total, dtype=np.int32))
        logits = np.empty((1, int(keep), self.model.vocab_size), dtype=np.float32)
        io.bind_ortvalue_output("logits", ort.OrtValue.ortvalue_from_numpy(logits))
        self.session.run_bound(io)
        return logits

    def _check(self, ids: Sequence[int]) -> np.ndarray:
        tokens = np.asarray(ids, dtype=np.int64)  # (seq,)
        if tokens.ndim != 1 or tokens.size == 0:
            raise InputError("no tokens to run: give a non-empty prompt.")
        if tokens.min() < 0 or tokens.max() >= self.model.vocab_size:
            raise InputError(f"token ids must be in [0, {self.model.vocab_size}); got {tokens.min()}..{tokens.max()}.")
        total = self.cache.length + tokens.size
        if total > self.context_length:
            raise ContextWindowError(
                f"{total} tokens do not fit the context window of {self.context_length}. "
                "Use a shorter prompt or fewer --max-tokens."
            )
        return tokens

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
from edge.manifest import Manifest, ModelConfig
from edge.session import Session
from edge.token_rows import TokenRows

# Prompts run in graph calls of at most this many tokens. MatMulNBits and attention are
# both faster per token on short blocks than on one long one: 500 tokens prefilled at
# ~1.5-2.5x the speed in blocks of 48-64 than in one call on a 2-core Zen 3 (the
# activations stay in cache), and the attention scores stay small (peak RSS -30 MB at
# 1,000 tokens). benchmarks/README.md has the figures.
PREFILL_CHUNK = 64
IDS, ROWS = "input_ids", "inputs_embeds"  # the two forms of a graph's token input


class Decoder:
    def __init__(self, session: Session, manifest: Manifest, rows: TokenRows | None = None):
        """`rows`: the token table, for graphs that take inputs_embeds instead of input_ids."""
        if (ROWS in manifest.graph.inputs) != (rows is not None):
            raise ValueError(f"graph {manifest.graph.file} takes {ROWS if rows is None else IDS}: "
                             "open it with Decoder.open, or pass its TokenRows")
        self.session = session
        self.manifest = manifest
        self.model = manifest.model
        self.rows = rows
        self.cache = make_cache(manifest.graph.kv, manifest.model)
        self._io = session.io_binding() if isinstance(self.cache, SharedKVCache) else None
        self._step = _StepBuffers(manifest.model, rows) if self._io else None

    @classmethod
    def open(cls, bundle: Bundle, threads: int | None = None) -> Decoder:
        graph = bundle.manifest.graph
        session = Session(bundle.file(graph.file), graph.inputs, graph.outputs, threads)
        return cls(session, bundle.manifest, TokenRows.open(bundle) if ROWS in graph.inputs else None)

    def fork(self) -> Decoder:
        """Another decoder over the same session and token table, with a cache of its own."""
        return Decoder(self.session, self.manifest, self.rows)

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

    def reserve(self, tokens: int) -> None:
        """Size the cache for `tokens` in all (prompt + what will be generated) up front, so
        it does not grow (and copy) on the way; beyond that it still grows as needed."""
        self.cache.reserve(min(tokens, self.context_length))

    def rewind_to(self, n: int) -> None:
        self.cache.rewind_to(n)

    def reset(self) -> None:
        self.cache.reset()

    def _run(self, ids: Sequence[int], keep: int) -> np.ndarray:
        """Logits (keep, vocab) of the last `keep` of `ids`, run in blocks of PREFILL_CHUNK."""
        tokens = self._check(ids)  # (seq,)
        if tokens.size <= PREFILL_CHUNK:
            return self._call(tokens[None, :], keep)
        blocks = np.array_split(tokens, -(-tokens.size // PREFILL_CHUNK))  # near-equal sizes
        first_kept, start, kept = tokens.size - keep, 0, []
        for block in blocks:
            wanted = start + block.size - max(start, first_kept)  # positions of this block to keep
            logits = self._call(block[None, :], max(wanted, 1))
            if wanted > 0:
                kept.append(logits)
            start += block.size
        return kept[0] if len(kept) == 1 else np.concatenate(kept)

    def _call(self, tokens: np.ndarray, keep: int) -> np.ndarray:
        """One graph call: tokens (1, seq) -> logits (keep, vocab)."""
        keep_array = np.array(keep, dtype=np.int64)
        if isinstance(self.cache, ConcatKVCache):
            outputs = self.session.run({**self._tokens(tokens), "logits_to_keep": keep_array, **self.cache.feeds()})
            self.cache.update(outputs)
            logits = outputs["logits"]
        else:
            logits = self._run_bound(tokens, keep_array)
        self.cache.length += tokens.shape[1]
        return logits[0]  # (keep, vocab)

    def _run_bound(self, tokens: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """One call over the shared cache buffers; only the logits are copied out."""
        io, total = self._io, self.cache.length + tokens.shape[1]
        self.cache.bind(io, tokens.shape[1])
        if tokens.shape[1] == 1 and keep == 1:
            return self._step.run(self.session, io, int(tokens[0, 0]), total)
        self._step.unbind()
        for name, array in self._tokens(tokens).items():
            io.bind_cpu_input(name, array)
        io.bind_cpu_input("logits_to_keep", keep)
        io.bind_cpu_input("seqlens_k", np.array([total - 1], dtype=np.int32))
        io.bind_cpu_input("total_sequence_length", np.array(total, dtype=np.int32))
        logits = np.empty((1, int(keep), self.model.vocab_size), dtype=np.float32)
        io.bind_ortvalue_output("logits", ort.OrtValue.ortvalue_from_numpy(logits))
        self.session.run_bound(io)
        return logits

    def _tokens(self, tokens: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's token input for ids (1, seq): the ids, or their embedding rows."""
        if self.rows is None:
            return {IDS: tokens}
        return {ROWS: self.rows.lookup(tokens[0])[None]}

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


class _StepBuffers:
    """The inputs and the logits of a one-token step, bound once and rewritten in place:
    a decode step then makes no arrays and no bindings, only a copy of the logits out."""

    def __init__(self, model: ModelConfig, rows: TokenRows | None):
        self.rows = rows
        self.ids = np.zeros((1, 1), dtype=np.int64)
        self.embeds = np.zeros((1, 1, model.hidden_size), dtype=np.float32)
        self.keep = np.array(1, dtype=np.int64)
        self.seqlens = np.zeros(1, dtype=np.int32)  # (batch,) tokens in cache after the step - 1
        self.total = np.array(0, dtype=np.int32)
        self.logits = np.empty((1, 1, model.vocab_size), dtype=np.float32)
        self._bound = False

    def unbind(self) -> None:
        self._bound = False  # a longer call rebound the names to its own arrays

    def run(self, session: Session, io: ort.IOBinding, token: int, total: int) -> np.ndarray:
        if not self._bound:
            tokens = (IDS, self.ids) if self.rows is None else (ROWS, self.embeds)
            for name, array in (tokens, ("logits_to_keep", self.keep),
                                ("seqlens_k", self.seqlens), ("total_sequence_length", self.total)):
                io.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array))  # shares the memory
            io.bind_ortvalue_output("logits", ort.OrtValue.ortvalue_from_numpy(self.logits))
            self._bound = True
        self.ids[0, 0], self.seqlens[0], self.total[...] = token, total - 1, total
        if self.rows is not None:
            self.rows.lookup(self.ids[0], out=self.embeds[0])
        session.run_bound(io)
        return self.logits.copy()  # the next step overwrites the buffer

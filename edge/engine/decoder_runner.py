"""The decoder runner: token ids in, logits out, the KV cache kept in between.

Two phases: `prefill(ids)` runs the prompt in graph calls of at most PREFILL_CHUNK tokens;
`decode_step(id)` runs one token. Both return the last position's logits (vocab,).
`logits(ids)` returns every position's (perplexity, checking drafted tokens). Every call
goes through the KV cache's one interface (bind, run, commit), whatever its layout. The
runner knows nothing about text or sampling.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

from edge.bundle import Bundle
from edge.errors import BundleError, ContextWindowError, InputError
from edge.engine.kv_cache import make_cache
from edge.manifest import Manifest, ModelConfig
from edge.engine.session import Session
from edge.engine.token_rows import TokenRows

# Prompts run in graph calls of at most this many tokens. MatMulNBits and attention are
# both faster per token on short blocks than on one long one: 500 tokens prefilled at
# ~1.5-2.5x the speed in blocks of 48-64 than in one call on a 2-core Zen 3 (the
# activations stay in cache), and the attention scores stay small (peak RSS -30 MB at
# 1,000 tokens). benchmarks/README.md has the figures.
PREFILL_CHUNK = 64
IDS, ROWS = "input_ids", "inputs_embeds"  # the two forms of a graph's token input


def check_graph(session: Session, manifest: Manifest) -> None:
    """The manifest's layer, head and size counts against the shapes the graph declares."""
    model, kv = manifest.model, manifest.graph.kv
    hidden = {-1: ("model.hidden_size", model.hidden_size)}
    session.check_dims(ROWS, hidden)
    session.check_dims("logits", {-1: ("model.vocab_size", model.vocab_size)})
    if kv is None:
        return
    pasts = [n for n in manifest.graph.inputs if n.startswith(kv.past_key.split("{layer}")[0])
             and n.endswith(kv.past_key.split("{layer}")[-1])]
    layers = [kv.past_key.format(layer=i) for i in range(model.num_layers)]
    if sorted(pasts) != sorted(layers):
        raise BundleError(f"manifest.json field model.num_layers is {model.num_layers} but the graph has "
                          f"{len(pasts)} layers of KV cache. The bundle is inconsistent: re-export it.")
    axes = {kv.axes.index("kv_heads"): ("model.num_kv_heads", model.num_kv_heads),
            kv.axes.index("head_dim"): ("model.head_dim", model.head_dim)}
    for layer in range(model.num_layers):
        session.check_dims(kv.past_key.format(layer=layer), axes)
        session.check_dims(kv.past_value.format(layer=layer), axes)


class DecoderRunner:
    def __init__(self, session: Session, manifest: Manifest, rows: TokenRows | None = None):
        """`rows`: the token table, for graphs that take inputs_embeds instead of input_ids."""
        if (ROWS in manifest.graph.inputs) != (rows is not None):
            raise ValueError(f"graph {manifest.graph.file} takes {ROWS if rows is None else IDS}: "
                             "open it with DecoderRunner.open, or pass its TokenRows")
        self.session = session
        self.manifest = manifest
        self.model = manifest.model
        self.rows = rows
        self.cache = make_cache(manifest.graph.kv, manifest.model)
        self._io = session.io_binding()
        self._calls = CallBuffers(manifest.model, rows)

    @classmethod
    def open(cls, bundle: Bundle, threads: int | None = None) -> DecoderRunner:
        graph = bundle.manifest.graph
        session = Session(bundle.file(graph.file, "graph.file"), graph.inputs, graph.outputs, threads)
        check_graph(session, bundle.manifest)
        return cls(session, bundle.manifest, TokenRows.open(bundle) if ROWS in graph.inputs else None)

    def fork(self) -> DecoderRunner:
        """Another runner over the same session and token table, with a cache of its own."""
        return DecoderRunner(self.session, self.manifest, self.rows)

    @property
    def context_length(self) -> int:
        return self.model.context_length

    @property
    def quantization(self) -> str:
        """The bundle's quantization scheme: "none", "int8" or "int4"."""
        return self.manifest.quantization.scheme

    @property
    def cache_length(self) -> int:
        return self.cache.length()

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
            return self._call(tokens, keep)
        blocks = np.split(tokens, np.cumsum(prefill_blocks(tokens.size))[:-1])
        first_kept, start, kept = tokens.size - keep, 0, []
        for block in blocks:
            wanted = start + block.size - max(start, first_kept)  # positions of this block to keep
            logits = self._call(block, max(wanted, 1))
            if wanted > 0:
                kept.append(logits)
            start += block.size
        return kept[0] if len(kept) == 1 else np.concatenate(kept)

    def _call(self, tokens: np.ndarray, keep: int) -> np.ndarray:
        """One graph call: tokens (seq,) appended to the cache -> logits (keep, vocab)."""
        self.cache.bind(self._io, tokens.size)
        logits = self._calls.bind(self._io, tokens[None], keep)
        self.session.run_bound(self._io)
        self.cache.commit(tokens.size)
        return logits[0].copy()  # (keep, vocab); the next call of this shape overwrites the buffer

    def _check(self, ids: Sequence[int]) -> np.ndarray:
        tokens = np.asarray(ids, dtype=np.int64)  # (seq,)
        if tokens.ndim != 1 or tokens.size == 0:
            raise InputError("no tokens to run: give a non-empty prompt.")
        if tokens.min() < 0 or tokens.max() >= self.model.vocab_size:
            raise InputError(f"token ids must be in [0, {self.model.vocab_size}); got {tokens.min()}..{tokens.max()}.")
        total = self.cache.length() + tokens.size
        if total > self.context_length:
            raise ContextWindowError(
                f"{total} tokens do not fit the context window of {self.context_length}. "
                "Use a shorter prompt or fewer new tokens.", param="max_tokens"
            )
        return tokens


def prefill_blocks(count: int) -> list[int]:
    """Sizes of the graph calls that prefill `count` tokens: near-equal, at most PREFILL_CHUNK.
    Example: 130 -> [44, 43, 43]"""
    calls = -(-count // PREFILL_CHUNK)
    return [len(b) for b in np.array_split(np.empty(count), calls)]


class CallBuffers:
    """The token input, logits_to_keep and logits of graph calls, one set of arrays per call
    shape (batch, seq, keep), made and bound once: a decode step then makes no arrays and no
    bindings, only a copy of the logits out. A call of another shape rebinds the names."""

    MAX_SHAPES = 16  # prompt blocks and draft lengths come in a handful of shapes

    def __init__(self, model: ModelConfig, rows: TokenRows | None):
        self.model, self.rows = model, rows
        self._shapes: dict[tuple[int, int, int], tuple] = {}  # (batch, seq, keep) -> (tokens, logits, keep, values)
        self._bound: tuple[int, int, int] | None = None

    def bind(self, io: ort.IOBinding, tokens: np.ndarray, keep: int) -> np.ndarray:
        """Write `tokens` (batch, seq) into their input buffer, bound with the logits
        (batch, keep, vocab) it returns (filled by the run)."""
        shape = (*tokens.shape, keep)
        if shape not in self._shapes:
            if len(self._shapes) >= self.MAX_SHAPES:
                self._shapes.clear()
            self._shapes[shape] = self._make(*shape)
        token_input, logits, _, values = self._shapes[shape]
        if self.rows is None:
            token_input[...] = tokens
        else:
            self.rows.lookup(tokens.ravel(), out=token_input.reshape(tokens.size, -1))  # a view: (batch * seq, hidden)
        if self._bound != shape:
            (tokens_name, tokens_value), keep_value, logits_value = values
            io.bind_ortvalue_input(tokens_name, tokens_value)
            io.bind_ortvalue_input("logits_to_keep", keep_value)
            io.bind_ortvalue_output("logits", logits_value)
            self._bound = shape
        return logits

    def _make(self, batch: int, seq: int, keep: int) -> tuple:
        if self.rows is None:
            name, token_input = IDS, np.zeros((batch, seq), dtype=np.int64)  # (batch, seq)
        else:
            name, token_input = ROWS, np.zeros((batch, seq, self.model.hidden_size), dtype=np.float32)  # (batch, seq, hidden)
        keep_array = np.array(keep, dtype=np.int64)
        logits = np.empty((batch, keep, self.model.vocab_size), dtype=np.float32)  # (batch, keep, vocab)
        as_value = ort.OrtValue.ortvalue_from_numpy  # shares the numpy memory
        values = [(name, as_value(token_input)), as_value(keep_array), as_value(logits)]
        return token_input, logits, keep_array, values  # the arrays outlive their OrtValues

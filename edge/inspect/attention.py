"""Attention weights: which earlier tokens each token draws on, per layer and head.

In: a bundle with an inspection graph (`Inspection.graph`: the same weights in plain ops,
outputting attention.{layer}; a decoder or an encoder) and token ids. Out: weights (layers, heads, seq, seq), each
row a softmax over the keys (sums to 1; zero above the diagonal for causal models), and a
`View`: one head, one layer's mean over heads, or every layer as a grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge.bundle import Bundle
from edge.errors import BundleError, InputError
from edge.inspect import tables
from edge.engine.encoder_runner import padded_inputs
from edge.engine.kv_cache import make_cache
from edge.manifest import Inspection, ModelConfig
from edge.tokenizer import Encoding
from edge.engine.session import Session

TOP = 3  # most-attended earlier tokens listed per token


class AttentionProbe:
    def __init__(self, session: Session, model: ModelConfig, inspection: Inspection):
        self.session = session
        self.model = model
        self.inspection = inspection

    @classmethod
    def open(cls, bundle: Bundle, threads: int | None = None) -> AttentionProbe:
        found = tables.inspection(bundle)
        if found.graph is None:
            raise BundleError(f"bundle {bundle.path} has no inspection graph. Re-export it with `edge export`.")
        session = Session(bundle.file(found.graph.file, "inspect.graph.file"), found.graph.inputs, found.graph.outputs, threads)
        return cls(session, bundle.manifest.model, found)

    def weights(self, ids: Sequence[int]) -> np.ndarray:
        """(layers, heads, seq, seq) attention probabilities for one pass over `ids`."""
        tokens = np.asarray(ids, dtype=np.int64)[None, :]  # (1, seq)
        if tokens.size == 0:
            raise InputError("the text is empty: give some text to inspect.")
        if tokens.size > self.model.context_length:
            raise InputError(f"{tokens.size} tokens exceed the context length {self.model.context_length}; "
                             "use a shorter text.")
        outputs = self.session.run(self._feeds(tokens))
        return np.stack([outputs[f"attention.{layer}"][0] for layer in range(self.model.num_layers)])

    def _feeds(self, tokens: np.ndarray) -> dict[str, np.ndarray]:
        """Decoders: the prompt over an empty KV cache. Encoders: one unpadded sentence."""
        kv = self.inspection.graph.kv
        if kv is not None:
            empty = np.zeros((1, self.model.num_kv_heads, 0, self.model.head_dim), dtype=np.float32)  # no past
            past = {name: empty for name in make_cache(kv, self.model).past_names}
            return {"input_ids": tokens, "logits_to_keep": np.array(1, dtype=np.int64), **past}
        ids = tokens[0].tolist()
        sentence = Encoding(ids, [0] * len(ids), [1] * len(ids), truncated=False)
        arrays = padded_inputs([sentence], 0)
        return {name: arrays[name] for name in self.inspection.graph.inputs}


@dataclass(frozen=True)
class View:
    title: str
    panels: list[tuple[str, np.ndarray]]  # (caption, (seq, seq) weights): one, or one per layer
    summary: np.ndarray  # (seq, seq): what the terminal's top-3 lists come from


def select(weights: np.ndarray, layer: int | None, head: int | None) -> View:
    """One head (layer and head), a layer's mean over heads (layer), or a grid of layers."""
    layers, heads = weights.shape[:2]
    if layer is not None and not 0 <= layer < layers:
        raise InputError(f"{{param}} {layer} is out of range: this model has {layers} layers (0..{layers - 1}).",
                         param="layer")
    if head is not None and not 0 <= head < heads:
        raise InputError(f"{{param}} {head} is out of range: this model has {heads} heads (0..{heads - 1}).",
                         param="head")
    per_layer = weights.mean(axis=1) if head is None else weights[:, head]  # (L, S, S)
    what = "mean over heads" if head is None else f"head {head}"
    if layer is not None:
        return View(f"layer {layer}, {what}", [(f"layer {layer}", per_layer[layer])], per_layer[layer])
    panels = [(f"layer {i}", per_layer[i]) for i in range(layers)]
    return View(f"every layer, {what}", panels, per_layer.mean(axis=0))


def top_sources(summary: np.ndarray, causal: bool, top: int = TOP) -> list[list[tuple[int, float]]]:
    """For each token: its `top` most-attended other tokens (earlier ones when causal), as
    (position, weight), heaviest first."""
    seq = summary.shape[0]
    rows = []
    for i in range(seq):
        keys = np.arange(i) if causal else np.delete(np.arange(seq), i)
        order = keys[np.argsort(-summary[i, keys], kind="stable")[:top]]
        rows.append([(int(j), float(summary[i, j])) for j in order])
    return rows

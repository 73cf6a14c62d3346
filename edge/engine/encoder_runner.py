"""The encoder: padded token ids in, one vector per token out.

In: a batch of `Encoding`s (ids, type ids, mask; unpadded). Out: last_hidden_state
(batch, seq, hidden) and the padding mask it was computed under. Only the inputs the
graph declares are fed (a graph without token_type_ids gets none).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge.bundle import Bundle
from edge.manifest import Manifest
from edge.engine.session import Session
from edge.tokenizer import Encoding


class EncoderRunner:
    def __init__(self, session: Session, manifest: Manifest):
        self.session = session
        self.inputs = manifest.graph.inputs
        self.output = manifest.graph.outputs[0]
        self.pad_id = manifest.tokenizer.pad_token_id or 0

    @classmethod
    def open(cls, bundle: Bundle, threads: int | None = None) -> EncoderRunner:
        graph = bundle.manifest.graph
        session = Session(bundle.file(graph.file, "graph.file"), graph.inputs, graph.outputs, threads)
        session.check_dims(graph.outputs[0], {-1: ("model.hidden_size", bundle.manifest.model.hidden_size)})
        return cls(session, bundle.manifest)

    def run(self, batch: Sequence[Encoding]) -> tuple[np.ndarray, np.ndarray]:
        """(last_hidden_state (B, S, H), attention_mask (B, S))."""
        arrays = padded_inputs(batch, self.pad_id)
        hidden = self.session.run({name: arrays[name] for name in self.inputs})[self.output]  # only what it declares
        return hidden, arrays["attention_mask"]


def padded_inputs(batch: Sequence[Encoding], pad_id: int) -> dict[str, np.ndarray]:
    """An encoder's three inputs, right-padded (B, S) int64, S = the longest encoding.
    Example: ids [[5, 6], [7]], pad 0 -> input_ids [[5, 6], [7, 0]], attention_mask [[1, 1], [1, 0]]"""
    seq = max(len(e.ids) for e in batch)
    arrays = {
        "input_ids": np.full((len(batch), seq), pad_id, dtype=np.int64),
        "attention_mask": np.zeros((len(batch), seq), dtype=np.int64),
        "token_type_ids": np.zeros((len(batch), seq), dtype=np.int64),
    }
    for row, e in enumerate(batch):
        n = len(e.ids)
        arrays["input_ids"][row, :n] = e.ids
        arrays["attention_mask"][row, :n] = e.attention_mask
        arrays["token_type_ids"][row, :n] = e.type_ids
    return arrays

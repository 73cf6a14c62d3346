"""One bundle opened once for inspection: the API behind `edge inspect` and the examples.

    inspector = Inspector("~/.cache/edge/bundles/smollm2-135m-instruct-int8")
    inspector.tokens("Hello")                     # [Token(0, 19556, "Hello", "Hello", b"Hello")]
    inspector.neighbors("king", k=5)              # (Word, [Neighbor(" King", 0.82), ...])
    inspector.analogy("king", "man", "woman")     # (words, [Neighbor(" queen", 0.73), ...])
    inspector.positions(64)                       # Positions(kind, table, similarity)
    inspector.attention("The cat sat")            # (tokens, weights (layers, heads, seq, seq))

The embedding table and the inspection graph are loaded on first use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.bundle import open_bundle
from edge.inspect import tables
from edge.inspect.attention import AttentionProbe
from edge.inspect.embeddings import Embeddings, Neighbor, Word
from edge.inspect.positions import Positions, positions
from edge.inspect.tokens import Token, describe, encode
from edge.tokenizer import load_tokenizer


class Inspector:
    def __init__(self, path: str | Path):
        self.bundle = open_bundle(path)
        self.tokenizer = load_tokenizer(self.bundle.file(self.bundle.manifest.tokenizer.file, "tokenizer.file"))
        self._embeddings: Embeddings | None = None
        self._probe: AttentionProbe | None = None

    def tokens(self, text: str) -> list[Token]:
        """The tokens of `text` as the model reads it (see tokens.encode)."""
        return describe(self.tokenizer, encode(self.tokenizer, self.bundle.manifest, text))

    @property
    def embeddings(self) -> Embeddings:
        if self._embeddings is None:
            self._embeddings = Embeddings(tables.token_embeddings(self.bundle), self.tokenizer)
        return self._embeddings

    def neighbors(self, word: str, k: int = 10) -> tuple[Word, list[Neighbor]]:
        return self.embeddings.neighbors(word, k)

    def analogy(self, a: str, b: str, c: str, k: int = 5) -> tuple[list[Word], list[Neighbor]]:
        return self.embeddings.analogy(a, b, c, k)

    def positions(self, n: int = 64) -> Positions:
        return positions(self.bundle, n)

    @property
    def causal(self) -> bool:
        return tables.inspection(self.bundle).causal

    def attention(self, text: str) -> tuple[list[Token], np.ndarray]:
        """The tokens of `text` and the attention weights (layers, heads, seq, seq) over them."""
        rows = self.tokens(text)
        if self._probe is None:
            self._probe = AttentionProbe.open(self.bundle)
        return rows, self._probe.weights([r.id for r in rows])

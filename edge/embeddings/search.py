"""Search an index: a query in, the best-matching chunks out, best first.

    index = SearchIndex.open("docs.index")
    model = edge.load(index.bundle)
    for hit in search(index, model, "how do I export a model?", k=3):
        print(f"{hit.score:.3f} {hit.file}:{hit.start_line}-{hit.end_line}")

The query is embedded by the same model as the index (checked), and scored against every
chunk by cosine similarity (the stored vectors are unit length).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.embeddings.model import EmbeddingModel
from edge.errors import InputError
from edge.embeddings.index import SearchIndex
from edge.embeddings.pooling import l2_normalize


@dataclass(frozen=True)
class SearchHit:
    score: float  # cosine similarity, -1..1
    file: str
    start_line: int
    end_line: int
    text: str

    def snippet(self, width: int = 240) -> str:
        """The chunk's text on one line, cut to `width` characters."""
        flat = " ".join(self.text.split())
        return flat if len(flat) <= width else flat[: width - 1].rstrip() + "…"


def search(index: SearchIndex, model: EmbeddingModel, query: str, k: int = 5) -> list[SearchHit]:
    if not isinstance(query, str) or not query.strip():
        raise InputError("the query is empty: give some words to search for.")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}.")
    index.check_model(model)
    vector = l2_normalize(model.embed([query]))[0]  # (dim,)
    scores = index.vectors @ vector  # (N,)
    k = min(k, len(scores))
    best = np.argpartition(-scores, k - 1)[:k] if k else np.empty(0, np.int64)
    best = best[np.argsort(-scores[best], kind="stable")]
    entries = [index.entries[i] for i in best]
    return [SearchHit(float(scores[i]), e.file, e.start_line, e.end_line, e.text) for i, e in zip(best, entries)]

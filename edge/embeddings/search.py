"""Search an index: a query in, the best-matching chunks out, best first.

    index = SearchIndex.open("docs.index")
    model = edge.load(index.bundle)
    for hit in search(index, model, "how do I export a model?", k=3):
        print(f"{hit.score:.3f} {hit.file}:{hit.start_line}-{hit.end_line}")

The query is embedded by the same model as the index (checked), and scored by cosine
similarity (the stored vectors are unit length): against every chunk, or, in an index with
an ANN graph, against the graph's candidates (SearchIndex.nearest).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge.embeddings.index import SearchIndex
from edge.embeddings.pooling import l2_normalize
from edge.errors import InputError

if TYPE_CHECKING:  # onnxruntime comes with the model, after the index is open (a smaller peak RSS)
    from edge.embeddings.model import EmbeddingModel


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
    rows, scores = index.nearest(vector, k)  # (<= k,) each, best first
    hits = []
    for row, score in zip(rows, scores):
        e = index.entry(int(row))
        hits.append(SearchHit(float(score), e.file, e.start_line, e.end_line, e.text))
    return hits

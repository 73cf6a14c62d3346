"""Hybrid retrieval for `ask`: the embedding's cosine and BM25 over words, fused by rank.

A small sentence encoder matches meaning but misses rare exact words a question names (a
flag, a file, a number: "`--overlap`", "compare.py", "1 MiB"); BM25 finds those. Reciprocal
rank fusion (Cormack et al., 2009) adds 1 / (60 + rank) from each list, so neither score's
scale matters. Hits keep the cosine as their score (what `edge search` shows).

    hits = hybrid_search(index, model, "what does --overlap do?", k=4)   # [SearchHit], fused order
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

from edge.embeddings.index import SearchIndex
from edge.embeddings.model import EmbeddingModel
from edge.embeddings.pooling import l2_normalize
from edge.embeddings.search import SearchHit

RRF_K = 60  # the constant of reciprocal rank fusion: ranks past ~60 count little
BM25_K1, BM25_B = 1.2, 0.75
_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """Example: "Run `edge index` -o x.idx" -> ["run", "edge", "index", "o", "x", "idx"]"""
    return _WORD.findall(text.lower())


def bm25(chunks: list[list[str]], query: list[str]) -> np.ndarray:
    """BM25 of each chunk (a list of words) for the query's words: (N,) float64."""
    n = len(chunks)
    lengths = np.array([len(c) for c in chunks], dtype=np.float64)  # (N,)
    average = lengths.mean() if n else 0.0
    scores = np.zeros(n)
    counts = [Counter(c) for c in chunks]
    for term in set(query):
        tf = np.array([c.get(term, 0) for c in counts], dtype=np.float64)  # (N,)
        df = int((tf > 0).sum())
        if df == 0:
            continue
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        scores += idf * tf * (BM25_K1 + 1) / (tf + BM25_K1 * (1 - BM25_B + BM25_B * lengths / max(average, 1e-9)))
    return scores


def fuse(*scores: np.ndarray) -> np.ndarray:
    """Reciprocal rank fusion of score arrays (higher is better): (N,).

    Example: ([3, 2, 1], [1, 3, 2]) -> ranks (0, 1, 2) and (2, 0, 1) -> index 1 ranks best
    """
    total = np.zeros(len(scores[0]))
    for s in scores:
        ranks = np.empty(len(s), dtype=np.int64)
        ranks[np.argsort(-np.asarray(s), kind="stable")] = np.arange(len(s))
        total += 1.0 / (RRF_K + 1 + ranks)
    return total


def hybrid_search(index: SearchIndex, model: EmbeddingModel, query: str, k: int) -> list[SearchHit]:
    index.check_model(model)
    cosine = index.vectors @ l2_normalize(model.embed([query]))[0]  # (N,)
    lexical = bm25([words(e.text) for e in index.entries], words(query))  # (N,)
    best = np.argsort(-fuse(cosine, lexical), kind="stable")[:k]
    return [SearchHit(float(cosine[i]), e.file, e.start_line, e.end_line, e.text)
            for i, e in ((i, index.entries[i]) for i in best)]

"""Hybrid retrieval for `ask`: the embedding's cosine and BM25 over words, mixed by score.

A small sentence encoder matches meaning but misses rare exact words a question names (a
flag, a file, a number: "`--overlap`", "compare.py", "1 MiB"); BM25 finds those. Each score
is scaled to 0..1 over the index (min-max), and the chunk's rank is cosine + LEXICAL_WEIGHT
x BM25: unlike reciprocal rank fusion, a chunk BM25 does not match gets nothing from it, and
a strong match counts more than a weak one (on the shipped question set, chosen on one half
of it: see benchmarks/README.md). Both scores read the chunk's section heading with its
text (`Entry.searchable`). Ties go to the higher cosine, then to the file and line, never
to where the chunk sits in the index. Hits keep the cosine as their score (what `edge
search` shows).

    hits = hybrid_search(index, model, "what does --overlap do?", k=4)   # [SearchHit], best first
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

LEXICAL_WEIGHT = 0.5  # BM25's share against the cosine's 1, both scaled to 0..1
BM25_K1, BM25_B = 1.2, 0.75
# Above WHOLE_ROWS chunks a question ranks the cosine's CANDIDATES best rows, not the whole
# index (reading 100k chunks and their vectors per question would cost seconds and the RSS).
WHOLE_ROWS = 50_000
CANDIDATES = 512
_WORD = re.compile(r"\w+")
# Words a question is made of that say nothing of its subject; BM25 would reward a chunk for them.
STOP_WORDS = frozenset(
    "a an and are as at be by can do does for from how i if in into is it its me my no not of on or than that "
    "the their then there these this to what when where which who why will with you your".split())


def terms(text: str) -> list[str]:
    """BM25's terms: words, lowercased, stop words out, plurals and verb endings cut (`stem`).

    Example: "Run `edge index` -o x.idx; it embeds files" -> ["run", "edge", "index", "o", "x", "idx", "embed", "file"]
    """
    return [stem(w) for w in _WORD.findall(text.lower()) if w not in STOP_WORDS]


def stem(word: str) -> str:
    """A light English stemmer, so "chunks"/"chunk" and "matches"/"matched" meet; short words stay.

    Examples: "chunks" -> "chunk", "matches" -> "match", "lines" -> "line", "running" -> "runn", "bus" -> "bus"
    """
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            if suffix == "es" and not word.endswith(("ses", "xes", "zes", "ches", "shes")):
                continue  # "lines" -> "line" (by "s" below), not "lin"
            return word[: -len(suffix)]
    return word


def bm25(chunks: list[list[str]], query: list[str]) -> np.ndarray:
    """BM25 of each chunk (a list of terms) for the query's terms: (N,) float64."""
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


def scaled(scores: np.ndarray) -> np.ndarray:
    """Min-max to 0..1; all equal -> all 0 (no information). Example: [2, 4, 3] -> [0, 1, 0.5]"""
    if not len(scores):
        return np.zeros(0)
    low, high = float(scores.min()), float(scores.max())
    return (scores - low) / (high - low) if high > low else np.zeros(len(scores))


def mix(cosine: np.ndarray, lexical: np.ndarray) -> np.ndarray:
    """The hybrid score of each chunk: (N,). Example: ([.2, .6, .4], [0, 1, 4]) -> [0, 1.125, 1]"""
    return scaled(cosine) + LEXICAL_WEIGHT * scaled(lexical)


def ranked(score: np.ndarray, cosine: np.ndarray, entries) -> list[int]:
    """Chunk numbers best first: by score, then cosine, then file and first line."""
    return sorted(range(len(score)), key=lambda i: (-score[i], -cosine[i], entries[i].file, entries[i].start_line))


def hybrid_search(index: SearchIndex, model: EmbeddingModel, query: str, k: int) -> list[SearchHit]:
    """The k best chunks by the hybrid score. An index of more than WHOLE_ROWS chunks is not
    read whole for each question: the cosine's CANDIDATES best rows (index.nearest: exact, or
    the ANN graph's) are the pool both scores rank, BM25 then weighing words within the pool."""
    index.check_model(model)
    vector = l2_normalize(model.embed([query]))[0]  # (dim,)
    if len(index.entries) > WHOLE_ROWS:
        rows, cosine = index.nearest(vector, CANDIDATES)  # (c,) each
        entries = [index.entry(int(row)) for row in rows]
    else:
        cosine = index.vectors @ vector  # (N,)
        entries = index.all_entries()  # read once: ranked() looks at every chunk's file and line
    lexical = bm25([terms(e.searchable) for e in entries], terms(query))  # (N,) or (c,)
    best = ranked(mix(cosine, lexical), cosine, entries)[:k]
    return [SearchHit(float(cosine[i]), e.file, e.start_line, e.end_line, e.text)
            for i, e in ((i, entries[i]) for i in best)]

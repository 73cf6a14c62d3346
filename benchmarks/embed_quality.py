"""Embedding quality figures (the slow tests assert thresholds; this prints the numbers):
an edge bundle against sentence-transformers fp32 on all-MiniLM-L6-v2.

- cosine between the two vectors of each text: the held-out text's sentences and the first
  500 non-empty lines of the tokenizer corpus (scripts, emoji, code, numbers, long runs);
- top-1 retrieval agreement: documents are the exporter's sentences and the held-out
  sentences, each query is the first six words of one document.

    python benchmarks/embed_quality.py [BUNDLE]       # default: the default embedding bundle
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the shared text corpus

import edge  # noqa: E402
from edge.paths import default_embedding_bundle  # noqa: E402
from export.fetch import MINILM, fetch  # noqa: E402
from export.quality import heldout_text, sentences  # noqa: E402
from text_corpus import corpus_lines  # noqa: E402


def main() -> None:
    from sentence_transformers import SentenceTransformer

    model = edge.load(sys.argv[1] if len(sys.argv) > 1 else default_embedding_bundle())
    oracle = SentenceTransformer(str(fetch(MINILM)), device="cpu")
    held = [s for s in re.split(r"(?<=[.!?])\s+", heldout_text()) if s.strip()]
    texts = held + [line for line in corpus_lines() if line.strip()][:500]
    ours, theirs = model.embed(texts), oracle.encode(texts)  # (n, 384) each
    cosine = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    print(f"cosine to sentence-transformers fp32 over {len(texts)} texts: mean {cosine.mean():.5f}, "
          f"min {cosine.min():.5f}")
    docs = sentences() + held
    queries = [" ".join(d.split()[:6]) for d in docs]
    top_ours = (model.embed(queries) @ model.embed(docs).T).argmax(1)
    top_theirs = (oracle.encode(queries) @ oracle.encode(docs).T).argmax(1)
    right = np.arange(len(docs))
    print(f"top-1 retrieval agreement over {len(queries)} queries: {(top_ours == top_theirs).mean():.2%} "
          f"(right document first: edge {(top_ours == right).mean():.1%}, "
          f"sentence-transformers {(top_theirs == right).mean():.1%})")


if __name__ == "__main__":
    main()

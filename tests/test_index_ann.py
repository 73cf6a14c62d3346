"""Large-index search on the tiny random BERT, with the size threshold lowered so a few
chunks count as large: the ANN graph is built and used, gives brute force's hits (the
oracle: every row is a candidate at this size), is checked as hostile input, and its
absence (no usearch) falls back to brute force with one note."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.cli import main
from edge.embeddings import ann
from edge.embeddings.index import META, SearchIndex, build_index
from edge.embeddings.pooling import l2_normalize
from edge.embeddings.search import search
from edge.errors import SearchIndexError

HAS_USEARCH = importlib.util.find_spec("usearch") is not None
needs_usearch = pytest.mark.skipif(not HAS_USEARCH and not os.environ.get("CI"),
                                   reason="the `scale` extra (usearch) is not installed")
WORDS = "cat dog bird fish tree river stone cloud lamp chair road bread".split()


@pytest.fixture
def docs(tmp_path) -> Path:
    root = tmp_path / "docs"
    root.mkdir()
    for i in range(6):
        paragraphs = [" ".join(WORDS[(i * 5 + j * 3 + w) % len(WORDS)] for w in range(6)) for j in range(8)]
        (root / f"f{i}.txt").write_text("\n\n".join(paragraphs) + "\n")
    return root


@pytest.fixture
def large(monkeypatch):
    """Any index of 10 chunks or more counts as large."""
    monkeypatch.setattr(ann, "MIN_ROWS", 10)


def _no_usearch(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "usearch" else real(name, *a))


@needs_usearch
def test_a_large_index_gets_a_graph_whose_hits_are_brute_forces(docs, tmp_path, bert, large):
    report = build_index(tmp_path / "idx", [docs], bert)
    index = SearchIndex.open(tmp_path / "idx")
    assert report.chunks >= 12 and index.meta["ann"]["rows"] == report.chunks and index.graph is not None
    exact = SearchIndex.open(tmp_path / "idx", exact=True)
    assert exact.graph is None
    vectors = exact.vectors  # (N, dim): the oracle scores every row by hand
    for query in ("cat dog bird", "river stone", "bread lamp chair road"):
        q = l2_normalize(bert.embed([query]))[0]
        want = np.lexsort((np.arange(len(vectors)), -(vectors @ q)))[:5]
        rows, scores = index.nearest(q, 5)
        np.testing.assert_array_equal(rows, want)
        np.testing.assert_allclose(scores, vectors[want] @ q, rtol=1e-6)
        assert [h.text for h in search(index, bert, query, k=5)] == [index.entries[int(r)].text for r in want]


@needs_usearch
def test_below_the_threshold_there_is_no_graph(docs, tmp_path, bert):
    build_index(tmp_path / "idx", [docs], bert)
    assert SearchIndex.open(tmp_path / "idx").meta["ann"] is None


def test_without_usearch_a_large_index_is_searched_exactly_with_one_note(docs, tmp_path, bert, large, monkeypatch,
                                                                         capsys, tiny_bert_bundle_int8):
    _no_usearch(monkeypatch)
    assert main(["index", str(docs), "-o", str(tmp_path / "idx"), "-m", str(tiny_bert_bundle_int8)]) == 0
    err = capsys.readouterr().err
    assert err.count("note: usearch is not installed") == 1 and "Traceback" not in err
    assert SearchIndex.open(tmp_path / "idx").meta["ann"] is None
    assert main(["search", str(tmp_path / "idx"), "cat dog", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 5


@needs_usearch
def test_an_index_with_a_graph_opened_without_usearch_notes_it_and_stays_exact(docs, tmp_path, bert, large,
                                                                                monkeypatch, capsys):
    build_index(tmp_path / "idx", [docs], bert)
    with_graph = search(SearchIndex.open(tmp_path / "idx"), bert, "cat dog", k=5)
    _no_usearch(monkeypatch)
    index = SearchIndex.open(tmp_path / "idx")
    assert index.graph is None and len(index.notes) == 1 and "searched exactly" in index.notes[0]
    assert search(index, bert, "cat dog", k=5) == with_graph
    assert main(["search", str(tmp_path / "idx"), "cat dog"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("note: usearch is not installed")


def _ann_file(out: Path) -> tuple[Path, dict]:
    meta = json.loads((out / META).read_text())
    return out / meta["ann"]["file"], meta


def _with_checksum(out: Path, meta: dict, file: Path) -> None:
    from edge.bundle import sha256

    meta["checksums"][file.name] = sha256(file)
    (out / META).write_text(json.dumps(meta))


GRAPH_DAMAGE = {
    "truncated, checksum stale": (lambda f: f.write_bytes(f.read_bytes()[:200]), False, "checksum"),
    "zeros, checksum matching": (lambda f: f.write_bytes(b"\0" * f.stat().st_size), True, "header"),
    "empty, checksum matching": (lambda f: f.write_bytes(b""), True, ""),
    "a pickle, checksum matching": (lambda f: f.write_bytes(b"\x80\x04\x95" + b"\0" * 64), True, ""),
}


@needs_usearch
@pytest.mark.parametrize("case", GRAPH_DAMAGE)
def test_a_damaged_graph_is_one_clear_error(docs, tmp_path, bert, large, capsys, case):
    out = tmp_path / "idx"
    build_index(out, [docs], bert)
    damage, update_checksum, said = GRAPH_DAMAGE[case]
    file, meta = _ann_file(out)
    damage(file)
    if update_checksum:
        _with_checksum(out, meta, file)
    assert main(["search", str(out), "cat dog"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: index ") and "is corrupt" in err and said in err
    assert main(["search", str(out), "cat dog", "--exact"]) == 0  # brute force never opens the graph


@needs_usearch
@pytest.mark.parametrize("field, value", [("rows", 5), ("dim", 7), ("dtype", "f32"), ("metric", "l2sq")])
def test_a_graph_described_otherwise_is_refused(docs, tmp_path, bert, large, capsys, field, value):
    out = tmp_path / "idx"
    build_index(out, [docs], bert)
    meta = json.loads((out / META).read_text())
    meta["ann"][field] = value
    (out / META).write_text(json.dumps(meta))
    assert main(["search", str(out), "cat dog"]) == 1
    assert "is corrupt" in capsys.readouterr().err


@needs_usearch
def test_rows_the_graph_returns_outside_the_index_are_dropped(docs, tmp_path, bert, large, monkeypatch):
    build_index(tmp_path / "idx", [docs], bert)
    index = SearchIndex.open(tmp_path / "idx")
    real = index.graph.index.search

    class Hostile:
        def __init__(self, keys):
            self.keys = np.concatenate([keys, np.array([2**63 - 1, len(index.entries)], np.uint64)])

    monkeypatch.setattr(index.graph.index, "search", lambda *a, **k: Hostile(real(*a, **k).keys))
    rows, _ = index.nearest(l2_normalize(bert.embed(["cat"]))[0], 5)
    assert rows.max() < len(index.entries)


@needs_usearch
def test_an_update_rebuilds_the_graph_and_removes_the_old_one(docs, tmp_path, bert, large):
    out = tmp_path / "idx"
    build_index(out, [docs], bert)
    first, _ = _ann_file(out)
    (docs / "f0.txt").write_text("A different file now.\n")
    build_index(out, [docs], bert)
    second, meta = _ann_file(out)
    assert not first.exists() and second.exists() and meta["ann"]["rows"] == len(SearchIndex.open(out).entries)


@needs_usearch
def test_edge_search_over_a_graph_in_a_fresh_process(docs, tmp_path, bert, large):
    """`edge search` as a user runs it: a new process opens the graph (usearch) before it loads
    the encoder (onnxruntime). onnxruntime loaded after usearch crashed the process (segfault)."""
    build_index(tmp_path / "idx", [docs], bert)
    done = subprocess.run([sys.executable, "-m", "edge.cli", "search", str(tmp_path / "idx"), "river stone", "-k", "3",
                           "--json"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert done.returncode == 0, done.stderr
    want = search(SearchIndex.open(tmp_path / "idx"), bert, "river stone", k=3)
    assert [(h["file"], h["text"]) for h in json.loads(done.stdout)] == [(h.file, h.text) for h in want]


@needs_usearch
def test_a_search_after_the_graphs_pages_were_unmapped_finds_the_same_hits(docs, tmp_path, bert, large):
    """view() leaves none of the graph's pages mapped, a search maps some, release() unmaps
    them again, and a search after it returns the same candidates, in the same order, and
    brute force's hits."""
    build_index(tmp_path / "idx", [docs], bert)
    index, exact = SearchIndex.open(tmp_path / "idx"), SearchIndex.open(tmp_path / "idx", exact=True)
    graph, file = index.graph, tmp_path / "idx" / index.meta["ann"]["file"]
    assert _mapped_kb(file) in (0, None)  # released after view()
    for query in ("cat dog bird", "river stone", "bread lamp chair road", "cloud", "tree fish"):
        q = l2_normalize(bert.embed([query]))[0]
        before = graph.candidates(q, graph.rescore)  # (40,) in the graph's order, before re-scoring
        assert _mapped_kb(file) in (None,) or _mapped_kb(file) > 0
        graph.release()
        assert _mapped_kb(file) in (0, None)
        np.testing.assert_array_equal(graph.candidates(q, graph.rescore), before)
        for a, b in zip(index.nearest(q, 5), exact.nearest(q, 5)):
            np.testing.assert_array_equal(a, b)


def _mapped_kb(file: Path) -> int | None:
    """kB of `file`'s map resident in this process (/proc/self/smaps); None off Linux."""
    try:
        lines = Path("/proc/self/smaps").read_text().splitlines()
    except OSError:
        return None
    for i, line in enumerate(lines):
        if line.endswith(str(file)):
            return next(int(l.split()[1]) for l in lines[i + 1 :] if l.startswith("Rss:"))
    raise AssertionError(f"{file} is not mapped")


@needs_usearch
def test_a_vectors_file_cut_short_after_opening_is_the_corrupt_index_error(docs, tmp_path, bert, large):
    """The graph's candidates are re-scored from rows read with pread: a short read is refused."""
    build_index(tmp_path / "idx", [docs], bert)
    index = SearchIndex.open(tmp_path / "idx")
    file = tmp_path / "idx" / index.meta["shards"][0]["vectors"]
    os.truncate(file, file.stat().st_size // 2)
    with pytest.raises(SearchIndexError, match="is corrupt"):
        index.nearest(l2_normalize(bert.embed(["cat dog bird"]))[0], 5)

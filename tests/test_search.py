"""The search index and the embed/index/search commands, on the tiny random BERT: what is
stored, incremental updates, interrupted runs, and every bad input. (Whether search finds
the right paragraph needs a real model: see test_minilm.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest

import edge
import edge.embeddings.index
from edge.cli import main
from edge.errors import InputError, SearchIndexError
from edge.embeddings.index import LOCK, SearchIndex, build_index
from edge.embeddings.pooling import l2_normalize
from edge.embeddings.search import search

DOCS = {
    "notes.md": "# Notes\n\nThe first paragraph is about cats.\nIt has two lines.\n\nA second paragraph about dogs.\n",
    "guide/setup.rst": "Setup\n=====\n\nInstall the package, then run the tests.\n",
    "guide/todo.txt": "buy milk\n\n\ncall the plumber about the leaking tap\n",
}


@pytest.fixture
def docs(tmp_path):
    root = tmp_path / "docs"
    for name, text in DOCS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(range(256)))
    (root / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (root / ".hidden.md").write_text("secret")
    return root


def test_index_stores_vectors_and_where_each_chunk_comes_from(docs, tmp_path, bert, no_network):
    report = build_index(tmp_path / "idx", [docs], bert)
    assert (report.files, len(report.embedded_files), report.reused_files) == (3, 3, 0)
    assert [p.name for p in report.skipped.binary] == ["image.png"]
    assert [p.name for p in report.skipped.non_utf8] == ["latin1.txt"]
    index = SearchIndex.open(tmp_path / "idx")
    spans = {(e.file.removeprefix(str(docs) + "/"), e.start_line, e.end_line) for e in index.entries}
    assert spans == {("notes.md", 1, 6), ("guide/setup.rst", 1, 4), ("guide/todo.txt", 1, 4)}
    # Markdown chunks carry their section heading, embedded before the text; other files' chunks do not
    assert {e.file.rsplit("/", 1)[1]: e.heading for e in index.entries} == {"notes.md": "Notes", "setup.rst": "",
                                                                            "todo.txt": ""}
    texts = [("Notes\n" if e.file.endswith(".md") else "") + e.text for e in index.entries]
    expected = l2_normalize(bert.embed(texts))  # the oracle: embed the text directly
    np.testing.assert_allclose(index.vectors, expected, atol=1e-6)
    assert index.meta["model"]["identity"] == bert.identity and index.bundle == bert.path.resolve()
    hits = search(index, bert, DOCS["guide/todo.txt"], k=2)
    assert hits[0].file.endswith("todo.txt") and hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert len(hits) == 2 and hits[0].score >= hits[1].score


def test_an_index_from_before_headings_still_loads_and_is_rebuilt_on_update(docs, tmp_path, bert, capsys):
    """Version 1 indexes (before shards) written before chunks had headings: no "heading" per
    chunk and no "headings" in the chunking settings. They open and search as they are; the next `edge
    index` over them rebuilds them, saying why."""
    from edge.bundle import sha256

    out = tmp_path / "idx"
    build_index(out, [docs], bert)
    meta = json.loads((out / "index.json").read_text())
    chunks, offsets = _data(out, "chunks"), _data(out, "offsets")
    rows = [json.loads(line) for line in chunks.read_text().splitlines()]
    chunks.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "heading"}) + "\n" for r in rows))
    offsets.unlink()  # version 1: one vectors and one chunks file, no offsets, no shards
    shard = meta.pop("shards")[0]
    del meta["ann"], meta["checksums"][offsets.name], meta["chunking"]["headings"]
    meta |= {"version": 1, "data": {"vectors": shard["vectors"], "chunks": shard["chunks"]}}
    meta["checksums"][chunks.name] = sha256(chunks)
    (out / "index.json").write_text(json.dumps(meta))
    old = SearchIndex.open(out)
    assert [e.heading for e in old.entries] == [""] * len(rows) and [e.text for e in old.entries] == [r["text"]
                                                                                                    for r in rows]
    assert main(["search", str(out), "cats", "-k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert sorted((h["file"], h["text"]) for h in hits) == sorted((e.file, e.text) for e in old.entries)
    report = build_index(out, [docs], bert)
    assert report.rebuilt == "chunking settings changed" and len(report.embedded_files) == 3
    assert SearchIndex.open(out).meta["chunking"]["headings"] is True


def test_small_budget_splits_paragraphs_with_line_ranges(docs, tmp_path, bert):
    build_index(tmp_path / "idx", [docs / "notes.md"], bert, chunk_tokens=8, overlap=2)
    entries = SearchIndex.open(tmp_path / "idx").entries
    assert len(entries) > 2
    lines = DOCS["notes.md"].splitlines()
    for e in entries:
        assert len(bert.tokenizer.encode(e.text)) <= 8
        assert set(e.text.split()) <= set(" ".join(lines[e.start_line - 1 : e.end_line]).split())


def test_rerun_embeds_only_changed_files_and_drops_deleted_ones(docs, tmp_path, bert, monkeypatch):
    out = tmp_path / "idx"
    build_index(out, [docs], bert)
    before = SearchIndex.open(out)
    (docs / "notes.md").write_text("Completely new notes.\n")
    (docs / "guide" / "todo.txt").unlink()
    (docs / "new.txt").write_text("A new file.\n")
    embedded = []
    real_embed = type(bert).embed
    monkeypatch.setattr(type(bert), "embed", lambda self, texts, *a: embedded.extend(texts) or real_embed(self, texts))
    report = build_index(out, [docs], bert)
    assert sorted(embedded) == ["A new file.", "Completely new notes."]
    assert report.reused_files == 1 and report.removed_files == [str(docs / "guide" / "todo.txt")]
    after = SearchIndex.open(out)
    assert sorted(after.meta["files"]) == sorted(str(docs / n) for n in ("guide/setup.rst", "new.txt", "notes.md"))
    old_rows, new_rows = (i.meta["files"][str(docs / "guide/setup.rst")]["rows"] for i in (before, after))
    np.testing.assert_array_equal(after.vectors[slice(*new_rows)], before.vectors[slice(*old_rows)])
    assert sorted(p.name for p in out.iterdir()) == sorted(["index.json", LOCK, *after.meta["checksums"]])


def test_an_index_inside_the_indexed_folder_does_not_index_itself(docs, bert):
    build_index(docs / "idx", [docs], bert)
    report = build_index(docs / "idx", [docs], bert)
    assert (report.files, report.reused_files, report.embedded_files) == (3, 3, [])


def test_interrupted_run_leaves_the_previous_index(docs, tmp_path, bert, monkeypatch):
    out = tmp_path / "idx"
    build_index(out, [docs], bert)
    before = SearchIndex.open(out)
    (docs / "notes.md").write_text("Changed.\n")

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(edge.embeddings.index.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_index(out, [docs], bert)
    after = SearchIndex.open(out)
    assert after.meta == before.meta and after.entries == before.entries
    np.testing.assert_array_equal(after.vectors, before.vectors)


def test_searching_with_another_model_is_refused(docs, tmp_path, bert, tiny_bert_bundle_fp32, capsys):
    build_index(tmp_path / "idx", [docs], bert)
    other = edge.load(tiny_bert_bundle_fp32)
    with pytest.raises(SearchIndexError, match="was built with another model"):
        search(SearchIndex.open(tmp_path / "idx"), other, "cats")
    code = main(["search", str(tmp_path / "idx"), "cats", "-m", str(tiny_bert_bundle_fp32)])
    assert code == 1 and capsys.readouterr().err.startswith("error: index ")


CORRUPTIONS = {
    "no index.json": lambda out: (out / "index.json").unlink(),
    "index.json not JSON": lambda out: (out / "index.json").write_text("{nope"),
    "other format": lambda out: (out / "index.json").write_text('{"format": "x"}'),
    "vectors truncated": lambda out: _data(out, "vectors").write_bytes(_data(out, "vectors").read_bytes()[:100]),
    "chunks missing": lambda out: _data(out, "chunks").unlink(),
    "pickled vectors": lambda out: _pickled(out),
}


def _data(out, kind):
    return out / json.loads((out / "index.json").read_text())["shards"][0][kind]


def _pickled(out):
    """An object array (needs pickle to load) with a checksum that matches: np.load must refuse it."""
    from edge.bundle import sha256

    file = _data(out, "vectors")
    np.save(file, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    meta = json.loads((out / "index.json").read_text())
    meta["checksums"][file.name] = sha256(file)
    (out / "index.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corrupt_index_is_one_clear_error(docs, tmp_path, bert, corruption, capsys):
    out = tmp_path / "idx"
    build_index(out, [docs], bert)
    CORRUPTIONS[corruption](out)
    with pytest.raises(SearchIndexError, match=r"edge index|corrupt"):
        SearchIndex.open(out)
    assert main(["search", str(out), "cats"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "edge index" in err


def test_rerun_over_a_corrupt_index_rebuilds_it(docs, tmp_path, bert):
    out = tmp_path / "idx"
    build_index(out, [docs], bert)
    CORRUPTIONS["vectors truncated"](out)
    report = build_index(out, [docs], bert)
    assert report.rebuilt and len(report.embedded_files) == 3
    assert len(SearchIndex.open(out).entries) == report.chunks


def test_bad_inputs(docs, tmp_path, bert):
    with pytest.raises(InputError, match="does not exist"):
        build_index(tmp_path / "idx", [tmp_path / "missing"], bert)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "a.bin").write_bytes(b"\0\1\2")
    with pytest.raises(InputError, match="no text files found"):
        build_index(tmp_path / "idx", [tmp_path / "bin"], bert)
    with pytest.raises(InputError, match="exists and is not an edge index"):
        build_index(docs / "guide", [docs], bert)
    with pytest.raises(InputError, match="overlap") as info:
        build_index(tmp_path / "idx", [docs], bert, chunk_tokens=16, overlap=16)
    assert info.value.param == "overlap"
    with pytest.raises(InputError, match="chunk_tokens") as info:
        build_index(tmp_path / "idx", [docs], bert, chunk_tokens=4)
    assert info.value.param == "chunk_tokens"
    build_index(tmp_path / "idx", [docs], bert)
    index = SearchIndex.open(tmp_path / "idx")
    for query in ("", "   "):
        with pytest.raises(InputError, match="query is empty"):
            search(index, bert, query)
    for k in (0, -1):
        with pytest.raises(InputError, match="k must be a positive integer"):
            search(index, bert, "cats", k=k)
    assert len(search(index, bert, "cats", k=100)) == len(index.entries)


def test_cli_embed_index_search(docs, tmp_path, tiny_bert_bundle_int8, bert, capsys, monkeypatch, no_network):
    bundle = str(tiny_bert_bundle_int8)
    assert main(["embed", "-m", bundle, "a cat", "word " * 400]) == 0
    out = capsys.readouterr()
    rows = [json.loads(line) for line in out.out.splitlines()]
    np.testing.assert_allclose(rows, bert.embed(["a cat", "word " * 400]), atol=1e-6)
    assert out.err.count("truncated") == 1 and "1 of 2 text(s)" in out.err
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("first line\n\nsecond line\n"))
    assert main(["embed", "-m", bundle, "-", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["text"] for d in data["data"]] == ["first line", "second line"] and data["dim"] == bert.dim
    assert main(["index", str(docs), "-o", str(tmp_path / "idx"), "-m", bundle]) == 0
    assert "indexed 3 files" in capsys.readouterr().out
    assert main(["search", str(tmp_path / "idx"), DOCS["guide/todo.txt"], "-k", "2", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 2 and hits[0]["file"].endswith("todo.txt") and hits[0]["start_line"] == 1
    assert main(["search", str(tmp_path / "idx"), "cats"]) == 0
    assert capsys.readouterr().out.startswith("1. ")


def test_cli_refuses_a_bundle_of_the_other_task_and_a_missing_default(tiny_gpt2_bundle_fp32, tiny_bert_bundle_int8,
                                                                        tmp_path, capsys, monkeypatch):
    assert main(["generate", "-m", str(tiny_bert_bundle_int8), "hi"]) == 1
    assert "is a feature-extraction bundle; this command needs a text-generation one" in capsys.readouterr().err
    assert main(["embed", "-m", str(tiny_gpt2_bundle_fp32), "hi"]) == 1
    assert "is a text-generation bundle; this command needs a feature-extraction one" in capsys.readouterr().err
    monkeypatch.setenv("EDGE_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("EDGE_EMBEDDING_MODEL", raising=False)
    assert main(["embed", "hi"]) == 1
    assert "python -m export.default embeddings" in capsys.readouterr().err

"""Indexes and exports under races, kills, unreadable files and broken index.json files.

Each case must end in one `error:` line (exit 1) or be handled, and the committed index
must stay complete: every file it names exists and matches its checksum.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import edge
from edge.cli import main
from edge.embeddings import corpus
from edge.embeddings.index import LOCK, META, SearchIndex, build_index
from edge.errors import InputError, SearchIndexError

ROOT = Path(__file__).parents[1]


@pytest.fixture
def docs(tmp_path) -> Path:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "a.md").write_text("# Cats\n\nCats sleep a lot.\n")
    (root / "b.txt").write_text("Dogs bark at the postman.\n")
    (root / "sub" / "c.txt").write_text("Birds sing in the morning.\n")
    return root


@pytest.fixture
def index(docs, tmp_path, bert) -> Path:
    out = tmp_path / "idx"
    build_index(out, [docs], bert)
    return out


def _complete(out: Path) -> bool:
    """The committed index opens and every row is there (SearchIndex.open checks checksums)."""
    found = SearchIndex.open(out)
    return len(found.entries) == len(found.vectors) > 0


def _one_line_error(capsys, *args) -> str:
    code = main(list(args))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("error: "), (code, err)
    return err[0]


def _env() -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("EDGE_DEBUG", None)
    return env


# --- races --------------------------------------------------------------------------------


def test_a_second_run_fails_at_once_while_one_writes(index, docs, bert, capsys, tiny_bert_bundle_int8):
    before = sorted(p.name for p in index.iterdir())
    fd = os.open(index / LOCK, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a first run would hold it
    try:
        with pytest.raises(SearchIndexError, match="another `edge index` is writing"):
            build_index(index, [docs], bert)
        message = _one_line_error(capsys, "index", str(docs), "-o", str(index), "-m", str(tiny_bert_bundle_int8))
        assert "Wait for it to finish" in message
    finally:
        os.close(fd)
    assert sorted(p.name for p in index.iterdir()) == before and _complete(index)
    build_index(index, [docs], bert)  # the lock is released with its holder
    assert _complete(index)


def test_concurrent_cli_runs_leave_a_complete_index(docs, tmp_path, tiny_bert_bundle_int8):
    """Two `edge index` on one -o used to delete each other's vector files."""
    out = tmp_path / "race"
    command = [sys.executable, "-m", "edge.cli", "index", str(docs), "-o", str(out), "-m", str(tiny_bert_bundle_int8)]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
            for _ in range(3)]
    results = [(run.wait(timeout=120), run.stderr.read()) for run in runs]
    assert any(code == 0 for code, _ in results), results
    for code, err in results:
        assert code in (0, 1) and "Traceback" not in err
        assert code == 0 or "another `edge index` is writing" in err
    assert _complete(out)


# --- kills --------------------------------------------------------------------------------


def test_a_first_run_killed_before_its_commit_is_cleaned(docs, tmp_path, tiny_bert_bundle_int8, capsys):
    """Killed between writing data and index.json: every retry used to refuse the folder."""
    out = tmp_path / "killed"
    script = ("import os, sys, edge; import edge.embeddings.index as ix; "
              "ix.os.replace = lambda *a: os._exit(137); "
              f"ix.build_index({str(out)!r}, [{str(docs)!r}], edge.load({str(tiny_bert_bundle_int8)!r}))")
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120, env=_env())
    assert killed.returncode == 137 and not (out / META).exists()
    assert any(p.name.startswith("vectors-") for p in out.iterdir())
    assert "Build one with `edge index" in _one_line_error(capsys, "search", str(out), "cats")
    assert main(["index", str(docs), "-o", str(out), "-m", str(tiny_bert_bundle_int8)]) == 0
    assert "interrupted before it finished" in capsys.readouterr().err
    assert _complete(out)
    assert len([p for p in out.iterdir() if p.name.startswith("vectors-")]) == 1


def test_a_failed_first_run_leaves_nothing(docs, tmp_path, bert):
    out = tmp_path / "empty-run"
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(InputError, match="no text files"):
        build_index(out, [empty], bert)
    assert not out.exists()


def test_a_foreign_folder_is_refused_and_left_alone(docs, tmp_path, bert):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(InputError, match="is not an edge index"):
        build_index(out, [docs], bert)
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


def test_stale_export_staging_is_removed(tmp_path):
    """A killed export left a hidden ~700 MB `.NAME.partial-*` folder forever."""
    from export.writer import remove_stale_staging, staging

    gone = subprocess.Popen(["true"])  # a pid whose process has ended
    gone.wait()
    stale = tmp_path / f".old-bundle.partial-{gone.pid}-abc123"
    live = tmp_path / f".other.partial-{os.getpid()}-def456"
    unrelated = tmp_path / ".notes.partial-draft"
    for folder in (stale, live, unrelated):
        folder.mkdir()
        (folder / "model.onnx.data").write_bytes(b"\0" * 1024)
    with staging(tmp_path / "new-bundle") as stage:
        assert stage.name.startswith(f".new-bundle.partial-{os.getpid()}-")
        assert not stale.exists() and live.exists() and unrelated.exists()
    assert remove_stale_staging(tmp_path) == []


# --- unreadable input, unwritable output -----------------------------------------------------


def test_unreadable_files_and_folders_are_counted(docs, tmp_path, bert, monkeypatch):
    """PermissionError used to escape from a file; a folder was skipped silently. (Simulated:
    the tests may run as root, whom permissions do not stop.)"""
    secret, closed = docs / "b.txt", docs / "sub"
    read_bytes, scandir = Path.read_bytes, os.scandir

    def refuse_file(self):
        if self == secret:
            raise PermissionError(13, "Permission denied", str(self))
        return read_bytes(self)

    def refuse_folder(path="."):
        if Path(path) == closed:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(Path, "read_bytes", refuse_file)
    monkeypatch.setattr(corpus.os, "scandir", refuse_folder)
    report = build_index(tmp_path / "idx", [docs], bert)
    assert sorted(report.skipped.unreadable) == [secret, closed] and report.files == 1
    assert SearchIndex.open(tmp_path / "idx").meta["skipped"]["unreadable"] == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_by_mode(docs, tmp_path, bert):
    (docs / "b.txt").chmod(0)
    report = build_index(tmp_path / "idx", [docs], bert)
    assert [p.name for p in report.skipped.unreadable] == ["b.txt"]


@pytest.mark.parametrize("where", ["/sys/edge-hostile-index", "/proc/edge-hostile/index"])
def test_output_that_cannot_be_written(docs, bert, capsys, tiny_bert_bundle_int8, where):
    with pytest.raises(InputError, match="cannot write the index"):
        build_index(where, [docs], bert)
    message = _one_line_error(capsys, "index", str(docs), "-o", where, "-m", str(tiny_bert_bundle_int8))
    assert "Choose an -o in a folder you can write" in message


# --- broken index.json ------------------------------------------------------------------------

BROKEN = {
    "no-model-bundle": lambda m: m["model"].pop("bundle"),
    "no-model-identity": lambda m: m["model"].pop("identity"),
    "model-not-object": lambda m: m.update(model=["x"]),
    "dim-string": lambda m: m["model"].update(dim="32"),
    "dim-zero": lambda m: m["model"].update(dim=0),
    "no-chunking": lambda m: m.pop("chunking"),
    "chunking-string": lambda m: m["chunking"].update(tokens="128"),
    "files-list": lambda m: m.update(files=[]),
    "rows-string": lambda m: m["files"].update({"x": {"sha256": "0", "rows": "0:3"}}),
    "rows-backwards": lambda m: m["files"].update({"x": {"sha256": "0", "rows": [5, 1]}}),
    "data-escape": lambda m: m["shards"][0].update(vectors="../../../etc/passwd"),
    "data-absolute": lambda m: m["shards"][0].update(chunks="/etc/hostname"),
    "offsets-escape": lambda m: m["shards"][0].update(offsets="../offsets-0123456789ab.npy"),
    "no-checksums": lambda m: m.pop("checksums"),
    "checksum-number": lambda m: m["checksums"].update({m["shards"][0]["vectors"]: 5}),
    "no-shards": lambda m: m.update(shards=[]),
    "shard-rows-string": lambda m: m["shards"][0].update(rows="3"),
    "shard-rows-too-many": lambda m: m["shards"][0].update(rows=m["shards"][0]["rows"] + 1),
    "shard-rows-too-few": lambda m: m["shards"][0].update(rows=m["shards"][0]["rows"] - 1),
    "file-rows-past-shards": lambda m: m["files"].update({"x": {"sha256": "0", "rows": [0, 10**9]}}),
    "ann-not-object": lambda m: m.update(ann=[1]),
    "ann-escape": lambda m: m.update(ann={"file": "/etc/passwd", "library": "usearch", "rows": 3, "dim": 32,
                                          "dtype": "i8", "metric": "ip", "connectivity": 16,
                                          "expansion_search": 64, "rescore": 40}),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_index_json_fields(index, capsys, case):
    meta = json.loads((index / META).read_text())
    BROKEN[case](meta)
    (index / META).write_text(json.dumps(meta))
    with pytest.raises(SearchIndexError, match="is corrupt"):
        SearchIndex.open(index)
    assert "Rebuild it" in _one_line_error(capsys, "search", str(index), "cats")


@pytest.mark.parametrize("text", [
    "[" * 100_000 + "]" * 100_000,
    '{"format": "edge-index", "version": 1, "model": ' + "[" * 300 + "]" * 300 + "}",
    '{"format": "edge-index", "version": 1, "n": ' + "7" * 5000 + "}",
    '{"format": "edge-index", "version": ' + "1" * 4301 + "}",
])
def test_hostile_index_json(index, capsys, text):
    (index / META).write_text(text)
    with pytest.raises(SearchIndexError):
        SearchIndex.open(index)
    _one_line_error(capsys, "search", str(index), "cats")


def _rewrite(index: Path, kind: str, write) -> None:
    """Replace the first shard's `kind` file by write(path), with a checksum that matches."""
    from edge.bundle import sha256

    meta = json.loads((index / META).read_text())
    file = index / meta["shards"][0][kind]
    write(file)
    meta["checksums"][file.name] = sha256(file)
    (index / META).write_text(json.dumps(meta))


def _chunk_lines(index: Path, lines: list[bytes]) -> None:
    """The first shard's chunks replaced by `lines`, its offsets and checksums made to match."""
    import numpy as np

    rows = json.loads((index / META).read_text())["shards"][0]["rows"]
    lines = (lines * rows)[:rows]
    _rewrite(index, "chunks", lambda f: f.write_bytes(b"".join(lines)))
    offsets = np.cumsum([0] + [len(line) for line in lines]).astype(np.int64)
    _rewrite(index, "offsets", lambda f: np.save(f, offsets, allow_pickle=False))


HOSTILE_LINES = {
    "wrong types": json.dumps({"file": 5, "start_line": "1", "end_line": 2, "text": None}).encode() + b"\n",
    "extra field": json.dumps({"file": "a", "start_line": 1, "end_line": 2, "text": "t", "x": 1}).encode() + b"\n",
    "not an object": b"[1, 2, 3]\n",
    "deep": b"[" * 10_000 + b"]" * 10_000 + b"\n",
    "not utf-8": b'{"file": "\xff"}\n',
}


@pytest.mark.parametrize("case", HOSTILE_LINES)
def test_broken_chunk_lines(index, capsys, case):
    """A chunks file whose offsets and checksum were updated to match hostile lines."""
    _chunk_lines(index, [HOSTILE_LINES[case]])
    assert "is corrupt" in _one_line_error(capsys, "search", str(index), "cats")
    from edge.embeddings.hybrid import hybrid_search  # what `edge ask`, `chat --index` and `serve --index` run

    with pytest.raises(SearchIndexError, match="is corrupt"):
        hybrid_search(SearchIndex.open(index), edge.load(index_bundle(index)), "cats", 2)


def index_bundle(index: Path) -> str:
    return json.loads((index / META).read_text())["model"]["bundle"]


def test_rows_read_from_many_threads_at_once(index, tmp_path):
    """`edge serve --index` grounds requests in threads that share one opened index: a row
    read in one thread must not move another thread's read."""
    import threading

    found = SearchIndex.open(index)
    want, got, errors = list(found.entries), [], []

    def read():
        try:
            for _ in range(300):
                got.append([found.entries[i] for i in range(len(want))] == want)
        except Exception as exc:  # a read at another thread's position: a broken line
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(got) and len(got) == 1200


def test_offsets_that_do_not_mark_lines(index, capsys):
    import numpy as np

    rows = json.loads((index / META).read_text())["shards"][0]["rows"]
    size = (index / json.loads((index / META).read_text())["shards"][0]["chunks"]).stat().st_size
    for offsets in ([size] * (rows + 1), [0] * rows + [size], list(range(rows)) + [size + 1]):
        _rewrite(index, "offsets", lambda f: np.save(f, np.array(offsets, dtype=np.int64), allow_pickle=False))
        assert "does not mark lines" in _one_line_error(capsys, "search", str(index), "cats")
    _rewrite(index, "offsets", lambda f: np.save(f, np.arange(rows + 1, dtype=np.int32), allow_pickle=False))
    assert "expected int64" in _one_line_error(capsys, "search", str(index), "cats")


@pytest.mark.parametrize("vectors", ["float64", "fortran", "3d", "object"])
def test_vectors_of_the_wrong_kind(index, capsys, vectors):
    """Checksums match; the header is what gives them away, before numpy maps the file."""
    import numpy as np

    meta = json.loads((index / META).read_text())
    rows, dim = meta["shards"][0]["rows"], meta["model"]["dim"]
    arrays = {"float64": np.zeros((rows, dim)), "fortran": np.asfortranarray(np.zeros((rows, dim), np.float32)),
              "3d": np.zeros((rows, dim, 1), np.float32), "object": np.array([None] * rows, dtype=object)}
    _rewrite(index, "vectors", lambda f: np.save(f, arrays[vectors], allow_pickle=vectors == "object"))
    assert "is corrupt" in _one_line_error(capsys, "search", str(index), "cats")


def test_a_version_1_index_still_opens_and_searches(index, bert, tmp_path, capsys):
    """Indexes written before shards: one vectors and one chunks file under "data"."""
    import numpy as np

    from edge.bundle import sha256
    from edge.embeddings.search import search

    meta = json.loads((index / META).read_text())
    shard = meta["shards"][0]
    v1 = {key: meta[key] for key in ("format", "model", "chunking", "files", "skipped")}
    v1.update(version=1, data={"vectors": shard["vectors"], "chunks": shard["chunks"]},
              checksums={shard[k]: sha256(index / shard[k]) for k in ("vectors", "chunks")})
    (index / shard["offsets"]).unlink()
    (index / META).write_text(json.dumps(v1))
    found = SearchIndex.open(index)
    assert len(found.entries) == shard["rows"] and found.meta["version"] == 1
    hits = search(found, bert, "Dogs bark at the postman.", k=1)
    assert hits[0].file.endswith("b.txt") and hits[0].score == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_array_equal(found.vectors, np.load(index / shard["vectors"]))
    assert main(["search", str(index), "cats"]) == 0 and capsys.readouterr().out.startswith("1. ")

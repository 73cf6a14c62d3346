"""`edge index --ray` against a real local Ray cluster (2 CPUs, loopback, started once for the
module): the same chunks and vectors as the local path, incremental updates alike, a worker
killed mid-run retried, an interrupted run leaving the previous index. The oracle is the
local path (`build_index` without ray), tested on its own in test_search.py.

Needs the `scale` extra; CI installs it (`make install`), so there a missing Ray fails."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

import edge
import edge.embeddings.index as index_module
import edge.embeddings.plan
from edge.cli import main
from edge.embeddings.distributed import CRASH_ONCE
from edge.embeddings.index import META, SearchIndex, build_index
from edge.errors import SearchIndexError

# Ray is the optional `scale` extra: CI installs it (make install), so there a missing Ray is
# an error, never a skip. Elsewhere (a runtime-only install, the arm64 check's venv) these
# tests cannot run and say why.
try:
    import ray
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip("the `scale` extra (ray) is not installed", allow_module_level=True)

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[1]
TEXT = {"a.md": "# Cats\n\nCats sleep a lot. They purr when content.\n\nA second paragraph on whiskers.\n",
        "b.txt": "Dogs bark at the postman.\n\nThey fetch sticks in the park every morning.\n",
        "sub/c.txt": "Birds sing in the morning.\n\nSome migrate south in winter; others stay.\n",
        "sub/d.rst": "Setup\n=====\n\nInstall the package, then run the tests.\n\nRead the notes.\n"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One local cluster for the module; a worker exits at once while the marker file exists."""
    marker = tmp_path_factory.mktemp("ray") / "crash-once"
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level=logging.WARNING,
             log_to_driver=False, _system_config={"worker_register_timeout_seconds": 300}, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), CRASH_ONCE: str(marker)}})
    yield marker
    ray.shutdown()


@pytest.fixture
def docs(tmp_path, monkeypatch) -> Path:
    """A few files, plus one binary and one Latin-1 file; groups of 3 texts so that groups
    straddle files and there are more groups than workers."""
    root = tmp_path / "docs"
    for name, text in TEXT.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "image.png").write_bytes(b"\x89PNG\0\0" + bytes(range(256)))
    (root / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    monkeypatch.setattr(edge.embeddings.plan, "EMBED_GROUP", 3)
    return root


def _same_index(a: Path, b: Path) -> None:
    """Same files, rows, chunks and vectors (bit for bit)."""
    x, y = SearchIndex.open(a), SearchIndex.open(b)
    assert x.meta["files"] == y.meta["files"] and x.meta["skipped"] == y.meta["skipped"]
    assert x.meta["model"] == y.meta["model"] and x.meta["chunking"] == y.meta["chunking"]
    assert list(x.entries) == list(y.entries) and len(x.entries) > 6
    assert any(e.heading for e in x.entries)  # a.md's heading came through (and is in the vectors)
    np.testing.assert_array_equal(x.vectors, y.vectors)


def _report(report) -> tuple:
    return (report.files, report.chunks, sorted(report.embedded_files), report.reused_files,
            report.removed_files, [sorted(map(str, getattr(report.skipped, k))) for k in ("binary", "non_utf8")])


def test_ray_builds_the_same_index_as_the_local_path(cluster, docs, tmp_path, bert):
    local = build_index(tmp_path / "local", [docs], bert, chunk_tokens=16, overlap=4)
    on_ray = build_index(tmp_path / "ray", [docs], bert, chunk_tokens=16, overlap=4, ray=True, workers=2)
    assert _report(on_ray) == _report(local)
    _same_index(tmp_path / "local", tmp_path / "ray")


def test_incremental_updates_on_ray_match_the_local_path(cluster, docs, tmp_path, bert, monkeypatch):
    build_index(tmp_path / "local", [docs], bert, chunk_tokens=16, overlap=4)
    build_index(tmp_path / "ray", [docs], bert, chunk_tokens=16, overlap=4, ray=True)
    (docs / "a.md").write_text("# Cats\n\nCats changed their minds.\n")
    (docs / "b.txt").unlink()
    (docs / "sub" / "e.txt").write_text("A new file about trains.\n\nAnd stations.\n")
    local = build_index(tmp_path / "local", [docs], bert, chunk_tokens=16, overlap=4)
    monkeypatch.setattr(index_module, "chunk_file", lambda *a: pytest.fail("the driver chunked a file itself"))
    on_ray = build_index(tmp_path / "ray", [docs], bert, chunk_tokens=16, overlap=4, ray=True)
    assert _report(on_ray) == _report(local)
    assert sorted(on_ray.embedded_files) == [str(docs / "a.md"), str(docs / "sub" / "e.txt")]
    assert on_ray.removed_files == [str(docs / "b.txt")] and on_ray.reused_files == 2
    _same_index(tmp_path / "local", tmp_path / "ray")


def test_a_worker_killed_mid_run_is_retried_and_the_index_is_complete(cluster, docs, tmp_path, bert):
    cluster.write_text("exit on the next batch")
    build_index(tmp_path / "ray", [docs], bert, chunk_tokens=16, overlap=4, ray=True, workers=2)
    assert not cluster.exists()  # a worker did take the marker away and exit
    build_index(tmp_path / "local", [docs], bert, chunk_tokens=16, overlap=4)
    _same_index(tmp_path / "local", tmp_path / "ray")


def test_an_interrupted_ray_run_leaves_the_previous_index(cluster, docs, tmp_path, bert, monkeypatch):
    out = tmp_path / "ray"
    build_index(out, [docs], bert, chunk_tokens=16, overlap=4, ray=True)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (docs / "a.md").write_text("Changed text.\n\nMore changed text.\n")
    real = index_module.write_rows

    def interrupted(writer, plan, previous, fresh, progress, total):
        next(fresh)  # one group came back from the actors; then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(index_module, "write_rows", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_index(out, [docs], bert, chunk_tokens=16, overlap=4, ray=True)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in before} == before
    assert SearchIndex.open(out).meta["files"][str(docs / "a.md")]["sha256"] != ""
    monkeypatch.setattr(index_module, "write_rows", real)
    report = build_index(out, [docs], bert, chunk_tokens=16, overlap=4, ray=True)
    assert report.embedded_files == [str(docs / "a.md")]
    assert sorted(p.name for p in out.iterdir()) == sorted([META, index_module.LOCK,
                                                            *SearchIndex.open(out).meta["checksums"]])


def test_cli_index_with_ray_then_search(cluster, docs, tmp_path, tiny_bert_bundle_int8, capsys):
    out = tmp_path / "cli"
    assert main(["index", str(docs), "-o", str(out), "-m", str(tiny_bert_bundle_int8), "--ray", "local", "--workers", "2"]) == 0
    said = capsys.readouterr()
    assert "indexed 4 files" in said.out and "Traceback" not in said.err
    assert main(["search", str(out), TEXT["b.txt"].strip(), "-k", "1"]) == 0  # the chunk itself: cosine 1
    assert "b.txt:1-" in capsys.readouterr().out


def test_too_many_workers_is_one_clear_error(cluster, docs, tmp_path, bert, capsys, tiny_bert_bundle_int8):
    with pytest.raises(Exception, match="must fit the cluster's 2 CPUs") as info:
        build_index(tmp_path / "x", [docs], bert, ray=True, workers=3)
    assert getattr(info.value, "param", None) == "workers" and not (tmp_path / "x").exists()
    assert main(["index", str(docs), "-o", str(tmp_path / "x"), "-m", str(tiny_bert_bundle_int8), "--ray", "auto",
                 "--worker-cpus", "3"]) == 1
    assert capsys.readouterr().err.startswith("error: ")


def test_a_model_that_differs_on_a_node_fails_in_one_line(cluster, docs, tmp_path, bert, monkeypatch):
    """The actors load the bundle from its path; if that is another model there, the run stops."""
    out = tmp_path / "ray"
    build_index(out, [docs], bert, ray=True)
    before = (out / META).read_bytes()
    (docs / "a.md").write_text("Changed.\n")
    monkeypatch.setattr(type(bert), "identity", property(lambda self: "not-" + "0" * 60))
    with pytest.raises(SearchIndexError, match="another model than the driver's") as info:
        build_index(out, [docs], bert, ray=True)
    assert "\n" not in str(info.value) and (out / META).read_bytes() == before

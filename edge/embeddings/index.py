"""The on-disk search index: build or update it from files, open it, find a query's nearest rows.

An index is a folder of plain files (no pickle):
    index.json          what it is (index_meta.py): the model's identity and bundle, how text
                        was chunked, each file's sha256 and rows, the shards, checksums
    vectors-<id>.npy    one shard (shards.py): (rows, dim) float32 unit rows, memory-mapped,
    chunks-<id>.jsonl   with its chunks and their line offsets; SHARD_ROWS rows a shard
    offsets-<id>.npy
    ann-<id>.usearch    an HNSW graph (ann.py) when the index has ann.MIN_ROWS rows or more
                        and usearch is installed; smaller indexes are searched exactly
    .edge-index.lock    held (fcntl.flock, exclusive) by the one run writing the folder
Each run writes new data files, then replaces index.json in one atomic rename, then
deletes the old data files: an interrupted run leaves the previous index as it was. A
second run on the same folder while one writes fails at once (the lock), so one run never
deletes another's files. A folder left by a first run killed before its commit (only
edge's own files, no index.json) is cleaned and rebuilt. Re-running embeds only files
whose bytes changed and drops files that are gone. The embedding runs here, or on a Ray
cluster (`ray=`, distributed.py); both follow plan.py, so they write the same index.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge.embeddings import ann
from edge.embeddings.chunking import HEADING_TOKENS
from edge.embeddings.corpus import Skipped, candidates, text_files
from edge.embeddings.index_meta import FORMAT, META, REBUILD, VERSION, read_meta
from edge.embeddings.plan import EMBED_GROUP, Planned, chunk_file, embed_group, groups, write_rows
from edge.embeddings.shards import Entry, Rows, Shard, ShardWriter
from edge.errors import InputError, SearchIndexError

if TYPE_CHECKING:  # the model imports onnxruntime: opening an index needs none of it
    from edge.embeddings.model import EmbeddingModel

__all__ = ["EMBED_GROUP", "Entry", "FORMAT", "LOCK", "META", "VERSION", "IndexReport", "SearchIndex", "build_index"]

LOCK = ".edge-index.lock"
# Every name a run of edge writes in an index folder: what an uncommitted folder may hold.
OWN_FILES = re.compile(r"(vectors|offsets)-[0-9a-f]{12}\.npy|chunks-[0-9a-f]{12}\.jsonl|ann-[0-9a-f]{12}\.usearch"
                       r"|\.index\.json\.[0-9a-f]{12}\.partial|" + re.escape(LOCK))
DEFAULT_CHUNK_TOKENS = 128
DEFAULT_OVERLAP = 32
SCAN_ROWS = 65_536  # rows scored at once by brute force: bounded memory on any index


@dataclass
class SearchIndex:
    path: Path
    meta: dict
    shards: list[Shard]
    graph: ann.Graph | None = None
    notes: list[str] = field(default_factory=list)  # what the user should know (a missing extra)

    @classmethod
    def open(cls, path: str | Path, exact: bool = False, threads: int | None = None) -> SearchIndex:
        """Open and check an index; SearchIndexError (with the fix) if anything is off. Small
        indexes are verified in full now; large ones by their headers now and their checksums
        before a full scan. `exact`: never use the ANN graph."""
        path = Path(path).expanduser()
        meta = read_meta(path)
        with _corrupt(path):
            dim = meta["model"]["dim"]
            shards = [Shard(path, record, dim, meta["checksums"]) for record in meta["shards"]]
            index = cls(path, meta, shards)
            _check_files_tile(meta["files"], len(index.entries))
            if len(index.entries) < ann.MIN_ROWS:
                for shard in shards:
                    shard.verify()
            if meta["ann"] and not exact:
                if ann.available():
                    index.graph = ann.Graph(path, meta["ann"], meta["checksums"][meta["ann"]["file"]],
                                            len(index.entries), dim, threads)
                else:
                    index.notes.append(ann.MISSING.format(rows=len(index.entries)))
        return index

    @property
    def bundle(self) -> Path:
        """The bundle the index was built with (where it was then)."""
        return Path(self.meta["model"]["bundle"])

    @property
    def entries(self) -> Rows:
        """Every chunk, read from disk when asked for: `entries[i]` is row i."""
        return Rows(self.shards)

    @property
    def vectors(self) -> np.ndarray:
        """(N, dim) float32: every row, verified and read into memory (small indexes, hybrid search)."""
        with _corrupt(self.path):
            for shard in self.shards:
                shard.verify()
            return np.concatenate([s.vectors for s in self.shards])

    def entry(self, row: int) -> Entry:
        with _corrupt(self.path):
            return self.entries[row]

    def all_entries(self) -> list[Entry]:
        """Every chunk in row order, read now (a bad line is the one corrupt-index error)."""
        with _corrupt(self.path):
            return list(self.entries)

    def nearest(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k rows closest to the unit `vector` (dim,): (rows (k,) int64, cosines (k,) float32),
        best first, ties by row. Exact below ann.MIN_ROWS; above, the graph's candidates re-scored."""
        with _corrupt(self.path):
            if self.graph is not None:
                rows = np.unique(self.graph.candidates(vector, max(k, self.graph.rescore)))  # (c,) sorted
                scores = self._gather(rows) @ vector  # (c,)
            else:
                rows, scores = self._scan(vector, k)
        order = np.lexsort((rows, -scores))[:k]
        return rows[order], scores[order]

    def _scan(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Brute force, SCAN_ROWS at a time: each block's best k, (<= blocks * k,) candidates."""
        rows, scores = [np.empty(0, np.int64)], [np.empty(0, np.float32)]
        for shard, first in zip(self.shards, self.entries.starts):
            shard.verify()
            for lo in range(0, shard.rows, SCAN_ROWS):
                block = shard.vectors[lo : lo + SCAN_ROWS] @ vector  # (b,)
                take = min(k, len(block))
                best = np.argpartition(-block, take - 1)[:take]
                rows.append(best + first + lo)
                scores.append(block[best])
        return np.concatenate(rows), np.concatenate(scores)

    def _gather(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), dim) float32: the given sorted rows, read from the shards' files."""
        starts = self.entries.starts
        which = np.searchsorted(starts, rows, side="right") - 1  # (len(rows),) shard of each row
        parts = [self.shards[s].vectors_at(rows[which == s] - starts[s]) for s in np.unique(which)]
        return np.concatenate(parts) if parts else np.empty((0, self.meta["model"]["dim"]), np.float32)

    def check_model(self, model: EmbeddingModel) -> None:
        if model.identity != self.meta["model"]["identity"]:
            raise SearchIndexError(
                f"index {self.path} was built with another model ({self.meta['model']['source']}, bundle "
                f"{self.bundle}); vectors of different models cannot be compared. Search with that bundle "
                "(-m), or rebuild the index with this one."
            )

    def close(self) -> None:
        for shard in self.shards:
            shard.close()


@contextlib.contextmanager
def _corrupt(path: Path) -> Iterator[None]:
    """Any trouble reading an index's files, as the one error that says to rebuild it."""
    try:
        yield
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise SearchIndexError(f"index {path} is corrupt ({exc.__class__.__name__}: {exc}). {REBUILD}") from None


def _check_files_tile(files: dict, rows: int) -> None:
    """The files' row ranges must cover 0..rows exactly once, in order."""
    end = 0
    for start, stop in sorted(tuple(entry["rows"]) for entry in files.values()):
        if start != end:
            raise ValueError(f"the files' rows leave a gap or overlap at row {start}")
        end = stop
    if end != rows:
        raise ValueError(f"the files cover {end} rows, the shards hold {rows}")


@dataclass
class IndexReport:
    files: int = 0
    chunks: int = 0
    embedded_files: list[str] = field(default_factory=list)
    removed_files: list[str] = field(default_factory=list)
    reused_files: int = 0
    skipped: Skipped = field(default_factory=Skipped)
    rebuilt: str | None = None  # why nothing of the previous index was reused
    notes: list[str] = field(default_factory=list)  # e.g. no ANN graph for want of its extra


def build_index(
    out: str | Path,
    paths: Iterable[str | Path],
    model: EmbeddingModel,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    overlap: int = DEFAULT_OVERLAP,
    progress: Callable[[int, int], None] | None = None,
    *,
    ray: bool | str = False,
    workers: int | None = None,
    worker_cpus: int = 1,
) -> IndexReport:
    """Create or update the index at `out` for the text files under `paths`.
    `progress(done, total)` is called as new chunks are embedded. `ray`: True runs the reading,
    chunking and embedding on Ray (the cluster this process is connected to, else
    `ray.init()`: $RAY_ADDRESS or a new local one), a string is a cluster address; `workers`
    actors (default: the cluster's CPUs / worker_cpus) of `worker_cpus` CPUs and threads each."""
    out, paths = Path(out).expanduser().resolve(), list(paths)
    chunking = _chunking(model, chunk_tokens, overlap)
    with _locked(out):
        report = IndexReport()
        previous = _previous(out, model, chunking, report)
        try:
            if ray is False:
                plan = _plan_here(out, paths, model, chunking, previous, report)
                _check_plan(plan, paths)
                fresh = (embed_group(model, texts) for texts in groups(plan))
                _commit(out, plan, previous, fresh, progress, report, _meta_base(model, chunking, report))
            else:
                from edge.embeddings.distributed import RayJob

                with RayJob(ray, model, chunking, workers, worker_cpus) as job:
                    plan = job.plan(list(candidates(paths, out, report.skipped)),
                                    previous.meta["files"] if previous else {}, report.skipped)
                    _check_plan(plan, paths)
                    fresh = job.embed(groups(plan))
                    _commit(out, plan, previous, fresh, progress, report, _meta_base(model, chunking, report))
        finally:
            if previous:
                previous.close()
        return report


def _plan_here(out: Path, paths: list, model: EmbeddingModel, chunking: dict, previous, report) -> list[Planned]:
    plan = []
    for file in text_files(paths, out, report.skipped):
        path = str(file.path)
        old = previous.meta["files"].get(path) if previous else None
        if old is not None and old["sha256"] == file.sha256:
            plan.append(Planned(path, file.sha256, None, tuple(old["rows"])))
        else:
            plan.append(Planned(path, file.sha256, chunk_file(path, file.text, _counter(model), chunking)))
    return plan


def _counter(model: EmbeddingModel) -> Callable[[str], int]:
    return lambda text: len(model.tokenizer.encode(text))


def _check_plan(plan: list[Planned], paths: list) -> None:
    if not plan:
        raise InputError(f"no text files found in {', '.join(map(str, paths))}. Pass files or folders with text.")


def _commit(out: Path, plan: list[Planned], previous, fresh, progress, report: IndexReport, meta: dict) -> None:
    """Write the shards (and graph), then index.json in one rename, then drop the old files."""
    report.embedded_files = [p.path for p in plan if p.entries is not None]
    report.reused_files = len(plan) - len(report.embedded_files)
    kept = {p.path for p in plan}
    report.removed_files = sorted(set(previous.meta["files"]) - kept) if previous else []
    writer = ShardWriter(out, meta["model"]["dim"])
    total_new = sum(p.rows for p in plan if p.entries is not None)
    write_rows(writer, plan, previous.entries if previous else None, iter(fresh), progress, total_new)
    shards, checksums, graph = writer.close(), dict(writer.checksums), None
    files, start = {}, 0
    for planned in plan:
        files[planned.path] = {"sha256": planned.sha256, "rows": [start, start + planned.rows]}
        start += planned.rows
    if start >= ann.MIN_ROWS:
        if ann.available():
            maps = [np.load(out / s["vectors"], mmap_mode="r", allow_pickle=False) for s in shards]
            graph, digest = ann.build(out, maps, os.cpu_count())
            checksums[graph["file"]] = digest
        else:
            report.notes.append(ann.MISSING.format(rows=start))
    meta = {**meta, "files": files, "shards": shards, "ann": graph, "checksums": checksums}
    run = uuid.uuid4().hex[:12]
    partial = out / f".{META}.{run}.partial"
    partial.write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(partial, out / META)  # the commit point
    current = {name for name in checksums} | {LOCK}
    for stale in out.iterdir():  # safe: the lock keeps other runs out of this folder
        if OWN_FILES.fullmatch(stale.name) and stale.name not in current:
            stale.unlink()
    report.files, report.chunks = len(plan), start


def _meta_base(model: EmbeddingModel, chunking: dict, report: IndexReport) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": {"identity": model.identity, "source": model.manifest.source, "dim": model.dim,
                  "bundle": str(model.path.resolve()) if model.path else ""},
        "chunking": chunking,
        "skipped": {"binary": len(report.skipped.binary), "non_utf8": len(report.skipped.non_utf8),
                    "unreadable": len(report.skipped.unreadable)},
    }


def _chunking(model: EmbeddingModel, chunk_tokens: int, overlap: int) -> dict:
    specials = len(model.tokenize([""])[0].ids)  # [CLS] and [SEP] take room in every chunk
    room = model.max_length - specials
    budget = min(chunk_tokens, room - min(HEADING_TOKENS, room // 4))  # the heading embedded with it must fit too
    if isinstance(chunk_tokens, bool) or not isinstance(chunk_tokens, int) or chunk_tokens < 8:
        raise InputError(f"need {{param}} >= 8, got {chunk_tokens!r}.", param="chunk_tokens")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < budget:
        raise InputError(f"need 0 <= {{param}} < {budget} (the chunk size), got {overlap!r}.", param="overlap")
    return {"tokens": budget, "overlap": overlap, "headings": True}


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold the index folder's lock (creating the folder) for the whole build; fail at once
    if another run holds it. The kernel drops the lock when this process ends, however it
    ends. A failed run leaves no folder or lock file it made itself."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not an edge index. Choose another -o.")
    created, lock_created = not out.exists(), not (out / LOCK).exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise InputError(f"cannot write the index at {out} ({exc.strerror or exc.__class__.__name__}). "
                         "Choose an -o in a folder you can write.") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SearchIndexError(f"another `edge index` is writing {out} right now. Wait for it to finish, "
                               "or choose another -o.") from None
    try:
        yield
    except BaseException:
        if not (out / META).exists():
            if created:
                _remove_own_files(out)
                with contextlib.suppress(OSError):
                    out.rmdir()
            elif lock_created:
                (out / LOCK).unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def _remove_own_files(out: Path) -> None:
    for path in out.iterdir():
        if OWN_FILES.fullmatch(path.name) and path.name != LOCK:
            path.unlink()
    (out / LOCK).unlink(missing_ok=True)


def _previous(out: Path, model: EmbeddingModel, chunking: dict, report: IndexReport) -> SearchIndex | None:
    """The existing index when its vectors can be reused; else None and the reason in `report`.
    A folder holding only edge's own files but no index.json (a first run killed before its
    commit) is cleaned; a folder holding anything else is refused."""
    if not (out / META).is_file():
        names = [p.name for p in out.iterdir()]
        if not all(OWN_FILES.fullmatch(name) for name in names):
            raise InputError(f"{out} exists and is not an edge index. Choose another -o.")
        if len(names) > 1:
            report.rebuilt = "the last run was interrupted before it finished"
        for name in names:
            if name != LOCK:
                (out / name).unlink()
        return None
    try:
        previous = SearchIndex.open(out, exact=True)
        previous.check_model(model)
        for shard in previous.shards:  # reused rows are copied: they must be what was written
            shard.verify()
    except SearchIndexError as exc:
        report.rebuilt = str(exc).split(". ")[0]
        return None
    except ValueError as exc:
        report.rebuilt = f"index {out} is corrupt ({exc})"
        return None
    if previous.meta["chunking"] != chunking:
        report.rebuilt = "chunking settings changed"
        return None
    return previous

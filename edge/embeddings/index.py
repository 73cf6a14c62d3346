"""The on-disk search index: build or update it from files, open and verify it.

An index is a folder of plain files (no pickle):
    index.json          what it is: format, version, the model's identity and bundle, how
                        text was chunked, each file's sha256 and rows, data checksums
    vectors-<id>.npy    (chunks, dim) float32, unit rows (so a dot product is the cosine)
    chunks-<id>.jsonl   one {"file", "start_line", "end_line", "text", "heading"} per row (an
                        index from before headings has no "heading": it loads, and its
                        next update rebuilds it)
    .edge-index.lock    held (fcntl.flock, exclusive) by the one run writing the folder
Each run writes new data files, then replaces index.json in one atomic rename, then
deletes the old data files: an interrupted run leaves the previous index as it was. A
second run on the same folder while one writes fails at once (the lock), so one run never
deletes another's files. A folder left by a first run killed before its commit (only
edge's own files, no index.json) is cleaned and rebuilt. Re-running embeds only files
whose bytes changed and drops files that are gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge import jsonfile
from edge.bundle import sha256
from edge.embeddings.chunking import HEADING_TOKENS, chunk_text, with_heading
from edge.embeddings.corpus import Skipped, TextFile, text_files
from edge.embeddings.model import EmbeddingModel
from edge.errors import InputError, SearchIndexError
from edge.embeddings.pooling import l2_normalize

FORMAT = "edge-index"
VERSION = 1
META = "index.json"
LOCK = ".edge-index.lock"
# Every name a run of edge writes in an index folder: what an uncommitted folder may hold.
OWN_FILES = re.compile(r"vectors-[0-9a-f]{12}\.npy|chunks-[0-9a-f]{12}\.jsonl|\.index\.json\.[0-9a-f]{12}\.partial"
                       + "|" + re.escape(LOCK))
DEFAULT_CHUNK_TOKENS = 128
DEFAULT_OVERLAP = 32
MARKDOWN = (".md", ".markdown", ".mdown", ".mkd")  # files whose chunks carry their section heading
EMBED_GROUP = 256  # texts per embed call: the progress bar's step
_REBUILD = "Rebuild it with `edge index PATH... -o INDEX`."


@dataclass(frozen=True)
class Entry:
    """One indexed chunk: where it comes from, and its text."""

    file: str
    start_line: int
    end_line: int
    text: str
    heading: str = ""  # the Markdown section the chunk sits in, embedded and matched with the text

    @property
    def searchable(self) -> str:
        """What is embedded and matched: the heading, then the text."""
        return with_heading(self.heading, self.text)


@dataclass
class SearchIndex:
    path: Path
    meta: dict
    vectors: np.ndarray  # (N, dim) float32, unit rows
    entries: list[Entry]

    @classmethod
    def open(cls, path: str | Path) -> SearchIndex:
        """Read and verify an index; SearchIndexError (with the fix) if anything is off."""
        path = Path(path).expanduser()
        meta = _read_meta(path)
        try:
            vectors = _read_vectors(path, meta)
            entries = _read_entries(path, meta)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SearchIndexError(f"index {path} is corrupt ({exc.__class__.__name__}: {exc}). {_REBUILD}") from None
        if len(entries) != len(vectors):
            raise SearchIndexError(f"index {path} is corrupt ({len(entries)} chunks, {len(vectors)} vectors). "
                                   f"{_REBUILD}")
        return cls(path, meta, vectors, entries)

    @property
    def bundle(self) -> Path:
        """The bundle the index was built with (where it was then)."""
        return Path(self.meta["model"]["bundle"])

    def check_model(self, model: EmbeddingModel) -> None:
        if model.identity != self.meta["model"]["identity"]:
            raise SearchIndexError(
                f"index {self.path} was built with another model ({self.meta['model']['source']}, bundle "
                f"{self.bundle}); vectors of different models cannot be compared. Search with that bundle "
                "(-m), or rebuild the index with this one."
            )


@dataclass
class IndexReport:
    files: int = 0
    chunks: int = 0
    embedded_files: list[str] = field(default_factory=list)
    removed_files: list[str] = field(default_factory=list)
    reused_files: int = 0
    skipped: Skipped = field(default_factory=Skipped)
    rebuilt: str | None = None  # why nothing of the previous index was reused


def build_index(
    out: str | Path,
    paths: Iterable[str | Path],
    model: EmbeddingModel,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    overlap: int = DEFAULT_OVERLAP,
    progress: Callable[[int, int], None] | None = None,
) -> IndexReport:
    """Create or update the index at `out` for the text files under `paths`.
    `progress(done, total)` is called as new chunks are embedded."""
    out, paths = Path(out).expanduser().resolve(), list(paths)
    chunking = _chunking(model, chunk_tokens, overlap)
    with _locked(out):
        return _build(out, paths, model, chunking, progress)


def _build(out: Path, paths: list, model: EmbeddingModel, chunking: dict, progress) -> IndexReport:
    """build_index's work, with the folder's lock held."""
    report = IndexReport()
    previous = _previous(out, model, chunking, report)
    rows: list[tuple[TextFile, list[Entry], np.ndarray | None]] = []
    for file in text_files(paths, out, report.skipped):
        old = previous.meta["files"].get(str(file.path)) if previous else None
        if old is not None and old["sha256"] == file.sha256:
            start, end = old["rows"]
            rows.append((file, previous.entries[start:end], previous.vectors[start:end]))
            report.reused_files += 1
        else:
            rows.append((file, _entries(file, model, chunking), None))
            report.embedded_files.append(str(file.path))
    if not rows:
        raise InputError(f"no text files found in {', '.join(map(str, paths))}. Pass files or folders with text.")
    kept = {str(f.path) for f, _, _ in rows}
    report.removed_files = sorted(set(previous.meta["files"]) - kept) if previous else []
    vectors = _embed_new(model, rows, progress)
    entries = [e for _, file_entries, _ in rows for e in file_entries]
    _write(out, _meta(model, chunking, rows, report), vectors, entries)
    report.files, report.chunks = len(rows), len(entries)
    return report


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
        previous = SearchIndex.open(out)
        previous.check_model(model)
    except SearchIndexError as exc:
        report.rebuilt = str(exc).split(". ")[0]
        return None
    if previous.meta["chunking"] != chunking:
        report.rebuilt = "chunking settings changed"
        return None
    return previous


def _entries(file: TextFile, model: EmbeddingModel, chunking: dict) -> list[Entry]:
    def count(text: str) -> int:
        return len(model.tokenizer.encode(text))

    markdown = file.path.suffix.lower() in MARKDOWN
    chunks = chunk_text(file.text, count, chunking["tokens"], chunking["overlap"], markdown)
    return [Entry(str(file.path), c.start_line, c.end_line, c.text, c.heading) for c in chunks]


def _embed_new(model: EmbeddingModel, rows, progress) -> np.ndarray:
    """All rows' vectors (N, dim): reused ones as they were, new ones embedded now."""
    texts = [e.searchable for _, entries, old in rows if old is None for e in entries]
    fresh = np.empty((len(texts), model.dim), dtype=np.float32)
    for start in range(0, len(texts), EMBED_GROUP):
        fresh[start : start + EMBED_GROUP] = model.embed(texts[start : start + EMBED_GROUP])
        if progress:
            progress(min(start + EMBED_GROUP, len(texts)), len(texts))
    fresh = l2_normalize(fresh)  # cosine by dot product, whatever the model's own setting
    parts, taken = [], 0
    for _, entries, old in rows:
        if old is None:
            old, taken = fresh[taken : taken + len(entries)], taken + len(entries)
        parts.append(old)
    return np.concatenate(parts) if parts else np.empty((0, model.dim), np.float32)


def _meta(model: EmbeddingModel, chunking: dict, rows, report: IndexReport) -> dict:
    files, start = {}, 0
    for file, entries, _ in rows:
        files[str(file.path)] = {"sha256": file.sha256, "rows": [start, start + len(entries)]}
        start += len(entries)
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": {"identity": model.identity, "source": model.manifest.source, "dim": model.dim,
                  "bundle": str(model.path.resolve()) if model.path else ""},
        "chunking": chunking,
        "files": files,
        "skipped": {"binary": len(report.skipped.binary), "non_utf8": len(report.skipped.non_utf8),
                    "unreadable": len(report.skipped.unreadable)},
    }


# --- plain files ----------------------------------------------------------------------------


def _write(out: Path, meta: dict, vectors: np.ndarray, entries: Sequence[Entry]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    run = uuid.uuid4().hex[:12]
    names = {"vectors": f"vectors-{run}.npy", "chunks": f"chunks-{run}.jsonl"}
    np.save(out / names["vectors"], np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)
    with open(out / names["chunks"], "w", encoding="utf-8") as f:
        for entry in entries:
            f.write(json.dumps(asdict(entry), ensure_ascii=False) + "\n")
    meta = {**meta, "data": names, "checksums": {n: sha256(out / n) for n in names.values()}}
    partial = out / f".{META}.{run}.partial"
    partial.write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(partial, out / META)  # the commit point
    for stale in out.iterdir():  # safe: the lock keeps other runs out of this folder
        if OWN_FILES.fullmatch(stale.name) and stale.name not in (*names.values(), LOCK):
            stale.unlink()


def _read_meta(path: Path) -> dict:
    file = path / META
    if not file.is_file():
        raise SearchIndexError(f"{path} is not an edge index (no {META}). Build one with `edge index PATH... -o {path}`.")
    try:
        meta = jsonfile.loads(file.read_bytes())
    except (OSError, ValueError) as exc:
        raise SearchIndexError(f"index {path} is corrupt ({META}: {exc}). {_REBUILD}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise SearchIndexError(f"{path}/{META} is not a version {VERSION} edge index. {_REBUILD}")
    problem = _meta_problem(meta)
    if problem:
        raise SearchIndexError(f"index {path} is corrupt ({META} field {problem}). {_REBUILD}")
    return meta


def _meta_problem(meta: dict) -> str | None:
    """What is wrong with index.json's fields, or None. Example: {"model": {}} -> "model.identity must be ..."."""
    def kind(value, want, text):
        ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
        return None if ok else text

    model, chunking, data = meta.get("model"), meta.get("chunking"), meta.get("data")
    files, checksums = meta.get("files"), meta.get("checksums")
    for name, value in (("model", model), ("chunking", chunking), ("files", files), ("data", data),
                        ("checksums", checksums)):
        if not isinstance(value, dict):
            return f"{name} must be an object"
    for name in ("identity", "source", "bundle"):
        if not isinstance(model.get(name), str):
            return f"model.{name} must be a string"
    if kind(model.get("dim"), int, "") is not None or not 1 <= model["dim"] <= 1 << 16:
        return "model.dim must be an integer between 1 and 65536"
    if any(kind(chunking.get(k), int, "") is not None for k in ("tokens", "overlap")):
        return "chunking.tokens and chunking.overlap must be integers"
    for name, entry in files.items():
        rows = entry.get("rows") if isinstance(entry, dict) else None
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and isinstance(rows, list)
                and len(rows) == 2 and all(type(r) is int and r >= 0 for r in rows) and rows[0] <= rows[1]):
            return f"files.{name[:60]} must be {{\"sha256\": ..., \"rows\": [start, end]}}"
    for key, pattern in (("vectors", r"vectors-[0-9a-f]{12}\.npy"), ("chunks", r"chunks-[0-9a-f]{12}\.jsonl")):
        if not (isinstance(data.get(key), str) and re.fullmatch(pattern, data[key])):
            return f"data.{key} must name this index's own {key} file"  # never a path out of the folder
        if not isinstance(checksums.get(data[key]), str):
            return f"checksums.{data[key]} must be a string"
    return None


def _read_vectors(path: Path, meta: dict) -> np.ndarray:
    file = _checked(path, meta, "vectors")
    vectors = np.load(file, allow_pickle=False)
    if vectors.dtype != np.float32 or vectors.ndim != 2 or vectors.shape[1] != meta["model"]["dim"]:
        raise ValueError(f"vectors are {vectors.dtype} {vectors.shape}, expected float32 (n, {meta['model']['dim']})")
    return vectors


def _read_entries(path: Path, meta: dict) -> list[Entry]:
    with open(_checked(path, meta, "chunks"), encoding="utf-8") as f:
        entries = [Entry(**json.loads(line)) for line in f]
    if not all(isinstance(e.file, str) and isinstance(e.text, str) and isinstance(e.heading, str)
               and type(e.start_line) is int
               and type(e.end_line) is int for e in entries):
        raise ValueError("a chunk has a field of the wrong type")
    return entries


def _checked(path: Path, meta: dict, kind: str) -> Path:
    name = meta["data"][kind]
    file = path / name
    if sha256(file) != meta["checksums"][name]:
        raise ValueError(f"{name} does not match its checksum")
    return file

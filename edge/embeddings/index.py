"""The on-disk search index: build or update it from files, open and verify it.

An index is a folder of plain files (no pickle):
    index.json          what it is: format, version, the model's identity and bundle, how
                        text was chunked, each file's sha256 and rows, data checksums
    vectors-<id>.npy    (chunks, dim) float32, unit rows (so a dot product is the cosine)
    chunks-<id>.jsonl   one {"file", "start_line", "end_line", "text"} per row
Each run writes new data files, then replaces index.json in one atomic rename, then
deletes the old data files: an interrupted run leaves the previous index as it was.
Re-running embeds only files whose bytes changed and drops files that are gone.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge.bundle import sha256
from edge.embeddings.chunking import chunk_text
from edge.embeddings.corpus import Skipped, TextFile, text_files
from edge.embeddings.model import EmbeddingModel
from edge.errors import InputError, SearchIndexError
from edge.embeddings.pooling import l2_normalize

FORMAT = "edge-index"
VERSION = 1
META = "index.json"
DEFAULT_CHUNK_TOKENS = 128
DEFAULT_OVERLAP = 32
EMBED_GROUP = 256  # texts per embed call: the progress bar's step
_REBUILD = "Rebuild it with `edge index PATH... -o INDEX`."


@dataclass(frozen=True)
class Entry:
    """One indexed chunk: where it comes from, and its text."""

    file: str
    start_line: int
    end_line: int
    text: str


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
    budget = min(chunk_tokens, model.max_length - specials)
    if isinstance(chunk_tokens, bool) or not isinstance(chunk_tokens, int) or chunk_tokens < 8:
        raise InputError(f"need {{param}} >= 8, got {chunk_tokens!r}.", param="chunk_tokens")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < budget:
        raise InputError(f"need 0 <= {{param}} < {budget} (the chunk size), got {overlap!r}.", param="overlap")
    return {"tokens": budget, "overlap": overlap}


def _previous(out: Path, model: EmbeddingModel, chunking: dict, report: IndexReport) -> SearchIndex | None:
    """The existing index when its vectors can be reused; else None and the reason in `report`."""
    if not out.exists():
        return None
    if not out.is_dir() or (any(out.iterdir()) and not (out / META).is_file()):
        raise InputError(f"{out} exists and is not an edge index. Choose another -o.")
    if not (out / META).is_file():
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

    chunks = chunk_text(file.text, count, chunking["tokens"], chunking["overlap"])
    return [Entry(str(file.path), c.start_line, c.end_line, c.text) for c in chunks]


def _embed_new(model: EmbeddingModel, rows, progress) -> np.ndarray:
    """All rows' vectors (N, dim): reused ones as they were, new ones embedded now."""
    texts = [e.text for _, entries, old in rows if old is None for e in entries]
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
        "skipped": {"binary": len(report.skipped.binary), "non_utf8": len(report.skipped.non_utf8)},
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
    for stale in [*out.glob("vectors-*.npy"), *out.glob("chunks-*.jsonl"), *out.glob(f".{META}.*.partial")]:
        if stale.name not in names.values():
            stale.unlink()


def _read_meta(path: Path) -> dict:
    file = path / META
    if not file.is_file():
        raise SearchIndexError(f"{path} is not an edge index (no {META}). Build one with `edge index PATH... -o {path}`.")
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SearchIndexError(f"index {path} is corrupt ({META}: {exc.__class__.__name__}). {_REBUILD}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise SearchIndexError(f"{path}/{META} is not a version {VERSION} edge index. {_REBUILD}")
    return meta


def _read_vectors(path: Path, meta: dict) -> np.ndarray:
    file = _checked(path, meta, "vectors")
    vectors = np.load(file, allow_pickle=False)
    if vectors.dtype != np.float32 or vectors.ndim != 2 or vectors.shape[1] != meta["model"]["dim"]:
        raise ValueError(f"vectors are {vectors.dtype} {vectors.shape}, expected float32 (n, {meta['model']['dim']})")
    return vectors


def _read_entries(path: Path, meta: dict) -> list[Entry]:
    with open(_checked(path, meta, "chunks"), encoding="utf-8") as f:
        return [Entry(**json.loads(line)) for line in f]


def _checked(path: Path, meta: dict, kind: str) -> Path:
    name = meta["data"][kind]
    file = path / name
    if sha256(file) != meta["checksums"][name]:
        raise ValueError(f"{name} does not match its checksum")
    return file

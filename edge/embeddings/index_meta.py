"""index.json: what an index is, read as hostile input and checked field by field.

Version 2 (written now) lists shards and an optional ANN graph:
    {"format": "edge-index", "version": 2,
     "model": {"identity", "source", "dim", "bundle"}, "chunking": {"tokens", "overlap"},
     "files": {path: {"sha256", "rows": [start, end]}}, "skipped": {...},
     "shards": [{"vectors", "chunks", "offsets", "rows"}], "ann": null | {"file", "library", "rows", ...},
     "checksums": {file name: sha256}}
Version 1 (one vectors and one chunks file under "data") is still read, as one shard.
Every file name must be one of the index's own (a fixed pattern: never a path out of the folder).
"""

from __future__ import annotations

import re
from pathlib import Path

from edge import jsonfile
from edge.errors import SearchIndexError

FORMAT = "edge-index"
VERSION = 2
READS = (1, 2)
META = "index.json"
REBUILD = "Rebuild it with `edge index PATH... -o INDEX`."
NAMES = {"vectors": r"vectors-[0-9a-f]{12}\.npy", "chunks": r"chunks-[0-9a-f]{12}\.jsonl",
         "offsets": r"offsets-[0-9a-f]{12}\.npy", "ann": r"ann-[0-9a-f]{12}\.usearch"}
MAX_ROWS = 1 << 40


def read_meta(path: Path) -> dict:
    """index.json parsed and checked, version 1 turned into version 2's shape; else SearchIndexError."""
    file = path / META
    if not file.is_file():
        raise SearchIndexError(f"{path} is not an edge index (no {META}). Build one with `edge index PATH... -o {path}`.")
    try:
        meta = jsonfile.loads(file.read_bytes())
    except (OSError, ValueError) as exc:
        raise SearchIndexError(f"index {path} is corrupt ({META}: {exc}). {REBUILD}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") not in READS:
        raise SearchIndexError(f"{path}/{META} is not a version {' or '.join(map(str, READS))} edge index. {REBUILD}")
    problem = _common_problem(meta) or (_v1_problem(meta) if meta["version"] == 1 else _v2_problem(meta))
    if problem:
        raise SearchIndexError(f"index {path} is corrupt ({META} field {problem}). {REBUILD}")
    if meta["version"] == 1:
        rows = max((entry["rows"][1] for entry in meta["files"].values()), default=0)
        meta = {**meta, "shards": [{**meta["data"], "offsets": None, "rows": rows}], "ann": None}
    return meta


def _kind(value, want) -> bool:
    return isinstance(value, want) and not (want is int and isinstance(value, bool))


def _common_problem(meta: dict) -> str | None:
    """What is wrong with the fields both versions share, or None.
    Example: {"model": {}} -> "model.identity must be a string"."""
    model, chunking, files, checksums = meta.get("model"), meta.get("chunking"), meta.get("files"), meta.get("checksums")
    for name, value in (("model", model), ("chunking", chunking), ("files", files), ("checksums", checksums)):
        if not isinstance(value, dict):
            return f"{name} must be an object"
    for name in ("identity", "source", "bundle"):
        if not isinstance(model.get(name), str):
            return f"model.{name} must be a string"
    if not _kind(model.get("dim"), int) or not 1 <= model["dim"] <= 1 << 16:
        return "model.dim must be an integer between 1 and 65536"
    if not all(_kind(chunking.get(k), int) for k in ("tokens", "overlap")):
        return "chunking.tokens and chunking.overlap must be integers"
    for name, entry in files.items():
        rows = entry.get("rows") if isinstance(entry, dict) else None
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and isinstance(rows, list)
                and len(rows) == 2 and all(type(r) is int and 0 <= r <= MAX_ROWS for r in rows) and rows[0] <= rows[1]):
            return f"files.{name[:60]} must be {{\"sha256\": ..., \"rows\": [start, end]}}"
    return None


def _named(record: dict, key: str, checksums: dict, where: str) -> str | None:
    name = record.get(key)
    if not (isinstance(name, str) and re.fullmatch(NAMES[key], name)):
        return f"{where}.{key} must name this index's own {key} file"  # never a path out of the folder
    if not isinstance(checksums.get(name), str):
        return f"checksums.{name} must be a string"
    return None


def _v1_problem(meta: dict) -> str | None:
    data = meta.get("data")
    if not isinstance(data, dict):
        return "data must be an object"
    return _named(data, "vectors", meta["checksums"], "data") or _named(data, "chunks", meta["checksums"], "data")


def _v2_problem(meta: dict) -> str | None:
    shards, ann, checksums = meta.get("shards"), meta.get("ann"), meta["checksums"]
    if not isinstance(shards, list) or not shards or not all(isinstance(s, dict) for s in shards):
        return "shards must be a list of objects"
    for i, shard in enumerate(shards):
        for key in ("vectors", "chunks", "offsets"):
            problem = _named(shard, key, checksums, f"shards[{i}]")
            if problem:
                return problem
        if not _kind(shard.get("rows"), int) or not 0 <= shard["rows"] <= MAX_ROWS:
            return f"shards[{i}].rows must be a count"
    total = sum(s["rows"] for s in shards)
    if any(entry["rows"][1] > total for entry in meta["files"].values()):
        return f"files must point at rows below {total}"
    if ann is not None:
        if not isinstance(ann, dict):
            return "ann must be an object or null"
        problem = _named({"ann": ann.get("file")}, "ann", checksums, "ann")
        if problem:
            return problem
        for key in ("rows", "dim", "connectivity", "expansion_search", "rescore"):
            if not _kind(ann.get(key), int) or not 1 <= ann[key] <= MAX_ROWS:
                return f"ann.{key} must be a positive integer"
        if ann["rows"] != total or not all(isinstance(ann.get(k), str) for k in ("library", "dtype", "metric")):
            return f"ann must describe the {total} rows with library, dtype and metric"
        if ann["connectivity"] > 256 or ann["expansion_search"] > 4096 or ann["rescore"] > 4096:
            return "ann settings are out of range"
    return None

"""An index's rows on disk, one shard at a time: vectors memory-mapped, chunk texts read by line.

A shard is three plain files (no pickle) named by one random id:
    vectors-<id>.npy    (rows, dim) float32 unit rows, opened with mmap: opening reads its header only
    chunks-<id>.jsonl   one {"file", "start_line", "end_line", "text", "heading"} a line (an index
                        from before headings has no "heading": it opens, and its next update rebuilds it)
    offsets-<id>.npy    (rows + 1,) int64: where each line of the .jsonl starts (a hit reads one line)
A version 1 index has one shard without an offsets file (its lines are found by reading it).

Every file is hostile: before numpy maps a vectors file its header must say float32, C order,
(rows, dim) as the manifest does, and the file must be exactly that long; offsets must rise
from 0 to the .jsonl's size; each line read is checked field by field. The sha256 of every
file (in the manifest) is checked by `verify()`, which the index runs at open for small
indexes and before it scans a large one in full.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from edge import jsonfile
from edge.bundle import sha256
from edge.embeddings.chunking import with_heading

SHARD_ROWS = 65_536  # rows per shard: 96 MiB of 384-dim float32, buffered while it is written
FIELDS = {"file", "start_line", "end_line", "text", "heading"}  # a chunk's line; "heading" since ask
MAX_LINE = 1 << 24  # bytes of one chunk's JSON line: far above any chunk an encoder can take


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


# --- writing ------------------------------------------------------------------------------------


class ShardWriter:
    """Rows in (in index order), shards out: `add` as rows come, `close` for the shards' records
    ({"vectors", "chunks", "offsets", "rows"}) and every file's sha256."""

    def __init__(self, out: Path, dim: int, shard_rows: int = SHARD_ROWS):
        self.out, self.dim, self.shard_rows = out, dim, shard_rows
        self.records: list[dict] = []
        self.checksums: dict[str, str] = {}
        self._vectors: list[np.ndarray] = []  # each (n, dim)
        self._entries: list[Entry] = []

    def add(self, vectors: np.ndarray, entries: Sequence[Entry]) -> None:
        if vectors.shape != (len(entries), self.dim):
            raise ValueError(f"{vectors.shape} vectors for {len(entries)} chunks of dim {self.dim}")
        while len(entries):
            room = self.shard_rows - len(self._entries)
            self._vectors.append(vectors[:room])
            self._entries.extend(entries[:room])
            vectors, entries = vectors[room:], entries[room:]
            if len(self._entries) == self.shard_rows:
                self._flush()

    def close(self) -> list[dict]:
        if self._entries or not self.records:  # an index of no rows still has one (empty) shard
            self._flush()
        return self.records

    def _flush(self) -> None:
        run = uuid.uuid4().hex[:12]
        names = {"vectors": f"vectors-{run}.npy", "chunks": f"chunks-{run}.jsonl", "offsets": f"offsets-{run}.npy"}
        vectors = np.concatenate(self._vectors) if self._vectors else np.empty((0, self.dim), np.float32)
        np.save(self.out / names["vectors"], np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)
        offsets = [0]
        with open(self.out / names["chunks"], "wb") as f:
            for entry in self._entries:
                line = (json.dumps(asdict(entry), ensure_ascii=False) + "\n").encode("utf-8")
                f.write(line)
                offsets.append(offsets[-1] + len(line))
        np.save(self.out / names["offsets"], np.array(offsets, dtype=np.int64), allow_pickle=False)
        self.checksums.update({name: sha256(self.out / name) for name in names.values()})
        self.records.append({**names, "rows": len(self._entries)})
        self._vectors, self._entries = [], []


# --- reading ------------------------------------------------------------------------------------


class Shard:
    """One shard opened: `vectors` is a read-only memory map, `entry(i)` reads line i."""

    def __init__(self, folder: Path, record: dict, dim: int, checksums: dict):
        self.folder, self.record, self.rows, self.checksums = folder, record, record["rows"], checksums
        self.dim = dim
        self.vectors, self._data_start = _map_vectors(folder / record["vectors"], self.rows, dim)  # (rows, dim)
        self._chunks = folder / record["chunks"]
        size = self._chunks.stat().st_size
        if record.get("offsets"):
            self.offsets = _offsets_file(folder / record["offsets"], self.rows, size)  # (rows + 1,)
        else:  # version 1: small by construction; find the lines by reading the file once
            self.offsets = _line_offsets(self._chunks)
            if len(self.offsets) != self.rows + 1:
                raise ValueError(f"{record['chunks']} has {len(self.offsets) - 1} chunks, expected {self.rows}")
        self._files: dict[str, BinaryIO] = {}  # "chunks", "vectors": opened when first read
        self._lock = threading.Lock()
        self.verified = False

    def files(self) -> list[str]:
        return [self.record[k] for k in ("vectors", "chunks", "offsets") if self.record.get(k)]

    def verify(self) -> None:
        """Check every file of the shard against its sha256 (once)."""
        if not self.verified:
            for name in self.files():
                if sha256(self.folder / name) != self.checksums[name]:
                    raise ValueError(f"{name} does not match its checksum")
            self.verified = True

    def entry(self, row: int) -> Entry:
        start, end = int(self.offsets[row]), int(self.offsets[row + 1])
        # pread: no shared file position, so threads (edge serve's grounding) may read at once
        return _entry(os.pread(self._open("chunks"), end - start, start))

    def vectors_at(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), dim) float32: the given rows, read with pread. Reading a few rows through
        the map would leave 64 KiB of it mapped around each (Linux's fault-around), for good:
        ~2.5 MB more RSS per search of an ANN index, up to the whole file in a server."""
        fd, size = self._open("vectors"), self.dim * 4
        out = np.empty((len(rows), self.dim), np.float32)
        for i, row in enumerate(rows):
            data = os.pread(fd, size, self._data_start + int(row) * size)
            if len(data) != size:
                raise ValueError(f"{self.record['vectors']} ends before row {int(row)}")
            out[i] = np.frombuffer(data, np.float32)
        return out

    def entries(self) -> Iterator[Entry]:
        with open(self._chunks, "rb") as f:
            for row in range(self.rows):
                yield _entry(f.read(int(self.offsets[row + 1] - self.offsets[row])))

    def _open(self, kind: str) -> int:
        """The descriptor of the shard's `kind` file, opened once (under a lock: threads of
        edge serve search at once)."""
        with self._lock:
            if kind not in self._files:
                self._files[kind] = open(self.folder / self.record[kind], "rb")
            return self._files[kind].fileno()

    def close(self) -> None:
        with self._lock:
            for file in self._files.values():
                file.close()
            self._files.clear()


def _map_vectors(file: Path, rows: int, dim: int) -> tuple[np.ndarray, int]:
    """The vectors file memory-mapped, after its header and length were checked (no pickle),
    and the offset of its first row."""
    with open(file, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"{file.name} is an .npy version {version}, expected 1.0 or 2.0")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f, max_header_size=1024)
        data_start = f.tell()
    if dtype != np.dtype("<f4") or fortran or shape != (rows, dim):
        raise ValueError(f"{file.name} holds {dtype} {shape}{' (Fortran order)' if fortran else ''}, "
                         f"expected float32 ({rows}, {dim})")
    if file.stat().st_size != data_start + rows * dim * 4:
        raise ValueError(f"{file.name} is {file.stat().st_size} bytes, expected {data_start + rows * dim * 4}")
    if rows == 0:
        return np.empty((0, dim), np.float32), data_start
    return np.load(file, mmap_mode="r", allow_pickle=False), data_start


def _offsets_file(file: Path, rows: int, size: int) -> np.ndarray:
    if file.stat().st_size > 128 + 8 * (rows + 1):
        raise ValueError(f"{file.name} is larger than {rows + 1} offsets")
    offsets = np.load(file, allow_pickle=False)
    if offsets.dtype != np.dtype("<i8") or offsets.shape != (rows + 1,):
        raise ValueError(f"{file.name} holds {offsets.dtype} {offsets.shape}, expected int64 ({rows + 1},)")
    steps = np.diff(offsets)
    if offsets[0] != 0 or offsets[-1] != size or (steps < 1).any() or (steps > MAX_LINE).any():
        raise ValueError(f"{file.name} does not mark lines of its chunks file")
    return offsets


def _line_offsets(file: Path) -> np.ndarray:
    """(lines + 1,) int64: the start of every line, and the end of the file."""
    offsets, position = [0], 0
    with open(file, "rb") as f:
        for line in f:
            position += len(line)
            offsets.append(position)
    return np.array(offsets, dtype=np.int64)


def _entry(line: bytes) -> Entry:
    if len(line) > MAX_LINE:
        raise ValueError(f"a chunk's line is over {MAX_LINE} bytes")
    fields = jsonfile.loads(line)
    if not isinstance(fields, dict) or not {"file", "start_line", "end_line", "text"} <= set(fields) <= FIELDS:
        raise ValueError("a chunk is not {file, start_line, end_line, text, heading}")
    entry = Entry(**fields)
    if not (isinstance(entry.file, str) and isinstance(entry.text, str) and isinstance(entry.heading, str)
            and type(entry.start_line) is int and type(entry.end_line) is int):
        raise ValueError("a chunk has a field of the wrong type")
    return entry


class Rows(Sequence):
    """Every shard's entries as one read-only list: rows are read when asked for.

    Example: Rows([shard of 2 rows, shard of 3 rows])[3] -> the second shard's entry(1)."""

    def __init__(self, shards: list[Shard]):
        self.shards = shards
        self.starts = np.cumsum([0] + [s.rows for s in shards])  # (shards + 1,)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def locate(self, row: int) -> tuple[Shard, int]:
        """The shard holding global `row`, and the row's index inside it."""
        which = int(np.searchsorted(self.starts, row, side="right")) - 1
        return self.shards[which], row - int(self.starts[which])

    def __getitem__(self, item):
        if isinstance(item, slice):
            return [self[i] for i in range(*item.indices(len(self)))]
        row = int(item) + len(self) if int(item) < 0 else int(item)
        if not 0 <= row < len(self):
            raise IndexError(item)
        shard, local = self.locate(row)
        return shard.entry(local)

    def __iter__(self) -> Iterator[Entry]:
        for shard in self.shards:
            yield from shard.entries()

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and len(self) == len(other) and all(a == b for a, b in zip(self, other))

    def vectors(self, start: int, stop: int) -> np.ndarray:
        """(stop - start, dim) float32: the rows start..stop, read from the maps."""
        parts = []
        for shard, first in zip(self.shards, self.starts[:-1]):
            lo, hi = max(start - first, 0), min(stop - first, shard.rows)
            if lo < hi:
                parts.append(shard.vectors[lo:hi])
        return np.concatenate(parts) if parts else np.empty((0, self.shards[0].vectors.shape[1]), np.float32)


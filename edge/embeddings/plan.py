"""What one build of an index does, the same whether it embeds here or on a Ray cluster.

In: the files' texts (or that a file is unchanged), the previous index's rows. Out: the rows
of the new index in file order, fed to a ShardWriter. The steps both paths share, so that
they give the same chunks and the same vectors bit for bit:
  - `chunk_file`: a file's text -> Entry per chunk (edge's chunker, token counts from the model);
  - `groups`: the new chunks' texts, in file order, cut into groups of EMBED_GROUP; each group
    is embedded by one `embed_group` call (int8 encoders quantize activations per batch, so a
    vector depends on the texts embedded with it: the groups must not depend on who embeds);
  - `write_rows`: reused rows and fresh vectors interleaved back into file order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import PurePath

import numpy as np

from edge.embeddings.chunking import chunk_text
from edge.embeddings.pooling import l2_normalize
from edge.embeddings.shards import Entry, Rows, ShardWriter

MARKDOWN = (".md", ".markdown", ".mdown", ".mkd")  # files whose chunks carry their section heading
EMBED_GROUP = 256  # texts per embed call: the unit of work on Ray, and the progress bar's step


@dataclass
class Planned:
    """One file of the new index: its chunks to embed, or the previous index's rows it keeps."""

    path: str
    sha256: str
    entries: list[Entry] | None  # None: unchanged, reuse `reused`
    reused: tuple[int, int] | None = None  # rows start..end of the previous index

    @property
    def rows(self) -> int:
        return len(self.entries) if self.entries is not None else self.reused[1] - self.reused[0]


def chunk_file(path: str, text: str, count: Callable[[str], int], chunking: dict) -> list[Entry]:
    markdown = PurePath(path).suffix.lower() in MARKDOWN
    chunks = chunk_text(text, count, chunking["tokens"], chunking["overlap"], markdown)
    return [Entry(path, c.start_line, c.end_line, c.text, c.heading) for c in chunks]


def groups(plan: Iterable[Planned]) -> list[list[str]]:
    """The new chunks' texts in file order, EMBED_GROUP at a time. Example (group of 2):
    files with chunks [a, b, c] and [d] -> [[a, b], [c, d]]"""
    texts = [e.searchable for p in plan if p.entries is not None for e in p.entries]
    return [texts[i : i + EMBED_GROUP] for i in range(0, len(texts), EMBED_GROUP)]


def embed_group(model, texts: list[str]) -> np.ndarray:
    """(len(texts), dim) float32 unit rows: cosine by dot product, whatever the model's own setting."""
    return l2_normalize(model.embed(texts))


def write_rows(writer: ShardWriter, plan: list[Planned], previous: Rows | None, fresh: Iterator[np.ndarray],
               progress: Callable[[int, int], None] | None, total: int) -> None:
    """Every planned file's rows into `writer` in order: reused rows read from the previous
    index's maps, new ones taken from `fresh` (one (n, dim) array per group, in group order)."""
    pending, have, done = [], 0, 0  # arrays of fresh rows not yet written, and how many
    for planned in plan:
        if planned.entries is None:
            start, end = planned.reused
            writer.add(previous.vectors(start, end), previous[start:end])
            continue
        need = len(planned.entries)
        while have < need:
            pending.append(next(fresh))
            have, done = have + len(pending[-1]), done + len(pending[-1])
            if progress:
                progress(done, total)
        rows = np.concatenate(pending) if len(pending) > 1 else pending[0] if pending else np.empty((0, writer.dim))
        writer.add(rows[:need], planned.entries)
        pending, have = ([rows[need:]] if have > need else []), have - need
    if have or next(fresh, None) is not None:
        raise RuntimeError("more vectors were embedded than chunks planned")

"""Which files an index covers: PATHs in, readable UTF-8 text files out, the rest counted.

A directory is walked recursively (hidden files and folders skipped, in sorted order so
runs are reproducible); a file given by name is always considered. A file with a NUL byte
near its start is binary, one that does not decode as UTF-8 is skipped as non-UTF-8, and a
file or folder that cannot be read (permissions, vanished meanwhile) as unreadable; all
are counted, never fatal.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from edge.errors import InputError

SNIFF_BYTES = 8192


@dataclass(frozen=True)
class TextFile:
    path: Path  # resolved
    text: str
    sha256: str  # of the bytes on disk: what tells a changed file


@dataclass
class Skipped:
    binary: list[Path] = field(default_factory=list)
    non_utf8: list[Path] = field(default_factory=list)
    unreadable: list[Path] = field(default_factory=list)  # files and folders


def text_files(paths: Iterable[str | Path], exclude: Path | None, skipped: Skipped) -> Iterator[TextFile]:
    """Every text file under `paths` (each once), leaving out anything inside `exclude`."""
    for path in candidates(paths, exclude, skipped):
        loaded = read_text_file(path, skipped)
        if loaded is not None:
            yield loaded


def candidates(paths: Iterable[str | Path], exclude: Path | None, skipped: Skipped) -> Iterator[Path]:
    """Every file under `paths` (each once, not read yet), leaving out anything inside `exclude`."""
    seen: set[Path] = set()
    for path in _walk(paths, skipped):
        if path not in seen and not (exclude is not None and path.is_relative_to(exclude)):
            seen.add(path)
            yield path


def read_text_file(path: Path, skipped: Skipped) -> TextFile | None:
    try:
        data = path.read_bytes()
    except OSError:
        skipped.unreadable.append(path)
        return None
    if b"\0" in data[:SNIFF_BYTES]:
        skipped.binary.append(path)
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        skipped.non_utf8.append(path)
        return None
    return TextFile(path, text.removeprefix("\ufeff"), hashlib.sha256(data).hexdigest())


def _walk(paths: Iterable[str | Path], skipped: Skipped) -> Iterator[Path]:
    for given in paths:
        path = Path(given).expanduser().resolve()
        if path.is_file():
            yield path
        elif path.is_dir():
            yield from _walk_dir(path, skipped)
        else:
            raise InputError(f"{given} does not exist. Pass files or folders to index.")


def _walk_dir(root: Path, skipped: Skipped) -> Iterator[Path]:
    def unreadable(error: OSError) -> None:
        skipped.unreadable.append(Path(error.filename))

    for folder, dirs, files in os.walk(root, onerror=unreadable):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                path = Path(folder) / name
                if path.is_file():  # not a broken link or a socket
                    yield path

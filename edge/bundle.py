"""Find and verify a bundle: the folder exists, every file is there with its checksum,
and the manifest's schema version is one this runtime reads.

In: a path. Out: a `Bundle` (path + manifest). The graph's input/output names are
checked against the manifest when the session opens (session.py).
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import BundleError
from edge.manifest import Manifest, TensorRef

_HINT = "Export one with `edge export SOURCE -o DIR`, or run the README's set-up command."


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: Manifest

    def file(self, name: str, field: str = "files") -> Path:
        """`name` inside the bundle folder; BundleError (naming `field`) if it leads out."""
        return inside(self.path, name, field)

    def tensor_file(self, ref: TensorRef, field: str = "inspect") -> Path:
        """The file holding `ref`'s bytes, checked to be long enough for them."""
        path = self.file(ref.file, field)
        size = math.prod(ref.shape) * np.dtype(ref.dtype).itemsize
        if not path.is_file() or path.stat().st_size < ref.offset + size:
            raise BundleError(f"{ref.file} in bundle {self.path} is missing or too short. Re-export the bundle.")
        return path


def open_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Read the manifest; with `verify`, check that every listed file matches its sha256."""
    path = Path(path).expanduser()
    if not path.exists():
        raise BundleError(f"bundle {path} not found. {_HINT}")
    if not path.is_dir():
        raise BundleError(f"{path} is a file, not a bundle folder. {_HINT}")
    manifest = Manifest.read(path)
    named = named_files(manifest)
    for field, name in named:
        inside(path, name, field)
    for name in (manifest.graph.file, manifest.tokenizer.file):
        if name not in manifest.files:
            raise BundleError(f"manifest.json does not list {name} with a checksum. Re-export the bundle.")
    for name, digest in manifest.files.items():
        _check_file(path, name, digest, verify)
    return Bundle(path, manifest)


def named_files(manifest: Manifest) -> list[tuple[str, str]]:
    """(manifest field, file name) for every file the manifest names."""
    named = [(f"files.{name}", name) for name in manifest.files]
    named += [("graph.file", manifest.graph.file), ("tokenizer.file", manifest.tokenizer.file)]
    found = manifest.inspect
    if found is not None:
        named += [(f"inspect.{key}.file", ref.file) for key in ("embedding", "embedding_scales", "positions")
                  if (ref := getattr(found, key)) is not None]
        named += [("inspect.graph.file", found.graph.file)] if found.graph is not None else []
    return named


def inside(root: Path, name: str, field: str) -> Path:
    """`root / name` if it stays inside `root` once symlinks are resolved, else BundleError:
    a bundle passed around must not make edge read (or hash, a content oracle) other files.

    Example: (b, "model.onnx", ...) -> b/model.onnx;  (b, "../x" or "/etc/hostname", "files") -> BundleError
    """
    path = root / name
    base = root.resolve()
    if not name or Path(name).is_absolute() or not path.resolve().is_relative_to(base) or path.resolve() == base:
        raise BundleError(f"manifest.json field {field} names {name!r}, which is not a file inside the bundle "
                          f"folder {root}. Use a bundle from a source you trust, or re-export it.")
    return path


@contextmanager
def verifying(bundle: Bundle) -> Iterator[None]:
    """Check every file's sha256 in a thread while the body runs (hashlib releases the GIL,
    so hashing overlaps opening the session: ~0.3 s less to load a 190 MB bundle). A
    mismatch raises on exit, in place of whatever a corrupt file made the body raise."""
    bad: list[str] = []
    names = list(bundle.manifest.files.items())
    worker = threading.Thread(target=lambda: bad.extend(n for n, d in names if sha256(bundle.file(n)) != d))
    worker.start()
    try:
        yield
    finally:
        worker.join()
        if bad:
            raise _corrupt(bundle.path, bad[0]) from None


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _check_file(root: Path, name: str, digest: str, verify: bool) -> None:
    file = root / name
    if not file.is_file():
        raise BundleError(f"bundle {root} is missing {name}. Re-export the bundle with `edge export`.")
    if verify and sha256(file) != digest:
        raise _corrupt(root, name)


def _corrupt(root: Path, name: str) -> BundleError:
    return BundleError(
        f"{name} in bundle {root} is corrupt (sha256 does not match the manifest). "
        "Re-export the bundle, or copy it again."
    )

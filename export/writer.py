"""Write a bundle atomically: everything goes to a temporary sibling folder, checksums
are taken, the manifest is written last, and the folder is renamed into place. A failure
or Ctrl-C at any point leaves nothing at the output path.

A killed export cannot clean up after itself, so the staging folder's name carries the
exporter's process id (`.NAME.partial-PID-XXXX`), and every export removes the staging
folders beside its output whose process is gone (hundreds of MB each).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import onnx

from edge.bundle import sha256
from edge.errors import ExportError
from edge.manifest import MANIFEST_FILE, Manifest

DATA_SUFFIX = ".data"
STAGING = re.compile(r"\..+\.partial-(\d+)-[A-Za-z0-9_]+")
SIZE_THRESHOLD = 1024  # initializers of at least this many bytes go to the data file


@contextlib.contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A temporary folder beside `out` (same filesystem, so the final rename is atomic)."""
    if out.exists():
        raise ExportError(f"{out} already exists. Remove it or choose another -o.")
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_staging(folder: Path) -> list[Path]:
    """Delete the staging folders in `folder` left by exports whose process is gone."""
    removed = []
    for path in folder.iterdir():
        found = STAGING.fullmatch(path.name)
        if found and path.is_dir() and not path.is_symlink() and not _alive(int(found.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (a reused pid counts as alive: kept, safe)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process; or not a pid at all
        return True
    return True


def save_graph(proto: onnx.ModelProto, folder: Path, name: str) -> list[str]:
    """Graph in `name`, weights in `name.data` (keeps the protobuf small; no 2 GB limit)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = name + DATA_SUFFIX
    onnx.save_model(proto, str(folder / name), save_as_external_data=True,
                    all_tensors_to_one_file=True, location=data, size_threshold=SIZE_THRESHOLD)
    return [name, data]


def finish(stage: Path, manifest: Manifest, files: list[str], out: Path) -> Manifest:
    """Checksum `files`, write the manifest, and move the bundle into place."""
    manifest = dataclasses.replace(manifest, files={f: sha256(stage / f) for f in files})
    (stage / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
    _make_readable(stage)
    try:
        os.replace(stage, out)
    except OSError:
        if out.exists():  # made since `staging` checked: another export to the same place won
            raise ExportError(f"{out} appeared while exporting (another export to it?). "
                              "Remove it or choose another -o.") from None
        raise
    return manifest


def _make_readable(folder: Path) -> None:
    """mkdtemp and the ONNX writer create owner-only modes; a bundle is meant to be shared."""
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)

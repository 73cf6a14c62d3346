"""The typer app and what every command shares: which bundle to use, how to fail.

The bundle comes from -m/--model, else $EDGE_MODEL, else the default bundle that the
README's set-up command exports into the edge cache. Embedding commands do the same with
$EDGE_EMBEDDING_MODEL and the default embedding bundle (all-MiniLM-L6-v2, int8).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from edge.errors import BundleError
from edge.paths import default_bundle, default_embedding_bundle

app = typer.Typer(
    name="edge",
    help="On-device quantized transformers: export, generate, chat, embed, search, bench. Offline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ModelOption = typer.Option(None, "-m", "--model", help="Bundle folder (default: $EDGE_MODEL, else the default bundle).")
EmbeddingModelOption = typer.Option(
    None, "-m", "--model", help="Encoder bundle (default: $EDGE_EMBEDDING_MODEL, else the default embedding bundle)."
)


def resolve_bundle(model: Path | None) -> Path:
    return _resolve(model, "EDGE_MODEL", default_bundle(), "bundle", "the default bundle",
                    "run the README's set-up command (make demo) to export it")


def resolve_embedding_bundle(model: Path | None) -> Path:
    return _resolve(model, "EDGE_EMBEDDING_MODEL", default_embedding_bundle(), "encoder bundle",
                    "the default embedding bundle", "export it once with `python -m export.default embeddings`")


def _resolve(model: Path | None, env: str, default: Path, kind: str, default_name: str, fix: str) -> Path:
    """-m, else $env, else the default bundle if it was exported."""
    if model is not None:
        return model
    if os.environ.get(env):
        return Path(os.environ[env])
    if not default.exists():
        raise BundleError(f"no {kind} given and {default_name} {default} does not exist. Pass -m BUNDLE, "
                          f"set {env}, or {fix}.")
    return default


def load_for(path: Path, task: str):
    """`edge.load(path)`, refusing a bundle made for another task with one clear line."""
    import edge

    model = edge.load(path)
    if model.manifest.model.task != task:
        raise BundleError(f"{path} is a {model.manifest.model.task} bundle; this command needs a {task} one. "
                          "Pass another bundle with -m.")
    return model


def read_stdin() -> str:
    """Standard input as text. Invalid UTF-8 bytes become U+FFFD (as `decode` shows them)
    rather than an error: piped text is often a file of mixed encodings."""
    raw = getattr(sys.stdin, "buffer", None)  # absent when stdin was replaced by a text stream
    return raw.read().decode("utf-8", errors="replace") if raw is not None else sys.stdin.read()


def from_argv(text: str) -> str:
    """An argument as text: Python keeps invalid UTF-8 in argv as lone surrogates
    (surrogateescape); they become U+FFFD, as on standard input."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", errors="replace")

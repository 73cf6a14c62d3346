"""The typer app and what every command shares: which bundle to use, how to fail.

The bundle comes from -m/--model, else $EDGE_MODEL, else the default bundle that the
README's set-up command exports into the edge cache. Embedding commands do the same with
$EDGE_EMBEDDING_MODEL and the default embedding bundle (all-MiniLM-L6-v2, int8).
"""

from __future__ import annotations

import os
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
    if model is not None:
        return model
    if os.environ.get("EDGE_MODEL"):
        return Path(os.environ["EDGE_MODEL"])
    path = default_bundle()
    if not path.exists():
        raise BundleError(
            f"no bundle given and the default bundle {path} does not exist. Pass -m BUNDLE, set "
            "EDGE_MODEL, or run the README's set-up command (make demo) to export it."
        )
    return path


def resolve_embedding_bundle(model: Path | None) -> Path:
    if model is not None:
        return model
    if os.environ.get("EDGE_EMBEDDING_MODEL"):
        return Path(os.environ["EDGE_EMBEDDING_MODEL"])
    path = default_embedding_bundle()
    if not path.exists():
        raise BundleError(
            f"no encoder bundle given and the default embedding bundle {path} does not exist. Pass -m BUNDLE, "
            "set EDGE_EMBEDDING_MODEL, or export it once with `python -m export.default embeddings`."
        )
    return path

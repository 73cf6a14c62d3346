"""The typer app and what every command shares: which bundle to use, how to fail.

The bundle comes from -m/--model (a folder, or a model name in the edge cache), else
$EDGE_MODEL, else the default bundle that the README's set-up command exports into the
edge cache. Embedding commands do the same with $EDGE_EMBEDDING_MODEL and the default
embedding bundle (all-MiniLM-L6-v2, int8).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import sys

import typer

from edge.errors import BundleError, InputError
from edge.paths import DEFAULT_BUNDLE, DEFAULT_EMBEDDING_BUNDLE, resolve_model

app = typer.Typer(
    name="edge",
    help="On-device quantized transformers: export, generate, chat, embed, search, bench. Offline.\n\n"
         "Example: edge generate \"Why is the sky blue?\"",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion, typer's standard option
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(shown: bool) -> None:
    if shown:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"edge {version('edge-runtime')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            print("edge (not installed)")
        raise typer.Exit()


@app.callback()
def _main(show_version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                            help="Print edge's version and exit.")) -> None:
    """On-device quantized transformers (the app's help says more)."""

ModelOption = typer.Option(None, "-m", "--model", metavar="MODEL", help="Bundle folder or model name (default: $EDGE_MODEL, "
                           "else the default model).")
EmbeddingModelOption = typer.Option(
    None, "-m", "--model", metavar="MODEL", help="Encoder bundle folder or model name (default: $EDGE_EMBEDDING_MODEL, "
    "else the default embedding model)."
)


ThreadsOption = typer.Option(None, "-t", "--threads", metavar="N", min=1,
                             help="onnxruntime threads (default: physical cores), as llama.cpp's -t.")


def _plain_types() -> None:
    """typer 0.29 prints a Python type (`<int>`, `<list[str]>`, `<bool>`) beside every
    parameter. edge's options carry their own metavars (N, T, TEXT, PATH), so the help shows
    those, nothing for flags, and nothing beside an argument (its name is its metavar)."""
    from typer.core import TyperArgument, TyperOption

    TyperOption.display_type_rich = lambda self, ctx: self.metavar or None
    TyperArgument.display_type_rich = lambda self, ctx: None


_plain_types()


def read_input(file: Path | str | None = None) -> str:
    """The text of `file`, or of standard input when None or "-". Bytes that are not UTF-8
    become U+FFFD (the one place the CLI reads a prompt or texts)."""
    if file is None or str(file) == "-":
        return read_stdin()
    try:
        data = Path(file).expanduser().read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {file} ({exc.strerror or exc.__class__.__name__}). "
                         "Give a readable text file.") from None
    return data.decode("utf-8", errors="replace")


def resolve_bundle(model: Path | str | None) -> Path:
    return resolve_model(model, "EDGE_MODEL", DEFAULT_BUNDLE)


def resolve_embedding_bundle(model: Path | str | None) -> Path:
    return resolve_model(model, "EDGE_EMBEDDING_MODEL", DEFAULT_EMBEDDING_BUNDLE,
                         "export it once with `python -m export.default embeddings`")


def load_for(path: Path, task: str, threads: int | None = None):
    """`edge.load(path, threads)`, refusing a bundle made for another task with one clear line."""
    import edge

    model = edge.load(path, threads)
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

"""`edge embed`, `edge index` and `edge search`: thin layers over EmbeddingModel and the index."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from edge.cli.app import EmbeddingModelOption, ThreadsOption, app, from_argv, load_for, read_input, resolve_embedding_bundle
from edge.cli.progress import Progress
from edge.errors import BundleError, InputError

BatchSize = typer.Option(32, "--batch-size", metavar="N", help="Texts per encoder run.")


def load_encoder(path: Path, threads: int | None = None):
    return load_for(path, "feature-extraction", threads)


@app.command()
def embed(
    texts: list[str] = typer.Argument(None, metavar="TEXT...", show_default=False,
                                      help="Texts to embed; - or nothing with a pipe: one text per line from standard input."),
    model: Path = EmbeddingModelOption,
    batch_size: int = BatchSize,
    threads: int = ThreadsOption,
    as_json: bool = typer.Option(False, "--json", help="One JSON object with the model, texts and vectors."),
):
    """Print one vector per text as JSON: one array per line (or one object with --json).

    Example: edge embed "a cat" "a dog"
    """
    if texts == ["-"] or (not texts and not sys.stdin.isatty()):
        texts = [line for line in read_input().splitlines() if line.strip()]
    texts = [from_argv(t) for t in texts]
    if not texts:
        raise InputError("no texts to embed: pass TEXT arguments, or pipe lines on standard input.")
    encoder = load_encoder(resolve_embedding_bundle(model), threads)
    encodings = encoder.tokenize(texts)
    cut = sum(e.truncated for e in encodings)
    if cut:
        print(f"note: {cut} of {len(texts)} text(s) are longer than {encoder.max_length} tokens and were truncated.",
              file=sys.stderr)
    vectors = encoder.embed_encodings(encodings, batch_size)  # (n, dim)
    if not as_json:
        for row in vectors:
            print(json.dumps(row.tolist()))
        return
    print(json.dumps({"model": encoder.manifest.source, "dim": encoder.dim,
                      "normalized": encoder.pooling.normalize, "truncated": cut,
                      "data": [{"text": t, "embedding": v.tolist()} for t, v in zip(texts, vectors)]},
                     ensure_ascii=False))


@app.command()
def index(
    paths: list[Path] = typer.Argument(..., metavar="PATH...", help="Files or folders of text (.txt, .md, .rst, code, ...)."),
    out: Path = typer.Option(..., "-o", "--out", metavar="INDEX", help="Index folder to create or update."),
    model: Path = EmbeddingModelOption,
    chunk_tokens: int = typer.Option(128, "--chunk-tokens", metavar="N", help="Most tokens per chunk (capped by the model)."),
    overlap: int = typer.Option(32, "--overlap", metavar="N", help="Tokens a chunk may repeat from the one before."),
    threads: int = ThreadsOption,
    ray: str = typer.Option(None, "--ray", metavar="ADDRESS", show_default=False,
                            help="Read, chunk and embed on a Ray cluster (the `scale` extra): `local` starts one on "
                                 "this machine ($RAY_ADDRESS if set), else a Ray address (auto, ray://HOST:10001)."),
    workers: int = typer.Option(None, "--workers", metavar="N", min=1,
                                help="With --ray: embedding actors (default: the cluster's CPUs / --worker-cpus)."),
    worker_cpus: int = typer.Option(1, "--worker-cpus", metavar="N", min=1,
                                    help="With --ray: CPUs, and onnxruntime threads, of each actor."),
):
    """Index text files for `edge search`; re-running embeds only changed files.

    Indexes of 100,000 chunks or more also get an approximate-search graph when usearch is
    installed (the `scale` extra); smaller ones are searched exactly.

    Example: edge index README.md docs/ -o docs.index
    """
    from edge.embeddings.index import build_index

    encoder = load_encoder(resolve_embedding_bundle(model), threads)
    with Progress("index") as progress:
        said: list[bool] = []

        def update(done: int, total: int) -> None:
            """The stage line once embedding starts: after the index is locked and checked,
            so a refused -o is the one line an error is."""
            if not said:
                said.append(True)
                progress.stage(f"embedding the new chunks of {', '.join(map(str, paths))}")
            progress.update(done, total)

        report = build_index(out, paths, encoder, chunk_tokens, overlap, update,
                             ray=False if ray is None else True if ray == "local" else ray, workers=workers, worker_cpus=worker_cpus)
    if report.rebuilt:
        print(f"note: rebuilt from scratch ({report.rebuilt}).", file=sys.stderr)
    for note in report.notes:
        print(f"note: {note}.", file=sys.stderr)
    skipped = report.skipped
    print(f"indexed {report.files} files ({report.chunks} chunks) into {out}: {len(report.embedded_files)} embedded, "
          f"{report.reused_files} unchanged, {len(report.removed_files)} removed; skipped "
          f"{len(skipped.binary)} binary, {len(skipped.non_utf8)} non-UTF-8 and {len(skipped.unreadable)} "
          "unreadable files or folders.")


@app.command()
def search(
    index: Path = typer.Argument(..., metavar="INDEX", help="Index folder made by `edge index`."),
    query: str = typer.Argument(..., metavar="QUERY", help="What to look for, in plain words."),
    k: int = typer.Option(5, "-k", metavar="K", help="How many hits to show."),
    model: Path = typer.Option(None, "-m", "--model", metavar="MODEL", help="Encoder bundle (default: the one the index was built with)."),
    as_json: bool = typer.Option(False, "--json", help="Print the hits as a JSON list."),
    exact: bool = typer.Option(False, "--exact", help="Score every chunk (brute force), never the index's ANN graph."),
    threads: int = ThreadsOption,
):
    """Show the chunks of the indexed files closest in meaning to QUERY, best first.

    Example: edge search docs.index "how do I export a model?" -k 3
    """
    from edge.embeddings.index import SearchIndex
    from edge.embeddings.search import search as run_search

    found = SearchIndex.open(index, exact=exact, threads=threads)
    for note in found.notes:
        print(f"note: {note}.", file=sys.stderr)
    bundle = model or found.bundle
    if model is None and not bundle.exists():
        raise BundleError(f"the bundle this index was built with ({bundle}) is gone. Pass it with -m BUNDLE.")
    hits = run_search(found, load_encoder(bundle, threads), from_argv(query), k)
    if as_json:
        print(json.dumps([{"score": h.score, "file": h.file, "start_line": h.start_line, "end_line": h.end_line,
                           "text": h.text} for h in hits], ensure_ascii=False))
        return
    for rank, hit in enumerate(hits, start=1):
        print(f"{rank}. {hit.score:.3f}  {_shown(hit.file)}:{hit.start_line}-{hit.end_line}")
        print(f"   {hit.snippet()}")


def _shown(file: str) -> str:
    """A path relative to the current folder when it is under it."""
    relative = os.path.relpath(file)
    return file if relative.startswith("..") else relative

"""`edge serve`: an OpenAI-compatible server on this machine (needs the `serve` extra)."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import typer

from edge.cli.app import ThreadsOption, app, resolve_bundle
from edge.errors import EdgeError, UsageError, require_extra
from edge.generation.budget import DEFAULT_KV_TOKENS, DEFAULT_SLOTS


@app.command()
def serve(
    models: list[Path] = typer.Option(None, "-m", "--model", metavar="MODEL", help="Bundle folder or model name; repeat to serve several "
                                      "(a generation bundle and an embedding bundle). Default: as other commands."),
    host: str = typer.Option("127.0.0.1", "--host", metavar="HOST", help="Address to bind; anything but loopback exposes the server."),
    port: int = typer.Option(8080, "--port", metavar="PORT", help="TCP port."),
    api_key: str = typer.Option(None, "--api-key", metavar="KEY", envvar="EDGE_API_KEY",
                                help="Require `Authorization: Bearer KEY` on every request ($EDGE_API_KEY)."),
    max_queue: int = typer.Option(16, "--max-queue", metavar="N", min=1, help="Requests that may wait per model; more get 429."),
    threads: int = ThreadsOption,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No line per request on stderr."),
    draft: str = typer.Option("lookup", "--draft", metavar="lookup|none", help="lookup (default): prompt-lookup drafts, several tokens "
                              "checked per step (same output as one-token steps; on 8-bit bundles a near-tie may still round the other way); none: one token per step."),
    parallel: int = typer.Option(DEFAULT_SLOTS, "--parallel", min=1, help="Requests a generation model decodes "
                                 "together (continuous batching; a request decoding alone keeps --draft); 1: one "
                                 "at a time. Models whose graph cannot batch (GPT-2) run one at a time."),
    kv_tokens: int = typer.Option(DEFAULT_KV_TOKENS, "--kv-tokens", min=1, help="KV-cache tokens the parallel "
                                  "requests share; each holds at most kv-tokens / parallel (prompt + reply). "
                                  "SmolLM2-135M: 46,080 bytes a token (23.6 MB a slot of 512; start-up says)."),
    index: Path = typer.Option(None, "--index", help="Ground chat requests that send \"edge_index\": true in "
                               "this index (made by `edge index`); its embedding bundle is used if served, "
                               "else loaded."),
):
    """Serve bundles over OpenAI's HTTP API: /v1/models, /v1/chat/completions, /v1/completions,
    /v1/embeddings, /health. The model id is the bundle folder's name.

    Example: edge serve -m smollm2-135m-instruct-int8 --port 8080
    """
    require_extra("edge serve", "serve", "starlette", "uvicorn")
    import uvicorn

    from edge.server.app import batch_refusal, create_app
    from edge.server.batch_worker import BatchWorker
    import edge
    from edge.generation.generate import check_draft

    check_draft(draft)
    paths = [resolve_bundle(m) for m in models] if models else [resolve_bundle(None)]
    names = [p.name or p.resolve().name for p in paths]  # as given: a link keeps its own name
    if len(set(names)) != len(names):
        raise UsageError(f"two bundles share a folder name ({', '.join(names)}); the name is the model id. "
                         "Rename or copy one of them.")
    loaded = {name: edge.load(path, threads) for name, path in zip(names, paths)}
    retriever = _retriever(index, loaded) if index is not None else None
    if warning := exposure_warning(host, api_key):
        print(warning, file=sys.stderr)
    print(f"edge serve: http://{host}:{port}/v1 serving {', '.join(loaded)}", file=sys.stderr)
    for name, model in loaded.items():
        if parallel > 1 and (reason := batch_refusal(model)):
            print(f"edge serve: {name} runs one request at a time: {reason}.", file=sys.stderr)
    # Open streams get 5 s to finish on Ctrl-C; then the workers stop their jobs.
    app = create_app(loaded, api_key, max_queue, draft=draft, parallel=parallel, kv_tokens=kv_tokens,
                     log=None if quiet else sys.stderr, retriever=retriever)
    for name, worker in app.state.workers.items():
        if isinstance(worker, BatchWorker):
            runner = worker.scheduler.runner
            print(f"edge serve: {name} decodes up to {runner.slots} requests together, each at most "
                  f"{runner.capacity} tokens (prompt + reply; {runner.bytes_per_slot / 1e6:.1f} MB of KV cache a "
                  f"slot, {runner.slots * runner.bytes_per_slot / 1e6:.0f} MB in all)", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)


def _retriever(index: Path, loaded: dict):
    """The index and its embedding model: a served one of the same identity, else its bundle."""
    from edge.cli.ask import warned
    from edge.embeddings.ask import load_embedder, open_index, warn_if_stale
    from edge.server.grounding import Retriever

    found = open_index(index)
    same = [m for m in loaded.values() if getattr(m, "identity", None) == found.meta["model"]["identity"]]
    with warned():
        warn_if_stale(found)
    return Retriever(found, load_embedder(found, same[0] if same else None))


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """A warning when the server is reachable from other machines without a key."""
    if api_key or host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:  # a host name: it may resolve to any interface
        pass
    return (f"warning: serving on {host} without --api-key: anyone who can reach this address can use the "
            "models. Set --api-key (or EDGE_API_KEY), or bind 127.0.0.1.")

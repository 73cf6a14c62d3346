"""`edge bench`: edge's own speed figures for one bundle."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from edge.cli.app import ModelOption, ThreadsOption, app, resolve_bundle

LABELS = {
    "load_s": "load (s)",
    "ttft_s": "time to first token @{short_prompt} (s)",
    "prefill_tok_s_short": "prefill @{short_prompt} (tok/s)",
    "prefill_tok_s_long": "prefill @{long_prompt} (tok/s)",
    "decode_tok_s": "decode after {short_prompt} (tok/s)",
    "decode_tok_s_long_context": "decode after {long_context} (tok/s)",
    "python_overhead": "python share of a decode step",
    "decode_tok_s_quote_none": "quoting reply, no drafts (tok/s)",
    "decode_tok_s_quote_lookup": "quoting reply, drafts (tok/s)",
    "draft_accepted_share": "tokens from accepted drafts",
    "peak_rss_mb": "peak RSS (MB)",
}


@app.command()
def bench(
    model: Path = ModelOption,
    threads: int = ThreadsOption,
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
):
    """Measure load, time to first token, prefill and decode speed, and peak memory (greedy).

    Example: edge bench -t 2 --json
    """
    from edge.tools.bench import run

    figures = run(resolve_bundle(model), threads)
    if as_json:
        print(json.dumps(figures))
        return
    for key, label in LABELS.items():
        label, value = label.format(**figures), figures[key]
        share = key in ("python_overhead", "draft_accepted_share")
        print(f"{label:>34}: {value:.1%}" if share else f"{label:>34}: {value:.3g}")

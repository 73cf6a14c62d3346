"""`edge ask`: a thin layer over edge.ask_stream; stream the answer, then the sources it cited."""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from pathlib import Path

import typer

from edge.cli.app import ModelOption, app, from_argv, resolve_bundle

# As `edge generate`'s options (not imported from cli/text.py: `edge chat --index` imports this module).
MaxTokens = typer.Option(256, "--max-tokens", "-n", help="Most tokens to answer with.")
Draft = typer.Option("lookup", "--draft", help="lookup (default): check tokens guessed from the sources several "
                     "per step (same output, faster where the answer quotes them); none: one per step.")


@app.command()
def ask(
    index: Path = typer.Argument(..., help="Index folder made by `edge index`."),
    question: str = typer.Argument(..., help="The question, in plain words."),
    model: Path = ModelOption,
    k: int = typer.Option(4, "-k", help="How many chunks to retrieve for the prompt."),
    max_tokens: int = MaxTokens,
    draft: str = Draft,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: answer, cited sources, retrieval "
                                 "scores, timings, flagged citations."),
):
    """Answer QUESTION from the files in INDEX, citing them as [1], [2]; then list the cited sources.

    Example: edge ask docs.index "How do I export a model?" -k 4
    """
    from edge.cli.app import load_for
    from edge.embeddings.ask import ask_stream, check_question, open_index

    question = check_question(from_argv(question))
    found = open_index(index)  # a missing index fails before any model loads
    with warned():
        stream = ask_stream(found, question, load_for(resolve_bundle(model), "text-generation"), k,
                            max_tokens=max_tokens, draft=draft)
    if as_json:
        for _ in stream:
            pass
        print(json.dumps(as_object(stream.answer), ensure_ascii=False))
        return
    try:
        for chunk in stream:
            print(chunk.text, end="", flush=True)
    except KeyboardInterrupt:
        print(flush=True)
        raise
    print()
    print_sources(stream.answer)


@contextlib.contextmanager
def warned():
    """Python warnings raised inside (a stale index) as one `warning: ...` line each on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for warning in caught:
                print(f"warning: {warning.message}", file=sys.stderr)


def print_sources(answer) -> None:
    """The cited sources (file:lines and a snippet), then any citation that matched none."""
    from edge.cli.embeddings import _shown

    if answer.sources:
        print("\nsources:")
    for s in answer.sources:
        print(f"[{s.number}] {_shown(s.file)}:{s.lines}  ({s.score:.3f})")
        print(f"    {' '.join(s.text.split())[:239]}")
    if not answer.sources:
        print("\n(the answer cites no source)", file=sys.stderr)
    if answer.flagged:
        print(f"note: the answer cites {', '.join(f'[{n}]' for n in answer.flagged)}, which match no source.",
              file=sys.stderr)


def as_object(answer) -> dict:
    t = answer.timings
    return {
        "answer": answer.text,
        "sources": [s.as_dict() for s in answer.sources],
        "retrieved": [{"number": s.number, "path": s.file, "lines": [s.start_line, s.end_line], "score": s.score}
                      for s in answer.retrieved],
        "dropped": answer.dropped,
        "flagged": answer.flagged,
        "timings": {"prompt_tokens": t.prompt_tokens, "completion_tokens": t.completion_tokens, "load_s": t.load_s,
                    "ttft_s": t.ttft_s, "prefill_tok_s": t.prefill_tok_s, "decode_tok_s": t.decode_tok_s,
                    "drafted_tokens": t.drafted_tokens, "accepted_tokens": t.accepted_tokens},
    }


def grounded(session, index: Path):
    """`edge chat --index`: the session, retrieving sources for every turn."""
    from edge.embeddings.ask import GroundedSession

    with warned():
        return GroundedSession(session, index)

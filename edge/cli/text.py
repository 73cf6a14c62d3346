"""`edge generate`, `edge chat` and `edge eval`: thin layers over `edge.load(...)`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from edge.cli.app import ModelOption, app, from_argv, load_for, read_stdin, resolve_bundle
from edge.errors import IncompleteOutputError, InputError


def _sampling(max_tokens, temperature, top_k, top_p, min_p, repetition_penalty, seed, stop, draft) -> dict:
    return dict(max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                repetition_penalty=repetition_penalty, seed=seed, stop=stop or None, draft=draft)


def _constraint(json_schema: str | None, regex: str | None, grammar: Path | None, choices: list[str] | None) -> dict:
    """The structured-output options: a schema or grammar given as a file is read here."""
    options = {"regex": regex, "choices": choices or None}
    if json_schema is not None:
        path = Path(json_schema)
        options["json_schema"] = _read(path, "json_schema") if path.suffix == ".json" or path.is_file() else json_schema
    if grammar is not None:
        options["grammar"] = _read(grammar, "grammar")
    return {k: v for k, v in options.items() if v is not None}


def _read(path: Path, param: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {{param}} file {path} ({exc.__class__.__name__}). Check the path.",
                         param=param) from None


MaxTokens = typer.Option(256, "--max-tokens", "-n", help="Most tokens to generate.")
Temperature = typer.Option(0.0, "--temperature", "-t", help="0 = greedy (default); higher = more random.")
TopK = typer.Option(0, "--top-k", help="Sample from the k most likely tokens (0 = off).")
TopP = typer.Option(1.0, "--top-p", help="Nucleus sampling: smallest set with this probability (1 = off).")
MinP = typer.Option(0.0, "--min-p", help="Drop tokens below min-p x the top probability (0 = off).")
RepetitionPenalty = typer.Option(1.0, "--repetition-penalty", help="> 1 discourages repeating earlier tokens.")
Seed = typer.Option(None, "--seed", help="Seed for sampling: same seed, same output.")
Stop = typer.Option(None, "--stop", help="Stop when this text appears (not printed); repeatable.")
JsonSchema = typer.Option(None, "--json-schema", help="Reply with JSON that fits this schema (a file, or the "
                          "schema itself as JSON).")
Regex = typer.Option(None, "--regex", help="Reply with text that matches this regular expression.")
Grammar = typer.Option(None, "--grammar", help="Reply with text this Lark grammar file accepts (llguidance's syntax).")
Choice = typer.Option(None, "--choice", help="Reply with exactly one of these; repeatable.")
Draft = typer.Option("lookup", "--draft", help="lookup (default): check tokens guessed from the text itself "
                     "several per step (same output, faster where the reply repeats the prompt); none: one per step.")


@app.command()
def generate(
    prompt: str = typer.Argument(..., help="The prompt, or - to read it from standard input."),
    model: Path = ModelOption,
    max_tokens: int = MaxTokens,
    temperature: float = Temperature,
    top_k: int = TopK,
    top_p: float = TopP,
    min_p: float = MinP,
    repetition_penalty: float = RepetitionPenalty,
    seed: int = Seed,
    stop: list[str] = Stop,
    draft: str = Draft,
    json_schema: str = JsonSchema,
    regex: str = Regex,
    grammar: Path = Grammar,
    choice: list[str] = Choice,
    raw: bool = typer.Option(False, "--raw", help="Use the prompt as plain text (skip the chat template)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of streaming text."),
):
    """Generate a reply to PROMPT (through the bundle's chat template unless --raw), streamed."""
    text = read_stdin() if prompt == "-" else from_argv(prompt)
    if not text.strip():
        raise InputError("the prompt is empty: give some text (or pipe it in with -).")
    options = _sampling(max_tokens, temperature, top_k, top_p, min_p, repetition_penalty, seed, stop, draft)
    options.update(_constraint(json_schema, regex, grammar, choice))
    lm = load_for(resolve_bundle(model), "text-generation")
    chunks = lm.stream(text, raw=raw, **options)
    if as_json:
        _print_json([*chunks])
        return
    chunk = None
    try:
        for chunk in chunks:
            print(chunk.text, end="", flush=True)
    except KeyboardInterrupt:  # keep what was shown, end its line; main() says "interrupted", exit 130
        print(flush=True)
        raise
    print()
    if chunk is not None and chunk.complete is False:  # shown, but not passed off as valid
        raise IncompleteOutputError("")


def _print_json(chunks: list) -> None:
    t = chunks[-1].timings
    print(json.dumps({
        "text": "".join(c.text for c in chunks),
        "token_ids": [c.token for c in chunks],
        "finish_reason": chunks[-1].finish_reason,
        **({} if chunks[-1].complete is None else {"complete": chunks[-1].complete}),
        "prompt_tokens": t.prompt_tokens,
        "completion_tokens": t.completion_tokens,
        "timings": {"load_s": t.load_s, "ttft_s": t.ttft_s, "prefill_tok_s": t.prefill_tok_s,
                    "decode_tok_s": t.decode_tok_s, "decode_calls": t.decode_calls,
                    "drafted_tokens": t.drafted_tokens, "accepted_tokens": t.accepted_tokens},
    }, ensure_ascii=False))


@app.command()
def chat(
    model: Path = ModelOption,
    system: str = typer.Option(None, "--system", help="A system prompt for the conversation."),
    max_tokens: int = MaxTokens,
    temperature: float = Temperature,
    top_k: int = TopK,
    top_p: float = TopP,
    min_p: float = MinP,
    repetition_penalty: float = RepetitionPenalty,
    seed: int = Seed,
    stop: list[str] = Stop,
    draft: str = Draft,
    json_schema: str = JsonSchema,
    regex: str = Regex,
    grammar: Path = Grammar,
    choice: list[str] = Choice,
    index: Path = typer.Option(None, "--index", help="Ground each turn in the files of this index (made by "
                               "`edge index`): sources retrieved per turn, cited as [n]."),
):
    """Chat in the terminal. /reset forgets the conversation, /exit or Ctrl-D quits;
    Ctrl-C stops a reply and keeps the conversation."""
    options = _sampling(max_tokens, temperature, top_k, top_p, min_p, repetition_penalty, seed, stop, draft)
    options.update(_constraint(json_schema, regex, grammar, choice))
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="replace")  # invalid UTF-8 typed or piped in: U+FFFD, as for generate -
    session = load_for(resolve_bundle(model), "text-generation").chat_session(system, **options)
    if index is not None:
        from edge.cli.ask import grounded

        session = grounded(session, index)
    print("edge chat: /reset to start over, /exit or Ctrl-D to quit, Ctrl-C stops a reply.", file=sys.stderr)
    while (line := _read_line()) is not None:
        if line.strip() in ("/exit", "/quit"):
            break
        if line.strip() == "/reset":
            session.reset()
            print("(conversation cleared)", file=sys.stderr)
        elif line.strip():
            _reply(session, line)


def _read_line() -> str | None:
    """The next user line; None on Ctrl-D. Ctrl-C at the prompt only clears the line."""
    while True:
        try:
            return input(">>> ")
        except EOFError:
            print(file=sys.stderr)
            return None
        except KeyboardInterrupt:
            print("\n(use /exit or Ctrl-D to quit)", file=sys.stderr)


def _reply(session, line: str) -> None:
    reply = session.send(line)
    try:
        for chunk in reply:
            print(chunk.text, end="", flush=True)
    except KeyboardInterrupt:
        reply.close()  # the session keeps what was shown and stays usable
        print("\n(stopped)", file=sys.stderr)
        return
    print()


@app.command("eval")
def evaluate(
    file: Path = typer.Argument(..., help="A UTF-8 text file."),
    model: Path = ModelOption,
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
):
    """Perplexity of the model on a text file (lower is better)."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {file} as UTF-8 text ({exc.__class__.__name__}). Give a text file.") from None
    lm = load_for(resolve_bundle(model), "text-generation")
    ppl = lm.perplexity(text)
    tokens = len(lm.encode_text(text))
    if as_json:
        print(json.dumps({"file": str(file), "tokens": tokens, "perplexity": ppl}))
    else:
        print(f"perplexity {ppl:.3f} over {tokens} tokens of {file}")

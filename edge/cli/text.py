"""`edge generate`, `edge chat` and `edge eval`: thin layers over `edge.load(...)`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from edge.cli import chat_repl
from edge.cli.app import ModelOption, ThreadsOption, app, from_argv, load_for, read_input, resolve_bundle
from edge.cli.progress import Progress
from edge.errors import IncompleteOutputError, InputError, UsageError


def _sampling(**options) -> dict:
    """The options the user gave; the ones left out take the model's defaults (the bundle's
    recommended sampling, else greedy)."""
    return {k: v for k, v in options.items() if v is not None and v != []}


def _constraint(json_schema: str | None, regex: str | None, grammar: Path | None, choices: list[str] | None) -> dict:
    """The structured-output options: a schema or grammar given as a file is read here."""
    options = {"regex": regex, "choices": choices or None}
    if json_schema is not None:
        path = Path(json_schema)
        options["json_schema"] = read_input(path) if path.suffix == ".json" or path.is_file() else json_schema
    if grammar is not None:
        options["grammar"] = read_input(grammar)
    return {k: v for k, v in options.items() if v is not None}


MODEL_DEFAULT = "default: the model's recommendation, else "
MaxTokens = typer.Option(256, "--max-tokens", "-n", metavar="N", help="Most tokens to generate.")
Temperature = typer.Option(None, "--temperature", "--temp", metavar="T", show_default=False,
                           help=f"0 = greedy; higher = more random ({MODEL_DEFAULT}0).")
TopK = typer.Option(None, "--top-k", metavar="K", show_default=False,
                    help=f"Sample from the k most likely tokens; 0 = off ({MODEL_DEFAULT}0).")
TopP = typer.Option(None, "--top-p", metavar="P", show_default=False,
                    help=f"Nucleus sampling: smallest set with this probability; 1 = off ({MODEL_DEFAULT}1).")
MinP = typer.Option(None, "--min-p", metavar="P", show_default=False,
                    help=f"Drop tokens below min-p x the top probability; 0 = off ({MODEL_DEFAULT}0).")
RepetitionPenalty = typer.Option(None, "--repetition-penalty", metavar="R", show_default=False,
                                 help=f"> 1 discourages repeating earlier tokens ({MODEL_DEFAULT}1).")
Seed = typer.Option(None, "--seed", metavar="S", help="Seed for sampling: same seed, same output.")
Stop = typer.Option(None, "--stop", metavar="TEXT", help="Stop when this text appears (not printed); repeatable.")
Draft = typer.Option("lookup", "--draft", metavar="lookup|none",
                     help="lookup (default): check tokens guessed from the text itself several per step "
                     "(same output as one per step, but on 8-bit bundles a near-tie may round the other way; faster where the reply repeats the prompt); none: one per step.")
JsonSchema = typer.Option(None, "--json-schema", metavar="FILE|JSON",
                          help="Reply with JSON that fits this schema (a file, or the schema itself).")
Regex = typer.Option(None, "--regex", metavar="RE", help="Reply with text that matches this regular expression.")
Grammar = typer.Option(None, "--grammar", metavar="FILE", help="Reply with text this Lark grammar accepts "
                       "(llguidance's syntax).")
Choice = typer.Option(None, "--choice", metavar="TEXT", help="Reply with exactly one of these; repeatable.")


@app.command()
def generate(
    prompt: str = typer.Argument(None, metavar="PROMPT", show_default=False,
                                 help="The prompt; - or nothing with a pipe: read it from standard input."),
    file: Path = typer.Option(None, "-f", "--file", metavar="PATH", help="Read the prompt from this file."),
    system: str = typer.Option(None, "-s", "--system", metavar="TEXT",
                               help="A system prompt (through the chat template)."),
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
    threads: int = ThreadsOption,
    raw: bool = typer.Option(False, "--raw", help="Use the prompt as plain text (skip the chat template)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of streaming text."),
    batch: Path = typer.Option(None, "--batch", metavar="FILE", help="A JSON-lines file of {\"prompt\": ...} objects "
                               "(per-line options allowed), generated together; needs -o."),
    output: Path = typer.Option(None, "-o", "--output", metavar="FILE", help="With --batch: JSON-lines results, "
                                "appended; prompts already there are skipped (resume)."),
    parallel: int = typer.Option(8, "--parallel", metavar="N", help="With --batch: sequences decoded together."),
    kv_tokens: int = typer.Option(8192, "--kv-tokens", metavar="N", help="With --batch: KV-cache tokens shared by "
                                  "the sequences (each holds at most kv-tokens / parallel)."),
):
    """Generate a reply to PROMPT (through the bundle's chat template unless --raw), streamed;
    or, with --batch, replies to every prompt of a file, several at a time.

    Example: edge generate -s "Answer in one line." --temp 0.7 "Why is the sky blue?"
    """
    options = _sampling(max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                        repetition_penalty=repetition_penalty, seed=seed, stop=stop, draft=draft)
    options.update(_constraint(json_schema, regex, grammar, choice))
    if batch is not None:
        from edge.cli.batch import run_batch

        if prompt is not None or file is not None or output is None:
            raise UsageError("--batch takes its prompts from the file and writes to -o: give -o OUT.jsonl and no PROMPT.")
        lm = load_for(resolve_bundle(model), "text-generation", threads)
        run_batch(lm, batch, output, {**options, "raw": raw}, parallel, kv_tokens)
        return
    text = _prompt(prompt, file)
    if not text.strip():
        raise InputError("the prompt is empty: give some text (or pipe it in).")
    if system is not None and raw:
        raise UsageError("--system goes through the chat template, which --raw skips: use one of them.",
                         param="system")
    lm = load_for(resolve_bundle(model), "text-generation", threads)
    if system is None:
        chunks = lm.stream(text, raw=raw, **options)
    elif not lm.manifest.tokenizer.chat_template:
        raise InputError("this bundle has no chat template, so it cannot take a system prompt. Leave out --system.",
                         param="system")
    else:
        chunks = lm.stream_chat([{"role": "system", "content": system}, {"role": "user", "content": text}], **options)
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


def _prompt(prompt: str | None, file: Path | None) -> str:
    """The prompt from the argument, -f FILE, or standard input (`-`, or a pipe and no argument)."""
    if file is not None:
        if prompt is not None:
            raise UsageError("give the prompt either as PROMPT or with --file, not both.", param="file")
        return read_input(file)
    if prompt == "-" or (prompt is None and not sys.stdin.isatty()):
        return read_input()
    if prompt is None:
        raise UsageError("no prompt: give PROMPT, --file PATH, or pipe the prompt on standard input "
                         "(or --batch FILE -o OUT).")
    return from_argv(prompt)


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
    system: str = typer.Option(None, "-s", "--system", metavar="TEXT", help="A system prompt for the conversation."),
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
    threads: int = ThreadsOption,
    index: Path = typer.Option(None, "--index", help="Ground each turn in the files of this index (made by "
                               "`edge index`): sources retrieved per turn, cited as [n]."),
):
    """Chat in the terminal. /help lists the commands: /set NAME VALUE, /save FILE, /load FILE,
    /reset, /exit (or Ctrl-D); a line of three double quotes starts and ends a multi-line
    message; Ctrl-C stops a reply.

    Example: edge chat -s "Be brief." --temp 0.7
    """
    options = _sampling(max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                        repetition_penalty=repetition_penalty, seed=seed, stop=stop, draft=draft)
    options.update(_constraint(json_schema, regex, grammar, choice))
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="replace")  # invalid UTF-8 typed or piped in: U+FFFD, as for generate -
    session = load_for(resolve_bundle(model), "text-generation", threads).chat_session(system, **options)
    if index is not None:
        from edge.cli.ask import grounded

        session = grounded(session, index)
    chat_repl.run(session)


@app.command("eval")
def evaluate(
    file: Path = typer.Argument(..., metavar="FILE", help="A UTF-8 text file."),
    model: Path = ModelOption,
    threads: int = ThreadsOption,
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
):
    """Perplexity of the model on a text file (lower is better).

    Example: edge eval notes.txt
    """
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {file} as UTF-8 text ({exc.__class__.__name__}). Give a text file.") from None
    lm = load_for(resolve_bundle(model), "text-generation", threads)
    tokens = len(lm.encode_text(text))
    with Progress("eval") as progress:
        if tokens >= 2:  # else perplexity's one-line error is all there is to say
            progress.stage(f"scoring {tokens} tokens of {file}")
        ppl = lm.perplexity(text, progress=progress)
    if as_json:
        print(json.dumps({"file": str(file), "tokens": tokens, "perplexity": ppl}))
    else:
        print(f"perplexity {ppl:.3f} over {tokens} tokens of {file}")

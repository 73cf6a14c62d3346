"""`edge generate --batch IN.jsonl -o OUT.jsonl`: many prompts, generated together.

In: one JSON object per line, {"prompt": "..."} plus optional "id" and per-line options
(the `generate` flags' keyword names: max_tokens, temperature, ..., stop, raw) that
override the command line's. Out: one object per finished prompt, in finishing order,
{"index", "id", "text", "finish_reason", "usage"}, appended and flushed as each finishes.
Resumable: the indexes already in OUT are skipped, so a run stopped by Ctrl-C (or a crash)
goes on where it stopped and loses nothing but the prompts in flight.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from edge.errors import InputError

LINE_OPTIONS = {"max_tokens", "temperature", "top_k", "top_p", "min_p", "repetition_penalty", "seed", "stop", "raw"}


def read_prompts(path: Path) -> list[dict]:
    """The input lines as objects, each with a "prompt" string; blank lines skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path} ({exc.__class__.__name__}): give a UTF-8 JSON-lines file.") from None
    prompts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(f"{path} line {number} is not JSON: write one object per line.") from None
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str) or not item["prompt"].strip():
            raise InputError(f"{path} line {number} needs a non-empty \"prompt\" string.")
        if unknown := set(item) - LINE_OPTIONS - {"prompt", "id"}:
            raise InputError(f"{path} line {number} has unknown keys {sorted(unknown)}; use prompt, id and "
                             f"{', '.join(sorted(LINE_OPTIONS))}.")
        prompts.append(item)
    return prompts


def done_indexes(path: Path) -> set[int]:
    """Indexes already written to `path`; a last line cut by an interruption is removed."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]  # a line without its newline was cut mid-write
    if len(whole) != len(data):
        with path.open("r+b") as f:
            f.truncate(len(whole))
    return {json.loads(line)["index"] for line in whole.decode("utf-8").splitlines() if line.strip()}


def run_batch(lm, source: Path, out: Path, options: dict, slots: int, kv_tokens: int) -> None:
    prompts = read_prompts(source)
    done = done_indexes(out)
    todo = [i for i in range(len(prompts)) if i not in done]
    scheduler = lm.scheduler(slots, kv_tokens)
    progress = _Progress(len(prompts), len(done))
    with out.open("a", encoding="utf-8") as sink:
        for index in todo:
            item = prompts[index]
            line_options = {**options, **{k: v for k, v in item.items() if k in LINE_OPTIONS}}
            raw = bool(line_options.pop("raw", False))
            writer = _Writer(sink, index, item.get("id"), progress)
            scheduler.add(lm.request(lm.encode_prompt(item["prompt"], raw), writer.push, **line_options))
        scheduler.run()
    progress.end()


class _Writer:
    """One prompt's chunks; its output line once it finishes."""

    def __init__(self, sink, index: int, id_: object, progress: _Progress):
        self.sink, self.index, self.id, self.progress, self.pieces = sink, index, id_, progress, []

    def push(self, chunk) -> None:
        self.pieces.append(chunk.text)
        if chunk.finish_reason is None:
            return
        t = chunk.timings
        line = {"index": self.index, "id": self.id, "text": "".join(self.pieces), "finish_reason": chunk.finish_reason,
                "usage": {"prompt_tokens": t.prompt_tokens, "completion_tokens": t.completion_tokens}}
        self.sink.write(json.dumps(line, ensure_ascii=False) + "\n")
        self.sink.flush()
        self.progress.finished(t.completion_tokens)


class _Progress:
    """One line on stderr, rewritten as prompts finish: done/total and generated tokens/s."""

    def __init__(self, total: int, done: int):
        self.total, self.done, self.tokens, self.start = total, done, 0, time.perf_counter()
        self._show()

    def finished(self, tokens: int) -> None:
        self.done, self.tokens = self.done + 1, self.tokens + tokens
        self._show()

    def end(self) -> None:
        print(file=sys.stderr)

    def _show(self) -> None:
        elapsed = time.perf_counter() - self.start
        rate = self.tokens / elapsed if elapsed > 0 else 0.0
        print(f"\rbatch: {self.done}/{self.total} prompts, {rate:.0f} tok/s", end="", file=sys.stderr, flush=True)

"""`edge generate --batch IN.jsonl -o OUT.jsonl`: many prompts, generated together.

In: one JSON object per line, {"prompt": "..."} plus optional "id" and per-line options
(the `generate` flags' keyword names: max_tokens, temperature, ..., stop, raw) that
override the command line's. Out: one object per finished prompt, in finishing order,
{"index", "id", "text", "finish_reason", "usage"}, appended and flushed as each finishes.
Resumable: this job's records already in OUT (a line with a prompt's index and id) are
skipped, so a run stopped by Ctrl-C (or a crash) goes on where it stopped and loses nothing
but the prompts in flight; other lines of OUT are left as they are. A bad line or value is
one error naming the line and field, before anything is written.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from edge.errors import EdgeError, InputError

# Each per-line option and the JSON types it takes (bool is not an integer here); the
# values are then checked as the command line's are.
NUMBER = (int, float)
LINE_OPTIONS = {"max_tokens": int, "temperature": NUMBER, "top_k": int, "top_p": NUMBER, "min_p": NUMBER,
                "repetition_penalty": NUMBER, "seed": int, "stop": (str, list), "raw": bool}
KINDS = {int: "an integer", NUMBER: "a number", (str, list): "a string or an array of strings", bool: "true or false"}
RECORD = {"index", "id", "text", "finish_reason", "usage"}  # the keys of an output line, "index" first
RECORD_START = b'{"index": '


def read_prompts(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) for each input line, each object with a "prompt" string and
    options of the right types; blank lines skipped."""
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
        if unknown := set(item) - set(LINE_OPTIONS) - {"prompt", "id"}:
            raise InputError(f"{path} line {number} has unknown keys {sorted(unknown)}; use prompt, id and "
                             f"{', '.join(sorted(LINE_OPTIONS))}.")
        for key, kinds in LINE_OPTIONS.items():
            value = item.get(key)
            wrong = not isinstance(value, kinds) or (isinstance(value, bool) and kinds is not bool)
            if key in item and (wrong or (key == "stop" and isinstance(value, list)
                                          and not all(isinstance(v, str) for v in value))):
                raise InputError(f"{path} line {number}: \"{key}\" must be {KINDS[kinds]}, got {json.dumps(value)}.")
        prompts.append((number, item))
    return prompts


def done_indexes(path: Path, prompts: list[tuple[int, dict]]) -> set[int]:
    """Indexes of this job's records already in `path`: lines {"index": i, "id": the id of
    prompt i, ...}. A record cut by an interruption (a last line starting as ours, without
    its newline) is removed; any other line is left as it is, and not counted."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    tail = data[end:]
    if tail and (tail.startswith(RECORD_START) or RECORD_START.startswith(tail)):  # cut before or after its key
        with path.open("r+b") as f:
            f.truncate(end)
        data = data[:end]
    done = set()
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and set(record) == RECORD and type(record["index"]) is int \
                and 0 <= record["index"] < len(prompts) and record["id"] == prompts[record["index"]][1].get("id"):
            done.add(record["index"])
    return done


def run_batch(lm, source: Path, out: Path, options: dict, slots: int, kv_tokens: int) -> None:
    prompts = read_prompts(source)
    done = done_indexes(out, prompts)
    scheduler = lm.scheduler(slots, kv_tokens)
    writers = [_Writer(None, index, item.get("id")) for index, (_, item) in enumerate(prompts) if index not in done]
    for writer in writers:  # all checked before the output is opened (a refused line leaves no file behind)
        number, item = prompts[writer.index]
        _add(scheduler, lm, item, options, writer.push, f"{source} line {number}")
    with out.open("a", encoding="utf-8") as sink:
        for writer in writers:
            writer.sink = sink
        if out.stat().st_size and not out.read_bytes().endswith(b"\n"):
            sink.write("\n")  # someone else's last line: ours start on a line of their own
        progress = _Progress(len(prompts), len(done))
        for writer in writers:
            writer.progress = progress
        scheduler.run()
    progress.end()


def _add(scheduler, lm, item: dict, options: dict, sink, where: str) -> None:
    """Queue the line's generation; a value edge refuses is one error naming the line and field."""
    line_options = {**options, **{k: v for k, v in item.items() if k in LINE_OPTIONS}}
    raw = line_options.pop("raw", False)
    try:
        scheduler.add(lm.request(lm.encode_prompt(item["prompt"], raw), sink, **line_options))
    except EdgeError as exc:
        field = f'"{exc.param}"' if exc.param else None
        raise InputError(f"{where}: {exc.render(field)}") from None


class _Writer:
    """One prompt's chunks; its output line once it finishes."""

    def __init__(self, sink, index: int, id_: object):
        self.sink, self.index, self.id, self.pieces = sink, index, id_, []
        self.progress: _Progress | None = None  # set once every line is queued

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

"""The `edge chat` loop: lines from input() in, streamed replies out, slash commands between.

Commands: /help, /set [NAME VALUE] (sampling options, checked by edge's SamplingParams),
/save FILE and /load FILE (the conversation as JSON: the system prompt and the messages),
/reset, /exit. A line that is `\"\"\"` starts a multi-line message; the next such line ends
it. A bad command or file is one line on stderr; the session goes on.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from edge.cli.flags import flag
from edge.errors import EdgeError, InputError, check_positive_int

if TYPE_CHECKING:
    from edge.generation.chat import ChatSession

MULTILINE = '"""'
SETTINGS = {  # what /set takes: name -> how to read its value
    "temperature": float, "top_k": int, "top_p": float, "min_p": float, "repetition_penalty": float,
    "seed": int, "max_tokens": int,
}
HELP = """commands:
  /set                 show the sampling settings
  /set NAME VALUE      change one: temperature, top_k, top_p, min_p, repetition_penalty, seed, max_tokens
  /save FILE           write the conversation (system prompt and messages) as JSON
  /load FILE           continue a conversation saved with /save
  /reset               forget the conversation (the system prompt stays)
  /exit                quit (also Ctrl-D); Ctrl-C stops a reply
  \"\"\"                  start a multi-line message; a line with \"\"\" ends it"""


def run(session: ChatSession) -> None:
    print("edge chat: /help for commands, /exit or Ctrl-D to quit, Ctrl-C stops a reply.", file=sys.stderr)
    while (line := _read_message()) is not None:
        command, _, argument = line.strip().partition(" ")
        if command in ("/exit", "/quit"):
            break
        if command.startswith("/") and "\n" not in line:
            _note(_command(session, command, argument.strip()))
        elif line.strip():
            _reply(session, line)


def _command(session: ChatSession, command: str, argument: str) -> str:
    """Run one slash command; what to tell the user (errors included, as one line)."""
    try:
        if command == "/help":
            return HELP
        if command == "/reset":
            session.reset()
            return "(conversation cleared)"
        if command == "/set":
            return _set(session, argument)
        if command == "/save":
            return _save(session, _file(argument))
        if command == "/load":
            return _load(session, _file(argument))
    except EdgeError as exc:
        return f"error: {exc.render()}"
    return f"error: unknown command {command}. /help lists the commands."


def _set(session: ChatSession, argument: str) -> str:
    """`/set` shows the settings; `/set NAME VALUE` changes one, if SamplingParams accepts it."""
    if not argument:
        shown = {name: session.options.get(name) for name in SETTINGS}
        return "\n".join(f"  {name} {'(model default)' if v is None else v}" for name, v in shown.items())
    name, _, value = argument.partition(" ")
    if name not in SETTINGS or not value.strip():
        raise InputError(f"usage: /set NAME VALUE, with NAME one of {', '.join(SETTINGS)}.")
    try:
        parsed = SETTINGS[name](value.strip())
    except ValueError:
        raise InputError(f"{name} must be {'an integer' if SETTINGS[name] is int else 'a number'}, "
                         f"got {value.strip()!r}.") from None
    from edge.generation.sampler import SamplingParams

    options = {**session.options, name: parsed}
    if name == "max_tokens":
        check_positive_int(parsed, name)
    SamplingParams(**{k: v for k, v in options.items() if k in SETTINGS and k != "max_tokens" and v is not None})
    session.options = options
    return f"({name} = {parsed})"


def _save(session: ChatSession, path: Path) -> str:
    turns = [m for m in session.messages if m["role"] != "system"]
    try:
        path.write_text(json.dumps({"system": session.system, "messages": turns}, ensure_ascii=False, indent=1),
                        encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write {path} ({exc.strerror or exc.__class__.__name__}).") from None
    return f"(saved {len(turns)} messages to {path})"


def _load(session: ChatSession, path: Path) -> str:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path} as a saved conversation ({exc.__class__.__name__}). "
                         "Give a file written by /save.") from None
    system, turns = _conversation(data, path)
    session.system = system
    session.reset()  # a fresh cache: the next turn runs the loaded conversation through the model
    session.messages = [*session.messages, *turns]
    return f"(loaded {len(turns)} messages from {path})"


def _conversation(data: object, path: Path) -> tuple[str | None, list[dict]]:
    """(system, messages) of a /save file, or an InputError saying what is wrong with it."""
    ok = isinstance(data, dict) and isinstance(data.get("messages"), list)
    system = data.get("system") if ok else None
    turns = data["messages"] if ok else []
    ok = ok and (system is None or isinstance(system, str)) and all(
        isinstance(m, dict) and set(m) == {"role", "content"} and m["role"] in ("user", "assistant")
        and isinstance(m["content"], str) for m in turns)
    if not ok:
        raise InputError(f"{path} is not a saved conversation: it needs {{\"system\": text or null, \"messages\": "
                         "[{\"role\": \"user\" or \"assistant\", \"content\": text}, ...]}.")
    return system, turns


def _file(argument: str) -> Path:
    if not argument:
        raise InputError("give a file name: /save FILE or /load FILE.")
    return Path(argument).expanduser()


def _note(message: str) -> None:
    print(message, file=sys.stderr)


def _read_message() -> str | None:
    """The next message: one line, or the lines between two `\"\"\"` lines. None on Ctrl-D."""
    line = _read_line(">>> ")
    if line is None or line.strip() != MULTILINE:
        return line
    lines = []
    while (line := _read_line("... ")) is not None and line.strip() != MULTILINE:
        lines.append(line)
    return "\n".join(lines)


def _read_line(prompt: str) -> str | None:
    """One line; None on Ctrl-D. Ctrl-C at the prompt only clears the line."""
    while True:
        try:
            return input(prompt)
        except EOFError:
            print(file=sys.stderr)
            return None
        except KeyboardInterrupt:
            print("\n(use /exit or Ctrl-D to quit)", file=sys.stderr)


def _reply(session: ChatSession, text: str) -> None:
    """Stream one reply. A turn that fails (it does not fit the context, a bad /set value) is
    one error line; the conversation and the session go on."""
    try:
        reply = session.send(text)
        for chunk in reply:
            print(chunk.text, end="", flush=True)
    except KeyboardInterrupt:
        reply.close()  # the session keeps what was shown and stays usable
        print("\n(stopped)", file=sys.stderr)
        return
    except EdgeError as exc:
        print(f"\nerror: {exc.render(flag(exc.param))}", file=sys.stderr)
        return
    print()

"""One line per request on stderr: method, route, status, tokens, time; never the prompt.

`RequestLog` is ASGI middleware around the whole app, so refused requests (401, 404, 429)
are logged too. Handlers report token counts with `note_tokens` from anywhere in the
request's task (a context variable carries the request's record), including a streamed
response's body, which ends before the middleware writes the line.

    POST /v1/chat/completions 200 tokens 12+64 1.234s
"""

from __future__ import annotations

import contextvars
import time
from typing import TextIO

_record: contextvars.ContextVar[dict | None] = contextvars.ContextVar("edge_request_record", default=None)


def note_tokens(prompt: int, completion: int = 0) -> None:
    """Count a generation's (or an embedding's) tokens for the current request's log line."""
    record = _record.get()
    if record is not None:
        record["tokens"] = (prompt, completion)


class RequestLog:
    def __init__(self, app, stream: TextIO):
        self.app, self.stream = app, stream

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = {"status": 500, "tokens": None}
        started = time.perf_counter()

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                record["status"] = message["status"]
            await send(message)

        reset = _record.set(record)
        try:
            await self.app(scope, receive, sending)
        finally:
            _record.reset(reset)
            self.stream.write(line(scope["method"], scope["path"], record, time.perf_counter() - started))
            self.stream.flush()


def line(method: str, path: str, record: dict, seconds: float) -> str:
    """Example: "POST", "/api/chat", {"status": 200, "tokens": (12, 64)}, 1.2341
    -> "POST /api/chat 200 tokens 12+64 1.234s\\n" """
    tokens = f" tokens {record['tokens'][0]}+{record['tokens'][1]}" if record["tokens"] else ""
    return f"{method} {path} {record['status']}{tokens} {seconds:.3f}s\n"

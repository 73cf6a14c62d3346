"""Edge results in; OpenAI-shaped JSON objects out (responses, stream chunks, errors).

Chat and text completions share one layout and differ only in names: `object`, the id
prefix, and a choice holding `message`/`delta` (chat) or `text` (completions).
"""

from __future__ import annotations

import base64
import time
import uuid

import numpy as np

from edge.generation.generate import Timings


class Completion:
    """One request's id, creation time and model; builds its response or its stream chunks."""

    def __init__(self, model: str, chat: bool, first_extra: dict | None = None):
        """`first_extra`: fields for the first stream chunk only (a grounded chat's sources)."""
        self.model, self.chat, self.first_extra = model, chat, first_extra or {}
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())

    def response(self, text: str, finish_reason: str, timings: Timings, tool_calls: list[dict] | None = None) -> dict:
        """With `tool_calls` the message calls them (content null, finish_reason "tool_calls")."""
        if tool_calls:
            choice, finish_reason = {"message": {"role": "assistant", "content": None, "tool_calls": tool_calls}}, \
                "tool_calls"
        else:
            choice = {"message": {"role": "assistant", "content": text}} if self.chat else {"text": text}
        return self._body("chat.completion" if self.chat else "text_completion", choice, finish_reason,
                          usage=usage(timings))

    def tool_call_chunks(self, tool_calls: list[dict], with_usage: bool = False) -> list[dict]:
        """A streamed call in OpenAI's delta format: per call its id, name and arguments, then
        the finish reason."""
        extra = {"usage": None} if with_usage else {}
        deltas = [{"tool_calls": [{"index": i, **call}]} for i, call in enumerate(tool_calls)]
        return [*(self._body("chat.completion.chunk", {"delta": d}, None, **extra) for d in deltas),
                self._body("chat.completion.chunk", {"delta": {}}, "tool_calls", **extra)]

    def chunk(self, text: str, finish_reason: str | None = None, first: bool = False, with_usage: bool = False) -> dict:
        """A stream chunk; the chat stream's first chunk also carries the role."""
        if self.chat:
            choice = {"delta": {"role": "assistant", "content": text} if first else ({"content": text} if text else {})}
        else:
            choice = {"text": text}
        extra = {"usage": None} if with_usage else {}
        if first:
            extra.update(self.first_extra)
        return self._body("chat.completion.chunk" if self.chat else "text_completion", choice, finish_reason, **extra)

    def usage_chunk(self, timings: Timings) -> dict:
        """The last chunk when `stream_options.include_usage` is set: no choices, the usage."""
        return {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                "created": self.created, "model": self.model, "choices": [], "usage": usage(timings)}

    def _body(self, kind: str, choice: dict, finish_reason: str | None, **extra) -> dict:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                "choices": [{"index": 0, **choice, "logprobs": None, "finish_reason": finish_reason}], **extra}


def usage(timings: Timings) -> dict:
    return {"prompt_tokens": timings.prompt_tokens, "completion_tokens": timings.completion_tokens,
            "total_tokens": timings.prompt_tokens + timings.completion_tokens}


def embeddings(model: str, vectors: np.ndarray, prompt_tokens: int, as_base64: bool) -> dict:
    """vectors: (n, dim) float32; base64 is the little-endian float32 bytes, as OpenAI sends them."""
    def encode(row: np.ndarray):
        return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii") if as_base64 else row.tolist()

    data = [{"object": "embedding", "index": i, "embedding": encode(row)} for i, row in enumerate(vectors)]
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}


def models(ids: list[str], created: int) -> dict:
    return {"object": "list", "data": [{"id": i, "object": "model", "created": created, "owned_by": "edge"}
                                       for i in ids]}


def error(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}

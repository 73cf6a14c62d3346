"""A conversation: the message history plus a KV cache kept across turns.

Each turn renders the whole conversation with the chat template and tokenizes it, then
keeps the longest prefix it shares with the ids already in the cache and prefills only
the rest, so turn 2 does not run turn 1 through the model again.

Interrupted replies (Ctrl-C while iterating, or the generator closed early) keep what was
streamed so far: the user saw it, so the model should too. If nothing was streamed, the
turn is dropped entirely, so the history never ends with an unanswered user message.
Either way the session stays usable.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from edge.engine.decoder_runner import DecoderRunner
from edge.errors import InputError
from edge.generation.chat_template import Message
from edge.generation.generate import StreamChunk, common_prefix


class ChatModel(Protocol):
    """What a session needs of a `LanguageModel` (named here, so chat does not import it)."""

    decoder: DecoderRunner

    def encode_chat(self, messages: list[Message]) -> list[int]: ...

    def stream_ids(self, ids: Sequence[int], **options) -> Iterator[StreamChunk]: ...


class ChatSession:
    def __init__(self, model: ChatModel, system: str | None = None, **sampling):
        """`sampling`: the keyword options of `LanguageModel.stream` (max_tokens, temperature, ...)."""
        if system is not None and not isinstance(system, str):
            raise InputError(f"the system prompt must be a string, got {type(system).__name__}.")
        self.model = model
        self.system = system
        self.options = sampling
        # Its own cache over the model's graph, so other calls on the model cannot disturb it.
        self.decoder = model.decoder.fork()
        self._reply: Iterator[StreamChunk] | None = None  # the reply being streamed, if any
        self.reset()

    def reset(self) -> None:
        """Forget the conversation (the system prompt stays)."""
        self._close_reply()
        self.messages: list[Message] = [{"role": "system", "content": self.system}] if self.system else []
        self._ids: list[int] = []  # the cache holds a prefix of these
        self.decoder.reset()

    def send(self, text: str, **sampling) -> Iterator[StreamChunk]:
        """Stream the reply to `text`; `sampling` overrides the session's options for this turn."""
        if not isinstance(text, str) or not text.strip():
            raise InputError("the message is empty: type something to send.")
        self._close_reply()
        messages = [*self.messages, {"role": "user", "content": text}]
        ids = self.model.encode_chat(messages)
        reuse = min(common_prefix(self._ids, ids), self.decoder.cache_length)
        # From here the cache holds exactly ids[:reuse], whatever this turn does (a turn that
        # fails before its prefill must not leave the last turn's entries behind these ids).
        self.decoder.rewind_to(reuse)
        self._ids = ids[:reuse]
        chunks = self.model.stream_ids(ids, decoder=self.decoder, reuse=reuse, **{**self.options, **sampling})
        self._reply = self._record(messages, ids, chunks)
        return self._reply

    def _record(self, messages: list[Message], ids: list[int], chunks: Iterator[StreamChunk]) -> Iterator[StreamChunk]:
        parts, tokens, finished = [], [], False
        try:
            for chunk in chunks:
                parts.append(chunk.text)
                tokens.append(chunk.token)
                finished = chunk.finish_reason is not None
                yield chunk
        finally:
            self._ids = (ids + tokens)[: self.decoder.cache_length]  # what the cache holds
            reply = "".join(parts)
            if finished or reply:
                self.messages = [*messages, {"role": "assistant", "content": reply}]
            self._reply = None

    def _close_reply(self) -> None:
        """Settle a reply the caller stopped iterating (its `finally` records the history)."""
        reply, self._reply = self._reply, None
        if reply is not None:
            reply.close()

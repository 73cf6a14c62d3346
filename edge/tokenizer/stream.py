"""Streaming detokenization: ids arrive one at a time, text leaves as soon as it is final.

A byte-level token may carry half a character, and some decoders treat a token differently
at the start of the text, so the text of one id is not `decode([id])`. Instead we decode a
short window: the ids of the last emitted chunk (context) plus the pending ones, and emit
what the window decodes to beyond the context's own text, once it no longer ends in an
incomplete character. Joined, the pushes and the flush equal `tokenizer.decode(all_ids)`.
"""

from __future__ import annotations

from edge.tokenizer.tokenizer import Tokenizer

REPLACEMENT = "\ufffd"


class StreamDetokenizer:
    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = False):
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self._reset()

    def _reset(self) -> None:
        self._ids: list[int] = []  # context ids, then pending ids
        self._context = 0  # how many of _ids are context
        self._context_text = ""  # decode(_ids[:_context])

    def push(self, token_id: int) -> str:
        """The new text that `token_id` completes ("" while a character is still partial)."""
        self._ids.append(token_id)
        text = self._decode(self._ids)
        ready = (
            len(text) > len(self._context_text)
            and not text.endswith(REPLACEMENT)
            and self._tokenizer.settled(self._ids, self._skip)
        )
        if not ready:
            return ""
        new_text = text[len(self._context_text):]
        self._ids = self._ids[self._context:]
        self._context = len(self._ids)
        self._context_text = self._decode(self._ids)
        return new_text

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character decodes to U+FFFD, as in `decode`)."""
        text = self._decode(self._ids)[len(self._context_text):]
        self._reset()
        return text

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip)

"""Text -> the tokens the model sees: position, id, token string, text piece, bytes.

In: a bundle's tokenizer and manifest (a decoder reads a raw prompt, BOS first when it
expects one; an encoder a sentence between its special tokens). Out: one `Token` per id. A piece may hold part of a character (byte-
level BPE splits rare characters into bytes): its `text` then shows U+FFFD, its bytes are exact.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from edge.errors import InputError
from edge.manifest import Manifest
from edge.tokenizer import Tokenizer


@dataclass(frozen=True)
class Token:
    position: int
    id: int
    token: str  # the vocabulary entry, e.g. "Ġking"
    text: str  # what it decodes to on its own, e.g. " king"
    bytes: bytes

    def to_dict(self) -> dict:
        return {**asdict(self), "bytes": self.bytes.hex(" ")}

    @property
    def label(self) -> str:
        """A short visible label for plots: spaces as ␣, newlines as \\n, and a piece of a
        character as its bytes ("<e6 9d>"), since it has no glyph of its own."""
        if self.text != self.bytes.decode("utf-8", "ignore"):
            return f"<{self.bytes.hex(' ')}>"
        return self.text.replace(" ", "\u2423").replace("\n", "\\n").replace("\t", "\\t") or repr(self.token)


def encode(tokenizer: Tokenizer, manifest: Manifest, text: str) -> list[int]:
    """Text as the model reads it: a decoder's raw prompt (BOS first when the bundle says
    so), an encoder's sentence with its special tokens ([CLS] ... [SEP])."""
    if not text or not text.strip():
        raise InputError("the text is empty: give some text to inspect.")
    if not manifest.is_decoder:
        limit = manifest.pooling.max_length if manifest.pooling else manifest.model.context_length
        encoding = tokenizer.encode_for_model(text, limit)
        if encoding.truncated:
            raise InputError(f"the text is longer than this encoder's {limit} tokens; use a shorter text.")
        return encoding.ids
    return manifest.tokenizer.bos_prefix() + tokenizer.encode(text)


def describe(tokenizer: Tokenizer, ids: list[int]) -> list[Token]:
    """Example (SmolLM2): [6004] -> [Token(0, 6004, "hi", "hi", b"hi")]"""
    rows = []
    for position, token_id in enumerate(ids):
        raw = tokenizer.token_bytes(token_id)
        rows.append(Token(position, token_id, tokenizer.id_to_token(token_id) or "", raw.decode("utf-8", "replace"), raw))
    return rows

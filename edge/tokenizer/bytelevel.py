"""GPT-2's byte <-> printable-character table, shared by the ByteLevel pre-tokenizer,
normalizer and decoder: every byte gets a visible stand-in so BPE never sees raw bytes.
"""

from __future__ import annotations

import regex

from edge.tokenizer.splitting import Piece, split_piece

GPT2_PATTERN = regex.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")


def _byte_to_char() -> dict[int, str]:
    """Printable bytes stand for themselves; the other 68 move to U+0100 and up.

    Example: {33: "!", ..., 0: "Ā", 32: "Ġ", ...}
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {b: chr(b) for b in printable}
    for n, b in enumerate(b for b in range(256) if b not in table):
        table[b] = chr(256 + n)
    return table


BYTE_TO_CHAR = _byte_to_char()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}
_ENCODE = [BYTE_TO_CHAR[b] for b in range(256)]


def to_chars(text: str) -> str:
    """Example: " héllo" -> "ĠhÃ©llo" """
    return "".join([_ENCODE[b] for b in text.encode("utf-8")])


def to_bytes(token: str) -> bytes:
    """Bytes a token stands for; a token with a character outside the table (an added token
    such as "日本") stands for its own UTF-8.

    Example: "ĠhÃ©" -> b" h\\xc3\\xa9";  "日本" -> "日本".encode()
    """
    try:
        return bytes([CHAR_TO_BYTE[c] for c in token])
    except KeyError:
        return token.encode("utf-8")


class ByteLevelPreTokenizer:
    """Optionally prefix a space, cut with GPT-2's regex, then map each piece to byte chars."""

    def __init__(self, spec: dict):
        self.add_prefix_space = bool(spec.get("add_prefix_space", True))
        self.use_regex = bool(spec.get("use_regex", True))

    def __call__(self, piece: Piece) -> list[Piece]:
        text, first = piece
        if self.add_prefix_space and not text.startswith(" "):
            text = " " + text
        pieces = split_piece((text, first), GPT2_PATTERN, "Isolated") if self.use_regex else [(text, first)]
        return [(to_chars(t), f) for t, f in pieces]


def to_text(tokens: list[str]) -> str:
    """The ByteLevel decoder: tokens -> their bytes -> UTF-8, invalid sequences as U+FFFD.

    Example: ["ĠhÃ", "©", "ð"] -> " hé\ufffd"
    """
    return b"".join(map(to_bytes, tokens)).decode("utf-8", errors="replace")

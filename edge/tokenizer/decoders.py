"""Decoders: the token strings of some ids -> text pieces, joined by the tokenizer.

Each is a callable `list[str] -> list[str]`, chained by Sequence, so per-token steps
(WordPiece's "##", Metaspace's "▁") and whole-text steps (ByteLevel, Fuse) compose as
in `tokenizers`.
"""

from __future__ import annotations

from typing import Callable

import regex

from edge.errors import TokenizerError
from edge.tokenizer import spec as specs
from edge.tokenizer.bytelevel import to_bytes, to_text
from edge.tokenizer.pre_tokenizers import prepend_scheme
from edge.tokenizer.splitting import compile_pattern

TextDecoder = Callable[[list[str]], list[str]]

BYTE_TOKEN = regex.compile(r"<0x([0-9A-Fa-f]{2})>")
_CLEANUP = [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
            (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")]


def cleanup(token: str) -> str:
    """BERT's detokenization clean-up: no space before punctuation and contractions.

    Example: " ," -> ","
    """
    for dirty, clean in _CLEANUP:
        token = token.replace(dirty, clean)
    return token


def _wordpiece(spec: dict) -> TextDecoder:
    prefix, clean = spec.get("prefix", "##"), spec.get("cleanup", True)

    def decode(tokens: list[str]) -> list[str]:
        """Example: ["un", "##aff", "able", ","] -> ["un", "aff", " able", ","]"""
        out = [t if i == 0 else t[len(prefix):] if t.startswith(prefix) else " " + t for i, t in enumerate(tokens)]
        return [cleanup(t) for t in out] if clean else out

    return decode


def byte_fallback(tokens: list[str]) -> list[str]:
    """Runs of "<0xXX>" tokens -> their UTF-8 text, or one U+FFFD per byte if invalid.

    Example: ["<0xC3>", "<0xA9>", "a", "<0xC3>"] -> ["é", "a", "\ufffd"]
    """
    out: list[str] = []
    run = bytearray()
    for token in [*tokens, None]:
        match = BYTE_TOKEN.fullmatch(token) if token is not None else None
        if match:
            run.append(int(match[1], 16))
            continue
        if run:
            try:
                out.append(run.decode("utf-8"))
            except UnicodeDecodeError:
                out.extend(["\ufffd"] * len(run))
            run.clear()
        if token is not None:
            out.append(token)
    return out


def _metaspace(spec: dict) -> TextDecoder:
    replacement = specs.text(spec, "replacement", "decoder Metaspace")
    strip_first = prepend_scheme(spec) != "never"

    def decode(tokens: list[str]) -> list[str]:
        """Example: ["▁Hey", "▁friend"] -> ["Hey", " friend"]"""
        return [t.replace(replacement, "" if i == 0 and strip_first else " ") for i, t in enumerate(tokens)]

    return decode


def _replace(spec: dict) -> TextDecoder:
    pattern = compile_pattern(*specs.pattern_source(spec, "decoder Replace"), "decoder Replace")
    content = specs.text(spec, "content", "decoder Replace")
    return lambda tokens: [pattern.sub(lambda _: content, t) for t in tokens]


def _strip(spec: dict) -> TextDecoder:
    content, start, stop = specs.text(spec, "content", "decoder Strip", " "), spec.get("start", 0), spec.get("stop", 0)
    if not all(type(n) is int and n >= 0 for n in (start, stop)):
        raise TokenizerError(f"tokenizer.json decoder Strip start and stop must be integers >= 0; {specs.CORRUPT}")

    def strip(token: str) -> str:
        """Example (content " ", start 1): "  a" -> " a" """
        left = len(token) - len(token.lstrip(content))
        right = len(token) - len(token.rstrip(content))
        return token[min(left, start): len(token) - min(right, stop)]

    return lambda tokens: [strip(t) for t in tokens]


BUILDERS: dict[str, Callable[[dict], TextDecoder]] = {
    "ByteLevel": lambda spec: lambda tokens: [to_text(tokens)],
    "WordPiece": _wordpiece,
    "Metaspace": _metaspace,
    "ByteFallback": lambda spec: byte_fallback,
    "Fuse": lambda spec: lambda tokens: ["".join(tokens)],
    "Strip": _strip,
    "Replace": _replace,
    "Sequence": lambda spec: specs.chain([build(s) for s in specs.field(spec, "decoders", "decoder")]),
}


def build(spec: dict) -> TextDecoder:
    """A decoder from its tokenizer.json spec."""
    return specs.build("decoder", spec, BUILDERS)


def may_change(spec: dict | None) -> Callable[[str], bool]:
    """Whether a token's decoded text can still change when more tokens follow: a byte
    token under ByteFallback joins with the next bytes into one character (or into U+FFFDs).
    """
    if "ByteFallback" in _types(spec):
        return lambda token: BYTE_TOKEN.fullmatch(token) is not None
    return lambda token: False


def token_bytes(spec: dict | None) -> Callable[[str], bytes]:
    """The bytes one token string stands for, in the text it decodes into.

    Example (ByteLevel): "ĠhÃ©" -> b" h\\xc3\\xa9";  (ByteFallback) "<0xE6>" -> b"\\xe6";
    (Metaspace) "▁king" -> b" king";  (WordPiece) "##ing" -> b"ing"
    """
    types = _types(spec)
    if "ByteLevel" in types:
        return to_bytes
    prefix = "##" if "WordPiece" in types else None

    def plain(token: str) -> bytes:
        match = BYTE_TOKEN.fullmatch(token) if "ByteFallback" in types else None
        if match:
            return bytes([int(match[1], 16)])
        if prefix and token.startswith(prefix):
            token = token[len(prefix):]
        return token.replace("\u2581", " ").encode("utf-8")

    return plain


def _types(spec: dict | None) -> list[str]:
    """Example: {"type": "Sequence", "decoders": [{"type": "Fuse"}]} -> ["Sequence", "Fuse"]"""
    if not spec:
        return []
    return [spec.get("type"), *[t for step in spec.get("decoders", []) for t in _types(step)]]

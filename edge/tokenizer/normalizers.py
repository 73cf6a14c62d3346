"""Normalizers: str -> str, applied to each stretch of text between added tokens.

Matches `tokenizers` (Rust) character for character, including its per-character
lowercasing (no final-sigma rule) and BERT's notion of control and whitespace characters.
"""

from __future__ import annotations

import unicodedata
from typing import Callable

import regex

from edge.tokenizer import spec as specs
from edge.tokenizer.bytelevel import to_chars
from edge.tokenizer.splitting import WHITESPACE, compile_pattern
from edge.tokenizer.unicode8 import NONSPACING_MARK, OTHER

Normalizer = Callable[[str], str]

# BERT's "Chinese characters": the CJK Unified Ideograph blocks get spaces around them.
_CJK = regex.compile(
    "([\u4e00-\u9fff\u3400-\u4dbf\U00020000-\U0002a6df\U0002a700-\U0002b73f"
    "\U0002b740-\U0002b81f\U0002b920-\U0002ceaf\uf900-\ufaff\U0002f800-\U0002fa1f])"
)
# BERT drops NUL, U+FFFD and control, format and private-use characters except \t \n \r.
_BERT_DROP = regex.compile(rf"(?![\t\n\r])(?:[\x00\ufffd]|{OTHER.pattern})")
_WHITESPACE_RUN_EDGES = (regex.compile(r"^\p{White_Space}+"), regex.compile(r"\p{White_Space}+$"))


def lowercase(text: str) -> str:
    """Per-character lowercase, as Rust's char::to_lowercase (Python's str.lower
    turns a word-final "Σ" into "ς"; Rust does not).

    Example: "ΟΔΟΣ İ" -> "οδοσ i̇"
    """
    if "Σ" not in text:
        return text.lower()
    return "".join([c.lower() for c in text])


def strip_accents(text: str) -> str:
    """Example: "Crème" -> "Creme" """
    return NONSPACING_MARK.sub("", unicodedata.normalize("NFD", text))


def _drop_marks(text: str) -> str:
    """The StripAccents normalizer: drop every combining mark (Mn, Mc, Me).

    Example: "e\u0301" -> "e"
    """
    return "".join([c for c in text if not unicodedata.category(c).startswith("M")])


def _bert(spec: dict) -> Normalizer:
    clean_text = spec.get("clean_text", True)
    chinese = spec.get("handle_chinese_chars", True)
    lower = spec.get("lowercase", True)
    accents = spec.get("strip_accents")
    accents = lower if accents is None else accents

    def normalize(text: str) -> str:
        if clean_text:
            text = WHITESPACE.sub(" ", _BERT_DROP.sub("", text))
        if chinese:
            text = _CJK.sub(r" \1 ", text)
        if accents:
            text = strip_accents(text)
        return lowercase(text) if lower else text

    return normalize


def _unicode(form: str) -> Callable[[dict], Normalizer]:
    return lambda spec: lambda text: unicodedata.normalize(form, text)


def _replace(spec: dict) -> Normalizer:
    pattern = compile_pattern(*specs.pattern_source(spec, "normalizer Replace"), "normalizer Replace")
    content = specs.text(spec, "content", "normalizer Replace")
    return lambda text: pattern.sub(lambda _: content, text)


def _prepend(spec: dict) -> Normalizer:
    prefix = specs.text(spec, "prepend", "normalizer Prepend")
    return lambda text: prefix + text if text else text


def _strip(spec: dict) -> Normalizer:
    edges = [edge for edge, on in zip(_WHITESPACE_RUN_EDGES, (spec.get("strip_left"), spec.get("strip_right"))) if on]

    def normalize(text: str) -> str:
        for edge in edges:
            text = edge.sub("", text)
        return text

    return normalize


BUILDERS: dict[str, Callable[[dict], Normalizer]] = {
    "BertNormalizer": _bert,
    "NFC": _unicode("NFC"),
    "NFD": _unicode("NFD"),
    "NFKC": _unicode("NFKC"),
    "NFKD": _unicode("NFKD"),
    "Lowercase": lambda spec: lowercase,
    "StripAccents": lambda spec: _drop_marks,
    "Strip": _strip,
    "Replace": _replace,
    "Prepend": _prepend,
    "ByteLevel": lambda spec: to_chars,
    "Sequence": lambda spec: specs.chain([build(s) for s in specs.field(spec, "normalizers", "normalizer")]),
}


def build(spec: dict) -> Normalizer:
    """A normalizer from its tokenizer.json spec."""
    return specs.build("normalizer", spec, BUILDERS)

"""Structured output: a grammar over the reply in, per step the tokens it allows out.

A JSON schema, a regular expression, a Lark grammar or a list of choices is compiled by
llguidance (the library behind structured output in llama.cpp's optional build,
onnxruntime-genai, vLLM and SGLang) against the bundle's own tokenizer.json. Each step
masks the logits to what the grammar allows, so every sampling mode stays available: the
constraint restricts, the sampler still chooses. EOS is allowed only where the grammar is
complete. Where the grammar allows exactly one continuation (JSON keys, punctuation), its
forced tokens go to the decoder in one call as drafts (see generate.py), checked like any
draft, so the output equals one-token constrained steps.

Errors in a schema, regex or grammar are found when the constraint is compiled, before any
token is generated: one `InputError` naming the parameter.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge.errors import InputError

PARAMS = ("json_schema", "regex", "grammar", "choices")
# JSON on one line with ", " and ": " (a schema's "x-guidance" may say otherwise): no runs of
# blank lines for a small model to drift into, and more of the reply forced, so fewer steps.
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def grammar_text(json_schema: Any = None, regex: str | None = None, grammar: str | None = None,
                 choices: Sequence[str] | None = None) -> tuple[str, str] | None:
    """(the parameter given, llguidance's grammar for it), or None without a constraint.
    Example: choices=["yes", "no"] -> ("choices", '...start: "yes" | "no"...')"""
    import llguidance

    given = [(name, value) for name, value in zip(PARAMS, (json_schema, regex, grammar, choices)) if value is not None]
    if not given:
        return None
    if len(given) > 1:
        raise InputError(f"give one constraint, not {' and '.join(n for n, _ in given)}.", param=given[1][0])
    name, value = given[0]
    try:
        if name == "json_schema":
            return name, llguidance.LLMatcher.grammar_from_json_schema(_schema(value), defaults=JSON_LAYOUT)
        if name == "regex":
            return name, llguidance.LLMatcher.grammar_from_regex(_text(value, name))
        if name == "grammar":
            return name, llguidance.LLMatcher.grammar_from_lark(_text(value, name))
        return name, llguidance.grammar_from("choice", json.dumps(_choices(value)))
    except ValueError as exc:  # llguidance: not a JSON object, or not a list of strings
        raise InputError(f"{{param}} is not valid: {_first_line(exc)}.", param=name) from None


def _schema(value: Any) -> dict:
    """A dict, a JSON string, or a pydantic model class (its model_json_schema())."""
    if hasattr(value, "model_json_schema"):
        value = value.model_json_schema()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InputError(f"{{param}} is not valid JSON ({exc.msg} at line {exc.lineno}).",
                             param="json_schema") from None
    if not isinstance(value, dict):
        raise InputError(f"{{param}} must be a JSON object (a schema), got {type(value).__name__}.",
                         param="json_schema")
    return value


def _text(value: Any, param: str) -> str:
    if not isinstance(value, str) or not value:
        raise InputError("{param} must be a non-empty string.", param=param)
    return value


def _choices(value: Any) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not value \
            or not all(isinstance(c, str) and c for c in value):
        raise InputError("{param} must be a non-empty list of non-empty strings.", param="choices")
    return list(value)


def _first_line(exc: BaseException) -> str:
    """llguidance's multi-line message (with a caret picture) as one line of at most 240 characters."""
    words = " ".join(str(exc).split()) or type(exc).__name__
    return (words if len(words) <= 240 else words[:237] + "...").rstrip(".")


class Grammar:
    """A constraint compiled and checked for one model's tokenizer; `matcher()` per generation."""

    def __init__(self, tokenizer, param: str, text: str):
        import llguidance

        error = llguidance.LLMatcher.validate_grammar(text, tokenizer)
        if error and not error.startswith("WARNING"):
            raise InputError(f"{{param}} is not valid: {_first_line(ValueError(error))}.", param=param)
        self.tokenizer, self.param, self.text = tokenizer, param, text

    def matcher(self) -> Matcher:
        return Matcher(self)


class Matcher:
    """One generation's position in the grammar: masks, consumes, forces."""

    def __init__(self, grammar: Grammar):
        import llguidance

        self._matcher = llguidance.LLMatcher(grammar.tokenizer, grammar.text)
        vocab = grammar.tokenizer.vocab_size
        self._bits = np.zeros((vocab + 31) // 32, dtype=np.int32)  # one bit per token
        self._vocab = vocab

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """(vocab,) logits with every token the grammar forbids at -inf (a copy)."""
        self._matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        allowed = np.unpackbits(self._bits.view(np.uint8), bitorder="little")[: logits.size].astype(bool)
        return np.where(allowed, logits, -np.inf).astype(logits.dtype, copy=False)

    def consume(self, token: int) -> None:
        if not self._matcher.consume_token(token):
            raise InputError(f"the grammar refused token {token} ({self._matcher.get_error()}).")

    def forced(self) -> list[int]:
        """The tokens the grammar allows as the only continuation from here."""
        return self._matcher.compute_ff_tokens()

    def valid_prefix(self, tokens: Sequence[int]) -> int:
        """How many of `tokens` the grammar would accept from here, in order."""
        return self._matcher.validate_tokens(list(tokens)) if tokens else 0

    @property
    def accepting(self) -> bool:
        """Whether the output so far is complete (the grammar may end here)."""
        return self._matcher.is_accepting()

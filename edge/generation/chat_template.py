"""Messages -> prompt text, rendered with the bundle's Jinja chat template.

Templates ship with models from the Hub, so they are untrusted code: they run in Jinja's
immutable sandbox with the same globals and filters transformers gives them, so that the
text is exactly what `tokenizer.apply_chat_template(..., tokenize=False)` returns.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from edge.errors import ChatTemplateError, InputError, check_text
from edge.manifest import TokenizerSpec

Message = dict[str, str]


def render(messages: list[Message], spec: TokenizerSpec, add_generation_prompt: bool = True) -> str:
    """The conversation as the model was trained to see it, ready to tokenize."""
    check_messages(messages)
    if not spec.chat_template:
        raise ChatTemplateError("this model has no chat template: send plain text instead ({param}).", param="raw")
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]  # the template sees copies
    try:
        return _compile(spec.chat_template).render(
            messages=plain, tools=None, documents=None, add_generation_prompt=add_generation_prompt,
            bos_token=spec.bos_token or "", eos_token=spec.eos_token or "",
        )
    except jinja2.TemplateError as exc:  # SecurityError and raise_exception() included
        raise ChatTemplateError(f"the chat template failed: {exc}. Fix the messages, or send plain text ({{param}}).", param="raw") from None


def check_messages(messages: object) -> None:
    if not isinstance(messages, list) or not messages:
        raise InputError('messages must be a non-empty list of {"role": ..., "content": ...} dicts.')
    for i, m in enumerate(messages):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise InputError(f'message {i} must be a dict with string "role" and "content", got {m!r}.')
        if not m["role"]:
            raise InputError(f"message {i} has an empty role: use system, user or assistant.")
        check_text(m["content"], "messages")


@lru_cache(maxsize=8)
def _compile(source: str) -> jinja2.Template:
    try:
        return _environment().from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ChatTemplateError(
            f"the chat template is not valid Jinja ({exc.message}, line {exc.lineno}). "
            "Re-export the bundle, or send plain text ({param}).", param="raw"
        ) from None


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, but an unsafe attribute raises at once instead of rendering
    as an empty string, so an escape attempt is reported rather than silently ignored."""

    def unsafe_undefined(self, obj, attribute):
        raise jinja2.exceptions.SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe"
        )


@lru_cache(maxsize=1)
def _environment() -> _Sandbox:
    """The environment transformers renders templates in (chat_template_utils.py)."""
    env = _Sandbox(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.globals["namespace"] = _Namespace
    return env


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    # Jinja's own tojson escapes HTML characters; templates expect plain JSON.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class _Namespace(jinja2.utils.Namespace):
    """A namespace that refuses underscore names, so `ns.__class__`-style tricks cannot be stored."""

    def __init__(*args, **kwargs):  # Jinja's signature trick, so namespace(self=...) still works
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _Namespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _Namespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"chat templates cannot set {name!r} on a namespace")

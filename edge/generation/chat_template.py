"""Messages -> prompt text, rendered with the bundle's Jinja chat template.

Templates ship with models from the Hub, so they are untrusted code: they run in Jinja's
immutable sandbox with the same globals and filters transformers gives them, so that the
text is exactly what `tokenizer.apply_chat_template(..., tokenize=False)` returns.

The sandbox stops escapes, not work, so rendering is also bounded: every loop iteration
and call takes one step of a budget (MAX_STEPS, and MAX_SECONDS of wall time), the output
stops at MAX_OUTPUT characters, `*` and `**` cannot build huge strings or numbers, filters
take no size argument over MAX_OUTPUT, and there is no loader (no include, extends or
import). Whatever a template raises becomes one ChatTemplateError.
"""

from __future__ import annotations

import copy
import json
import operator
import threading
import time
from datetime import datetime
from functools import lru_cache, wraps

import jinja2
import jinja2.ext
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from edge.errors import BundleError, ChatTemplateError, InputError, check_text
from edge.manifest import TokenizerSpec

Message = dict[str, str]

MAX_STEPS = 1_000_000  # loop iterations + calls per render: real templates take ~10 per message
MAX_SECONDS = 5.0
MAX_OUTPUT = 1 << 22  # characters: far more than any context window's worth of text
MAX_EXPONENT = 1024
PROBE = [{"role": "user", "content": "Hello"}]  # a conversation every chat template renders


def render(messages: list[Message], spec: TokenizerSpec, add_generation_prompt: bool = True,
           tools: list[dict] | None = None) -> str:
    """The conversation as the model was trained to see it, ready to tokenize. `tools`: OpenAI
    tool definitions ({"type": "function", "function": {...}}), for templates that render them
    (see renders_tools); the template gets a copy."""
    check_messages(messages)
    if not spec.chat_template:
        raise ChatTemplateError("this model has no chat template: send plain text instead ({param}).", param="raw")
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]  # the template sees copies
    template = _compile(spec.chat_template)
    try:
        text = _bounded_render(template, messages=plain, tools=copy.deepcopy(tools) if tools else None, documents=None,
                               add_generation_prompt=add_generation_prompt,
                               bos_token=spec.bos_token or "", eos_token=spec.eos_token or "")
        return check_text(text)
    except jinja2.TemplateError as exc:  # SecurityError, our limits and raise_exception() included
        reason = str(exc)
    except InputError:
        reason = "it wrote a lone surrogate, which is not text"
    except Exception as exc:  # noqa: BLE001  untrusted code: 1/0, RecursionError, MemoryError, ...
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no message'}"
    raise ChatTemplateError(f"the chat template failed: {reason[:200].rstrip('.')}. Fix the messages, or send plain text "
                            "({param}).", param="raw") from None


def renders_tools(spec: TokenizerSpec) -> bool:
    """Whether the bundle's chat template reads a `tools` variable (Qwen2's, Llama 3.1's, ...):
    then a request's tools go to the template, in the format the model was trained on,
    instead of edge's default tools prompt."""
    if not spec.chat_template:
        return False
    _compile(spec.chat_template)  # a template that does not compile fails here, in one line
    return "tools" in _variables(spec.chat_template)


@lru_cache(maxsize=8)
def _variables(source: str) -> frozenset[str]:
    return frozenset(meta.find_undeclared_variables(_environment().parse(source)))


def check_template(spec: TokenizerSpec, bundle: object) -> None:
    """Fail at load, naming the bundle, if its template cannot render a one-message chat."""
    if spec.chat_template:
        try:
            render(PROBE, spec)
        except ChatTemplateError as exc:
            raise BundleError(f"bundle {bundle}: {exc.render('--raw').removesuffix('.')}, and cannot render even "
                              "one user message. Re-export the bundle, or use it with --raw only.") from None


def _bounded_render(template: jinja2.Template, **context) -> str:
    """Render with this thread's step budget armed; stop once the output passes MAX_OUTPUT."""
    _budget.steps, _budget.deadline = MAX_STEPS, time.monotonic() + MAX_SECONDS
    parts, size = [], 0
    for part in template.generate(**context):
        size += len(part)
        if size > MAX_OUTPUT:
            raise jinja2.exceptions.SecurityError(f"the output passed {MAX_OUTPUT} characters")
        parts.append(part)
    return "".join(parts)


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
    except (RecursionError, MemoryError):  # thousands of nested brackets
        raise ChatTemplateError("the chat template nests too deeply to compile. Re-export the bundle, or send "
                                "plain text ({param}).", param="raw") from None


_budget = threading.local()  # steps left and the deadline of the render on this thread


def _step() -> None:
    _budget.steps -= 1
    if _budget.steps < 0 or (_budget.steps % 1024 == 0 and time.monotonic() > _budget.deadline):
        raise jinja2.exceptions.SecurityError(
            f"it ran past {MAX_STEPS} steps or {MAX_SECONDS:g} s (a loop too long, or nested too deep)")


def _counted(iterable):
    """The loop guard every `{% for %}` iterates through: one step per item."""
    for item in iterable:
        _step()
        yield item


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, but an unsafe attribute raises at once instead of rendering
    as an empty string, so an escape attempt is reported rather than silently ignored."""

    intercepted_binops = frozenset({"*", "**"})

    def _generate(self, source: nodes.Template, *args, **kwargs):
        """Compile with every for-loop's iterable passed through `_counted`: one step per item."""
        for loop in source.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, "_edge_counted", [], [], None, None, lineno=loop.lineno)
        return super()._generate(source, *args, **kwargs)

    def unsafe_undefined(self, obj, attribute):
        raise jinja2.exceptions.SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe"
        )

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805  Jinja's names, free for kwargs
        _step()  # a recursive macro is a chain of calls
        return ImmutableSandboxedEnvironment.call(__self, __context, __obj, *args, **kwargs)

    def call_binop(self, context, operator_name: str, left, right):
        """`*` and `**`, refused where the result would be huge: 'x' * 10**10, 10 ** 10**10."""
        if operator_name == "*":
            count, sequence = (left, right) if isinstance(right, (str, list, tuple)) else (right, left)
            if isinstance(sequence, (str, list, tuple)) and isinstance(count, int) and count * len(sequence) > MAX_OUTPUT:
                raise jinja2.exceptions.SecurityError(f"a repetition would pass {MAX_OUTPUT} items")
            return operator.mul(left, right)
        if isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT and isinstance(left, (int, float)) and abs(left) > 1:
            raise jinja2.exceptions.SecurityError(f"an exponent over {MAX_EXPONENT}")
        return operator.pow(left, right)


@lru_cache(maxsize=1)
def _environment() -> _Sandbox:
    """The environment transformers renders templates in (chat_template_utils.py)."""
    env = _Sandbox(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])  # no loader
    env.filters.update({name: _sized(f) for name, f in env.filters.items()})
    env.filters["tojson"] = _tojson
    env.filters["_edge_counted"] = _counted
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.globals["namespace"] = _Namespace
    return env


def _sized(jinja_filter):
    """A filter refusing size arguments past MAX_OUTPUT ('x'|center(10**10), indent(10**9))."""

    @wraps(jinja_filter)
    def sized(*args, **kwargs):
        if any(isinstance(a, int) and a > MAX_OUTPUT for a in (*args[1:], *kwargs.values())):
            raise jinja2.exceptions.SecurityError(f"a filter argument over {MAX_OUTPUT}")
        return jinja_filter(*args, **kwargs)

    return sized


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

"""One small hierarchy of user-facing errors.

Every message says what is wrong and how to fix it, in one line, so the CLI can
print it as `error: <message>` without a traceback. An error about one parameter carries
its Python keyword name as a field (`param="max_tokens"`) and writes `{param}` where the
message names it; each face renders that in its own words (the CLI `--max-tokens`, the
server `max_tokens` with the `param` field), so no message text is ever parsed.
"""

from __future__ import annotations


class EdgeError(Exception):
    """Base class: an error the user can act on (bad input, missing file, ...)."""

    exit_code = 1

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message, self.param = message, param

    def render(self, name: str | None = None) -> str:
        """The message with its parameter called `name` (default: the Python keyword)."""
        if self.param is None:
            return self.message
        return self.message.replace("{param}", name if name is not None else self.param)

    def __str__(self) -> str:
        return self.render()


class BundleError(EdgeError):
    """The bundle is missing, corrupt, or from an incompatible schema version."""


class TokenizerError(EdgeError):
    """tokenizer.json uses a component edge does not implement, or is malformed."""


class ChatTemplateError(EdgeError):
    """The chat template failed to render for these messages."""


class SamplingError(EdgeError):
    """A sampling parameter is out of range (never silently clamped)."""


class ContextWindowError(EdgeError):
    """The prompt plus requested tokens do not fit the model's context window."""


class InputError(EdgeError):
    """Empty or wrongly typed input (prompt, texts, files)."""


class IncompleteOutputError(EdgeError):
    """A constrained reply reached max_tokens before its structure (JSON, grammar) ended."""

    def __init__(self, text: str):
        super().__init__("the reply reached {param} before its structure was complete, so it is not valid: "
                         "raise {param}.", param="max_tokens")
        self.text = text


class SearchIndexError(EdgeError):
    """The search index is missing, corrupt, or was built with another model."""


class ExportError(EdgeError):
    """The exporter cannot handle this source (unknown architecture, offline hub id, ...)."""


class MissingExtraError(EdgeError):
    """A command needs an optional extra that is not installed (serve, export, viz, ...)."""

    def __init__(self, what: str, extra: str, module: str):
        first = " (torch==2.13.0 first)" if extra == "export" else ""
        super().__init__(f"{what} needs the `{extra}` extra ({module} is not installed). "
                         f"Install it with: pip install 'edge-runtime[{extra}]'{first}.")
        self.extra, self.module = extra, module


def require_extra(what: str, extra: str, *modules: str) -> None:
    """Raise MissingExtraError unless every module of the extra can be imported."""
    import importlib.util

    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(what, extra, module)


class UsageError(EdgeError):
    """The command line itself is wrong; the CLI exits with 2."""

    exit_code = 2


# --- checks every face shares ----------------------------------------------------------


def check_positive_int(value: object, param: str) -> int:
    """`value` if it is an integer >= 1 (not a bool), else an InputError about `param`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{{param}} must be an integer >= 1, got {value!r}.", param=param)
    return value


def check_prompt(prompt: object, param: str = "prompt") -> str:
    """`prompt` if it is a non-empty string, else an InputError about `param`."""
    if not isinstance(prompt, str) or not prompt:
        raise InputError("the prompt is empty: give some text to continue.", param=param)
    return check_text(prompt, param)


def check_text(text: str, param: str | None = None) -> str:
    """`text` if it is valid Unicode: a lone surrogate ("a\\ud800", what invalid UTF-8 or a
    broken JSON escape becomes) has no UTF-8 form, so no tokenizer can read it.

    Example: "a\\ud800" -> InputError("{param} has a lone surrogate U+D800 at character 1 ...")
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        where = "{param}" if param is not None else "the text"
        raise InputError(f"{where} has a lone surrogate U+{ord(text[exc.start]):04X} at character {exc.start}, "
                         "which is not text. Send valid UTF-8 (or JSON escapes of whole characters).",
                         param=param) from None
    return text

"""One small hierarchy of user-facing errors.

Every message says what is wrong and how to fix it, in one line, so the CLI can
print it as `error: <message>` without a traceback.
"""


class EdgeError(Exception):
    """Base class: an error the user can act on (bad input, missing file, ...)."""

    exit_code = 1


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


class SearchIndexError(EdgeError):
    """The search index is missing, corrupt, or was built with another model."""


class ExportError(EdgeError):
    """The exporter cannot handle this source (unknown architecture, offline hub id, ...)."""


class UsageError(EdgeError):
    """The command line itself is wrong; the CLI exits with 2."""

    exit_code = 2

"""How the command line spells a parameter an error names (`EdgeError.param`)."""

from __future__ import annotations


def flag(param: str | None) -> str | None:
    """The command-line spelling of a Python keyword. Example: "max_tokens" -> "--max-tokens"."""
    return None if param is None else "--" + param.replace("_", "-")

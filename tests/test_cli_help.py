"""Every command's --help: an example, and no Python type names (typer shows `<int>` by default)."""

from __future__ import annotations

import pytest
import typer

from edge.cli import commands, main  # noqa: F401 (commands: registers every command on the app)
from edge.cli.app import app

PYTHON_TYPES = ("<bool>", "<int>", "<float>", "<str>", "<path>", "list[")


def _commands(command, path=()):
    """(path, click command) for the app and every command and sub-command under it."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


ALL = [path for path, _ in _commands(typer.main.get_command(app))]


@pytest.mark.parametrize("path", ALL, ids=lambda p: " ".join(p) or "edge")
def test_help_has_no_python_types_and_an_example(path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one row per option: a wrapped word cannot hide a type name
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert not [t for t in PYTHON_TYPES if t in out], out
    assert "Example: edge" in out


def test_every_command_is_covered():
    assert {"generate", "chat", "eval", "embed", "index", "search", "serve", "bench", "info", "export", "models",
            "pull", "doctor", "inspect"} <= {p[0] for p in ALL if p}

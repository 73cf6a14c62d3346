"""`edge`: a thin typer layer over the public API.

User errors print one line `error: <what>. <fix>` on stderr and exit 1 (2 for usage);
EDGE_DEBUG=1 shows the traceback instead. Commands import heavy modules lazily, so
`edge --help` stays fast and the runtime commands never import the exporter.
"""

from __future__ import annotations

import os
import sys

import typer

from edge.cli import commands  # noqa: F401  (registers the commands on the app)
from edge.cli.app import app
from edge.errors import EdgeError

try:  # typer >= 0.20 vendors click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:  # older typer uses click itself
    from click.exceptions import ClickException, UsageError

    NoArgsIsHelpError = ()


def main(argv: list[str] | None = None) -> int:
    try:
        result = app(args=argv, standalone_mode=False)
        return result if isinstance(result, int) else 0
    except EdgeError as exc:
        return _fail(exc.render(flag(exc.param)), exc.exit_code, exc)
    except typer.Exit as exc:
        return exc.exit_code
    except NoArgsIsHelpError:
        return 2  # the help was printed
    except UsageError as exc:
        hint = f" See `{exc.ctx.command_path} --help`." if exc.ctx else ""
        return _fail(exc.format_message().rstrip(".") + "." + hint, 2, exc)
    except ClickException as exc:
        return _fail(exc.format_message(), exc.exit_code, exc)
    except (KeyboardInterrupt, typer.Abort):
        print("interrupted", file=sys.stderr)
        return 130


def flag(param: str | None) -> str | None:
    """The command-line spelling of a Python keyword. Example: "max_tokens" -> "--max-tokens"."""
    return None if param is None else "--" + param.replace("_", "-")


def _fail(message: str, code: int, exc: BaseException) -> int:
    if os.environ.get("EDGE_DEBUG"):
        raise exc
    print(f"error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())

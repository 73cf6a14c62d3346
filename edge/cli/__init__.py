"""`edge`: a thin typer layer over the public API.

User errors print one line `error: <what>. <fix>` on stderr and exit 1 (2 for usage);
EDGE_DEBUG=1 shows the traceback instead. Ctrl-C exits 130 with one line, at any moment:
typer, the commands and everything they import are imported inside `main`'s handler, so an
interrupt during start-up is caught like one during generation. Commands import heavy
modules lazily, so `edge --help` stays fast and the runtime commands never import the exporter.
"""

from __future__ import annotations

import os
import sys

from edge.cli.flags import flag


def main(argv: list[str] | None = None) -> int:
    sigints: list[int] = []
    previous = None
    try:
        previous = _count_sigints(sigints)
        return _run(argv)
    except BaseException as exc:
        # An extension module interrupted while it imports may swallow the KeyboardInterrupt
        # and fail with an ImportError (numpy: "PyCapsule_Import could not import module").
        if not (interrupted(exc) or (isinstance(exc, ImportError) and sigints)):
            raise
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            import signal

            signal.signal(signal.SIGINT, previous)


def _count_sigints(sigints: list[int]):
    """Raise KeyboardInterrupt on Ctrl-C, as Python does, and note that it came; the handler
    it replaces (None off the main thread, where handlers cannot be set)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        return None  # off the main thread handlers cannot be set; an ignored Ctrl-C stays ignored

    def on_sigint(signum, frame):
        sigints.append(signum)
        raise KeyboardInterrupt

    return signal.signal(signal.SIGINT, on_sigint)


def _run(argv: list[str] | None) -> int:
    import typer

    from edge.cli import commands  # noqa: F401  (registers the commands on the app)
    from edge.cli.app import app
    from edge.errors import EdgeError

    try:  # typer >= 0.20 vendors click
        from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
    except ImportError:  # older typer uses click itself
        from click.exceptions import ClickException, UsageError

        NoArgsIsHelpError = ()
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
    except typer.Abort:  # click's own Ctrl-C
        raise KeyboardInterrupt from None


def interrupted(exc: BaseException) -> bool:
    """Whether `exc` is Ctrl-C, or an error raised while Ctrl-C was being handled (an
    extension module whose import was interrupted may report ImportError instead)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__context__
    return False


def _fail(message: str, code: int, exc: BaseException) -> int:
    if os.environ.get("EDGE_DEBUG"):
        raise exc
    print(f"error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())

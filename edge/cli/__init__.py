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
    ctrl_c = _CtrlC()
    try:
        ctrl_c.install()
        code = _run(argv)
        if ctrl_c.lost:  # the command ended before the interrupt could be raised again
            print("interrupted", file=sys.stderr)
            return 130
        return code
    except BaseException as exc:
        # An extension module interrupted while it imports may swallow the KeyboardInterrupt
        # and fail with an ImportError (numpy: "PyCapsule_Import could not import module").
        if not (interrupted(exc) or (isinstance(exc, ImportError) and ctrl_c.count)):
            raise
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        ctrl_c.uninstall()


class _CtrlC:
    """Ctrl-C raises KeyboardInterrupt, as in Python, and is never lost.

    A SIGINT that lands while Python runs one of its own callbacks (importlib's module-lock
    weakref callback during an import, a `__del__`) cannot propagate: Python prints
    "Exception ignored in ..." and the command runs on, to exit 0. The unraisable hook takes
    such an interrupt instead and has another thread deliver it again, so it is raised at the
    next ordinary line of the main thread.
    """

    def __init__(self) -> None:
        self.count = 0  # SIGINTs received
        self.lost = False  # one was swallowed by a callback and not yet raised again
        self.closing = self.in_hook = False
        self.resend = None
        self.previous = self.previous_hook = None

    def install(self) -> None:
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            return  # off the main thread handlers cannot be set; an ignored Ctrl-C stays ignored
        self.previous_hook = sys.unraisablehook
        sys.unraisablehook = self.on_unraisable
        self.previous = signal.signal(signal.SIGINT, self.on_sigint)

    def on_sigint(self, signum, frame) -> None:
        self.count += 1
        self.lost = False
        if not self.closing:
            raise KeyboardInterrupt

    def on_unraisable(self, unraisable) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt) or self.closing:
            return self.previous_hook(unraisable)
        import threading

        self.lost = self.in_hook = True
        self.resend = threading.Thread(target=self._resend, daemon=True)
        self.resend.start()
        self.in_hook = False

    def _resend(self) -> None:
        """Interrupt the main thread once it is out of this hook (raised in the hook, the
        interrupt would be swallowed again)."""
        import _thread
        import time

        while self.in_hook:
            time.sleep(0.001)
        time.sleep(0.001)
        _thread.interrupt_main()

    def uninstall(self) -> None:
        self.closing = True  # an interrupt still on its way is only counted now
        if self.resend is not None:
            self.resend.join()
        if self.previous_hook is not None:
            sys.unraisablehook = self.previous_hook
        if self.previous is not None:
            import signal

            signal.signal(signal.SIGINT, self.previous)  # runs a pending handler first


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

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
    except BaseException as exc:
        # An extension module interrupted while it imports may swallow the KeyboardInterrupt
        # and fail with an ImportError (numpy: "PyCapsule_Import could not import module").
        if not (interrupted(exc) or (isinstance(exc, ImportError) and ctrl_c.count)):
            raise
        code = None
    finally:
        ctrl_c.uninstall()  # from here on an interrupt is only noted (ctrl_c.lost), never raised
    if code is None or ctrl_c.lost:  # interrupted, or the command ended before a lost one was raised again
        print("interrupted", file=sys.stderr)
        return 130
    return code


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
        self.resends: list = []  # threads that deliver a swallowed interrupt again
        self.previous = self.previous_hook = None

    def install(self) -> None:
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, None):
            return  # off the main thread handlers cannot be set; an ignored Ctrl-C stays ignored; a C handler could not be restored
        self.previous_hook = sys.unraisablehook
        sys.unraisablehook = self.on_unraisable
        self.previous = signal.signal(signal.SIGINT, self.on_sigint)

    def on_sigint(self, signum, frame) -> None:
        self.count += 1
        if self.closing or self.in_hook:  # raised here it would be lost: main reports it, or the hook's thread resends it
            self.lost = True
            return
        self.lost = False
        raise KeyboardInterrupt

    def on_unraisable(self, unraisable) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt) or self.closing:
            return self.previous_hook(unraisable)
        import threading

        self.lost = self.in_hook = True
        try:
            self.resends.append(threading.Thread(target=self._resend, daemon=True))
            self.resends[-1].start()
        finally:
            self.in_hook = False  # else _resend waits for ever and uninstall's join with it

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
        for thread in self.resends:
            if thread.ident is not None:  # started
                thread.join()
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

"""Ctrl-C at any moment of `edge generate`: exit 130 with one line on stderr, never a
traceback; mid-stream, the partial text stays on stdout and its line is ended.

The CLI runs in a subprocess whose stream is slowed (a short wrapper script), so a SIGINT
lands where the test means it to; every wait has a timeout.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
# The slowing is patched in under main's own handler, as every heavy import must be; "ready"
# marks the end of what no program can catch Ctrl-C in: Python's own start-up (site, .pth
# files) and the console script's `from edge.cli import main`, which imports only three small
# edge modules (test_the_entry_point_imports_nothing_heavy_before_main).
SLOW_CLI = """
import sys
import edge.cli as cli
print("ready", file=sys.stderr, flush=True)
run = cli._run
def slow_run(argv):
    import time
    from edge.generation.model import LanguageModel
    stream = LanguageModel.stream
    def slow(self, *args, **kwargs):
        for chunk in stream(self, *args, **kwargs):
            time.sleep(0.05)
            yield chunk
    LanguageModel.stream = slow
    return run(argv)
cli._run = slow_run
sys.exit(cli.main(sys.argv[1:]))
"""


def _sigint_as_in_a_terminal() -> None:
    """In the child before exec: Ctrl-C's default action, as a terminal's foreground program
    starts with. A test run launched in the background (`cmd &`, nohup) has SIGINT ignored, the
    children inherit that, and Python then never raises KeyboardInterrupt: they would exit 0."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(bundle: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("EDGE_DEBUG", None)
    run = subprocess.Popen([sys.executable, "-c", SLOW_CLI, "generate", "Once upon a time", "-m", str(bundle),
                            "--raw", "-n", "200", "--temperature", "0.8", "--seed", "1"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                           preexec_fn=_sigint_as_in_a_terminal)
    assert run.stderr.readline() == b"ready\n"
    return run


def _clean_exit(run: subprocess.Popen, err: bytes) -> None:
    """Exit 130, and at most the one line "interrupted" on stderr."""
    assert run.returncode == 130, err
    assert b"Traceback" not in err and err.decode().strip() in ("", "interrupted"), err


def test_interrupt_mid_stream_keeps_the_partial_text(tiny_llama_bundle_fp32):
    run = _start(tiny_llama_bundle_fp32)
    first = run.stdout.read1(64)  # the reply has begun
    run.send_signal(signal.SIGINT)
    rest, err = run.communicate(timeout=60)
    out = first + rest
    _clean_exit(run, err)
    assert out.strip() and out.endswith(b"\n") and out.count(b"\n") == 1


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.03, 0.06, 0.1, 0.15, 0.2, 0.3, 0.45, 0.7])
def test_interrupt_during_start_up(tiny_llama_bundle_fp32, delay):
    """Interrupts during imports (numpy, onnxruntime) and loading printed tracebacks."""
    run = _start(tiny_llama_bundle_fp32)
    time.sleep(delay)
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=60)
    _clean_exit(run, err)


def test_the_entry_point_imports_nothing_heavy_before_main():
    """Ctrl-C can only be caught inside main: importing the console script's module must import
    nothing beyond edge itself (9 of 44 start-up interrupts printed tracebacks in imports)."""
    # __future__ (the compiler directive's tiny module) is preloaded by some Pythons, not others
    code = ("import sys; before = set(sys.modules) | {'__future__'}; import edge.cli; "
            "print(sorted(m for m in set(sys.modules) - before if not m.startswith('edge')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.stdout.strip() == "[]", done.stderr


# A SIGINT that lands inside a callback Python runs for itself (here a `__del__`; in CI it was
# importlib's module-lock weakref callback) is "Exception ignored" by Python: the command ran
# on and exited 0 with a traceback-like message on stderr.
SWALLOWED = """
import os, signal, sys, time
import edge.cli as cli
class Dropped:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100_000):  # the handler runs here, where its exception cannot propagate
            pass
def run(argv):
    Dropped()
    for _ in range(int(argv[0])):
        time.sleep(0.01)
    return 0
cli._run = run
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("steps", ["1000", "0"])
def test_an_interrupt_swallowed_by_a_callback_still_stops_the_command(steps):
    """Raised again at the next line (1000 steps: 10 s of work left), or reported when the
    command ended first (0 steps): either way exit 130 and one line, at once."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", SWALLOWED, steps], capture_output=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, preexec_fn=_sigint_as_in_a_terminal)
    assert done.returncode == 130 and done.stderr.decode().strip() == "interrupted", done.stderr
    assert time.monotonic() - started < 5


def test_a_second_interrupt_while_the_hook_runs_neither_hangs_nor_is_lost():
    """Ctrl-C pressed again while the unraisable hook starts its thread (Thread.start waits,
    and takes signals): it was raised inside the hook, left the thread waiting for ever and
    main() joining it."""
    code = SWALLOWED.replace("import edge.cli as cli", """import edge.cli as cli, threading
real_start = threading.Thread.start
def start(self):
    real_start(self)
    if getattr(self, "_target", None) and self._target.__name__ == "_resend":
        os.kill(os.getpid(), signal.SIGINT)
threading.Thread.start = start""")
    done = subprocess.run([sys.executable, "-c", code, "0"], capture_output=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, preexec_fn=_sigint_as_in_a_terminal)
    assert done.returncode == 130 and done.stderr.decode().strip() == "interrupted", done.stderr

"""Whether onnxruntime's workers spin: only when the run queue leaves them a core each."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from edge import session
from edge.session import others_runnable


def test_others_runnable_leaves_out_this_process_threads():
    assert others_runnable("0.50 0.40 0.30 3/250 1234", ["R", "S", "R"]) == 1
    assert others_runnable("9.00 9.00 9.00 1/250 1234", ["R", "S"]) == 0  # a high average, nothing running now
    assert others_runnable("0.00 0.00 0.00 1/90 77", ["R", "R"]) == 0  # a thread counted between two reads


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(session, "_usable_cores", lambda: 2)
    monkeypatch.setattr(session, "_own_thread_states", lambda: ["R"])


def _run_queue(monkeypatch, text: str) -> None:
    monkeypatch.setattr(session, "_read_loadavg", lambda: text)


def test_workers_spin_only_on_cores_nobody_else_wants(two_cores, monkeypatch):
    _run_queue(monkeypatch, "8.00 8.00 1.00 1/300 4242")  # busy a minute ago, only this process now
    assert session.spinning_pays(2)
    _run_queue(monkeypatch, "0.10 0.10 0.10 2/300 4242")  # one other runnable thread
    assert not session.spinning_pays(2) and session.spinning_pays(1)
    _run_queue(monkeypatch, "0.10 0.10 0.10 3/300 4242")
    assert not session.spinning_pays(1)


def test_without_a_readable_run_queue_the_load_average_decides(two_cores, monkeypatch):
    def unreadable():
        raise OSError("no /proc")

    for reader in (unreadable, lambda: "not a loadavg line"):
        monkeypatch.setattr(session, "_read_loadavg", reader)
        monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))
        assert session.spinning_pays(2)
        monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 3.0, 3.0))
        assert not session.spinning_pays(2)


@pytest.mark.skipif(not os.path.exists("/proc/loadavg"), reason="reads Linux's /proc")
def test_busy_cores_turn_spinning_off():
    """Real busy processes, one per usable core: the run queue shows them within a few polls."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(session._usable_cores())]
    try:
        deadline = time.monotonic() + 5
        while session.spinning_pays(1):
            assert time.monotonic() < deadline, "busy cores never showed in the run queue"
            time.sleep(0.05)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()

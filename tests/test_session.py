"""Whether onnxruntime's workers spin: decided from the run queue, not the load average."""

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


def test_spinning_follows_the_run_queue_not_the_load_average(monkeypatch):
    cores = os.cpu_count() or 1
    monkeypatch.setattr(session, "_own_thread_states", lambda: ["R"])
    monkeypatch.setattr(session, "_read_loadavg", lambda: f"{cores * 4}.00 {cores * 4}.00 1.00 1/300 4242")
    assert session.spinning_pays()  # busy a minute ago, idle now
    monkeypatch.setattr(session, "_read_loadavg", lambda: f"0.10 0.10 0.10 {cores + 1}/300 4242")
    assert not session.spinning_pays()  # a runnable thread per core besides this one


@pytest.mark.skipif(not os.path.exists("/proc/loadavg"), reason="reads Linux's /proc")
def test_busy_cores_turn_spinning_off():
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range((os.cpu_count() or 1) + 1)]
    try:
        time.sleep(0.3)
        assert not session.spinning_pays()
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()

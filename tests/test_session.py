"""Session set-up: whether onnxruntime's workers spin (only when the run queue leaves them a
core each), and which bundle file pages leave the resident set after loading."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.engine import session
from edge.bundle import open_bundle
from edge.engine.decoder_runner import DecoderRunner
from edge.engine.session import clean_weight_maps, others_runnable


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


SMAPS = """\
7f0000000000-7f0000010000 rw-p 00001000 fe:00 42       /b/model.onnx.data
Rss:                  64 kB
Anonymous:             0 kB
Swap:                  0 kB
7f0000010000-7f0000012000 rw-p 00020000 fe:00 42       /b/model.onnx.data
Rss:                   8 kB
Anonymous:             4 kB
Swap:                  0 kB
7f0000012000-7f0000014000 rw-p 00022000 fe:00 42       /b/model.onnx.data
Anonymous:             0 kB
Swap:                  4 kB
7f0000020000-7f0000030000 r--p 00000000 fe:00 43       /b2/model.onnx.data
Anonymous:             0 kB
Swap:                  0 kB
7f0000030000-7f0000031000 r--p 00000000 fe:00 44       /b/lib/helper.so
Anonymous:             0 kB
Swap:                  0 kB
7f0000040000-7f0000050000 rw-p 00000000 00:00 0
Anonymous:             0 kB
Swap:                  0 kB
"""


def test_only_unwritten_maps_of_the_bundle_weight_files_are_released():
    # not: a written (copy-on-write) page, resident or swapped out; another folder's file;
    # a file under the folder that is not a weight file; anonymous memory
    assert clean_weight_maps(SMAPS, Path("/b")) == [(0x7F0000000000, 0x7F0000010000)]


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="reads Linux's /proc/self/smaps")
def test_loading_leaves_no_bundle_page_resident(tiny_llama_bundle_int8):
    """MatMulNBits read its scales and zero points from the file to repack them; once the
    session is open none of those pages is still in the resident set. Running maps back
    what it reads (norm weights), and the results are those of the transformers tests."""
    bundle = open_bundle(tiny_llama_bundle_int8)
    decoder = DecoderRunner.open(bundle)
    prefix = str(bundle.path.resolve()) + os.sep
    maps = _bundle_maps(prefix)
    assert maps and all(rss == 0 for rss in maps.values()), maps
    decoder.prefill([1, 2, 3])
    assert sum(_bundle_maps(prefix).values()) > 0  # the check sees pages that are mapped


def _bundle_maps(prefix: str) -> dict[str, int]:
    """header -> resident kB of this process's maps of files under `prefix`."""
    found, current = {}, None
    for line in open("/proc/self/smaps"):
        fields = line.split(maxsplit=5)
        if "-" in fields[0] and len(fields) >= 5:
            current = line.strip() if len(fields) == 6 and fields[5].strip().startswith(prefix) else None
        elif current and fields[0] == "Rss:":
            found[current] = found.get(current, 0) + int(fields[1])
    return found

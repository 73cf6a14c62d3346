"""`edge serve` as a process and under stress: the CLI wiring, a client that walks away
mid-stream (real SmolLM2, slow), and memory over 200 sequential requests.

Traffic goes to 127.0.0.1 only; every wait is bounded.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

import edge
from edge.server.app import create_app
from server_thread import running

REPO = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("only_loopback")  # conftest: sockets reach loopback only


@pytest.fixture
def served(tiny_llama_bundle_fp32):
    """`edge serve -m BUNDLE --port P` in a child process: (process, base url)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = "import sys; from edge.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    process = subprocess.Popen([sys.executable, "-c", code, "serve", "-m", str(tiny_llama_bundle_fp32),
                                "--port", str(port), "--max-queue", "4"],
                               env=env, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: process.poll() is not None or _health(base) is not None, timeout=120)
        assert process.poll() is None, process.stderr.read()
        yield process, base
    finally:
        process.terminate()
        process.wait(30)


def test_cli_serves_the_bundle(served, tiny_llama_bundle_fp32):
    process, base = served
    name = tiny_llama_bundle_fp32.name
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=60)
    assert [m.id for m in client.models.list()] == [name]
    messages = [{"role": "user", "content": "Hi there"}]
    reply = client.chat.completions.create(model=name, messages=messages, max_tokens=8, temperature=0)
    assert reply.choices[0].message.content == edge.load(tiny_llama_bundle_fp32).chat(messages, max_tokens=8)
    process.terminate()
    process.wait(30)
    err = process.stderr.read()
    assert f"http://127.0.0.1:{base.rsplit(':', 1)[1]}/v1 serving {name}" in err and "warning" not in err
    assert "POST /v1/chat/completions 200 tokens " in err and "Hi there" not in err  # the request log


def test_memory_stays_flat_over_200_requests(served, tiny_llama_bundle_fp32):
    """RSS of the server process after 200 more requests grows by less than 10%."""
    process, base = served
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=60)

    def requests(count: int) -> None:
        for i in range(count):
            messages = [{"role": "user", "content": f"Request {i}: say something."}]
            if i % 2:
                list(client.chat.completions.create(model=tiny_llama_bundle_fp32.name, messages=messages,
                                                    max_tokens=16, stream=True))
            else:
                client.chat.completions.create(model=tiny_llama_bundle_fp32.name, messages=messages, max_tokens=16)

    requests(20)  # warm-up: allocator pools, onnxruntime arenas, first-call caches
    before = _rss_kb(process.pid)
    requests(200)
    after = _rss_kb(process.pid)
    assert after < 1.10 * before, (before, after)


@pytest.mark.slow
def test_clients_leaving_stop_their_generation(smollm2_bundle_int8):
    """Requests that would run for 1500 tokens; one client reads 3 stream events and hangs up,
    another hangs up while waiting for a whole (non-streamed) answer. Each time the worker
    notices between tokens, counts the job as cancelled, and is free again."""
    lm = edge.load(smollm2_bundle_int8)
    body = {"model": "smollm2", "prompt": "1, 2, 3, 4, 5,", "max_tokens": 1500, "temperature": 0}
    with running(create_app({"smollm2": lm})) as base:
        def model() -> dict:
            return _health(base)["models"][0]

        connection = _post(base, "/v1/completions", body | {"stream": True})
        response, events = connection.getresponse(), 0
        while events < 3:
            events += response.fp.readline().startswith(b"data: ")
        _hang_up(connection)
        _wait_for(lambda: model()["cancelled"] == 1 and not model()["busy"], timeout=120)

        connection = _post(base, "/v1/completions", body)
        _wait_for(lambda: model()["busy"], timeout=120)
        _hang_up(connection)
        _wait_for(lambda: model()["cancelled"] == 2 and not model()["busy"], timeout=120)

        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)
        reply = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=6,
                                          temperature=0)
        assert model()["served"] == 1  # only the last request ran to its end
    assert reply.choices[0].text == lm.generate("The capital of France is", raw=True, max_tokens=6)


def _post(base: str, path: str, body: dict) -> http.client.HTTPConnection:
    connection = http.client.HTTPConnection("127.0.0.1", int(base.rsplit(":", 1)[1]), timeout=60)
    connection.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    return connection


def _hang_up(connection: http.client.HTTPConnection) -> None:
    connection.sock.shutdown(socket.SHUT_RDWR)
    connection.close()


def _health(base: str) -> dict | None:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", int(base.rsplit(":", 1)[1]), timeout=10)
        connection.request("GET", "/health")
        return json.loads(connection.getresponse().read())
    except (ConnectionError, OSError):
        return None
    finally:
        connection.close()


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def _wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)

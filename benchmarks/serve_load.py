"""`edge serve` under load (not a test): requests/s and p50/p95 latency of greedy chat
completions at several concurrency levels, then the server's RSS over 200 sequential requests.

The server runs as its own process (`edge serve`, so RSS is its own) on a free port of
127.0.0.1; clients are threads using http.client. Every loop is bounded in count, and the
whole run in time (--time-limit): it stops by itself.

    python benchmarks/serve_load.py                       # the default SmolLM2 int8 bundle
    python benchmarks/serve_load.py --bundle B --requests 16 --max-tokens 32 --json out.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HOST = "127.0.0.1"
QUESTIONS = ["What is the capital of France?", "Name three fruits.", "Why is the sky blue?", "What is 12 times 7?",
             "Give me a word that rhymes with cat.", "What do bees make?", "Describe rain in one line.",
             "What is a haiku?"]


class Server:
    """`edge serve -m BUNDLE` in a child process on a free loopback port."""

    def __init__(self, bundle: str, max_queue: int, deadline: float):
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            self.port = probe.getsockname()[1]
        code = "import sys; from edge.cli import main; sys.exit(main(sys.argv[1:]))"
        self.process = subprocess.Popen([sys.executable, "-c", code, "serve", "-m", bundle, "--host", HOST,
                                         "--port", str(self.port), "--max-queue", str(max_queue)])
        while not self._healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit("the server did not start")
            time.sleep(0.2)
        self.model = self.request("GET", "/v1/models")[1]["data"][0]["id"]

    def _healthy(self) -> bool:
        try:
            return self.request("GET", "/health")[0] == 200
        except OSError:
            return False

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        connection = http.client.HTTPConnection(HOST, self.port, timeout=600)
        try:
            connection.request(method, path, body=json.dumps(body) if body else None,
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()

    def chat(self, question: str, max_tokens: int) -> float:
        """Seconds for one greedy chat completion."""
        started = time.perf_counter()
        status, reply = self.request("POST", "/v1/chat/completions", {
            "model": self.model, "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens,
            "temperature": 0})
        if status != 200:
            raise SystemExit(f"request failed with {status}: {reply}")
        return time.perf_counter() - started

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) / 1024

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def load(server: Server, concurrency: int, requests: int, max_tokens: int) -> dict:
    """`requests` chat completions from `concurrency` threads at once."""
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(requests)]
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = sorted(pool.map(lambda q: server.chat(q, max_tokens), questions))
    wall = time.perf_counter() - started
    return {"concurrency": concurrency, "requests": requests, "requests_per_s": requests / wall,
            "p50_s": statistics.median(latencies), "p95_s": latencies[min(len(latencies) - 1,
                                                                            round(0.95 * (len(latencies) - 1)))]}


def rss_over(server: Server, count: int, max_tokens: int) -> dict:
    """Server RSS after a warm-up of 20 requests and after `count` more, one at a time."""
    for i in range(20):
        server.chat(QUESTIONS[i % len(QUESTIONS)], max_tokens)
    before = server.rss_mb()
    for i in range(count):
        server.chat(QUESTIONS[i % len(QUESTIONS)], max_tokens)
    after = server.rss_mb()
    return {"requests": count, "rss_before_mb": before, "rss_after_mb": after, "growth": after / before - 1}


def default_bundle() -> str:
    from export.default import ensure_default_bundle

    return str(ensure_default_bundle())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="bundle folder (default: the SmolLM2 int8 default bundle)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--requests", type=int, default=16, help="requests per concurrency level")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rss-requests", type=int, default=200)
    parser.add_argument("--rss-max-tokens", type=int, default=8)
    parser.add_argument("--time-limit", type=float, default=1800, help="seconds; the run stops past it")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    deadline = time.monotonic() + args.time_limit
    bundle = args.bundle or default_bundle()
    server = Server(bundle, max_queue=max(args.concurrency), deadline=deadline)
    results = {"bundle": bundle, "max_tokens": args.max_tokens, "cpus": os.cpu_count(), "load": []}
    try:
        server.chat(QUESTIONS[0], args.max_tokens)  # warm-up
        for concurrency in args.concurrency:
            if time.monotonic() > deadline:
                break
            results["load"].append(load(server, concurrency, args.requests, args.max_tokens))
            print(f"concurrency {concurrency}: done", file=sys.stderr, flush=True)
        if args.rss_requests and time.monotonic() < deadline:
            results["rss"] = rss_over(server, args.rss_requests, args.rss_max_tokens)
    finally:
        server.stop()
    print(f"{Path(bundle).name}, greedy chat, max_tokens {args.max_tokens}, {args.requests} requests per level")
    print("| concurrency | requests/s | p50 latency (s) | p95 latency (s) |\n|---|---|---|---|")
    for row in results["load"]:
        print(f"| {row['concurrency']} | {row['requests_per_s']:.2f} | {row['p50_s']:.2f} | {row['p95_s']:.2f} |")
    if "rss" in results:
        r = results["rss"]
        print(f"RSS over {r['requests']} sequential requests (max_tokens {args.rss_max_tokens}): "
              f"{r['rss_before_mb']:.1f} MB -> {r['rss_after_mb']:.1f} MB ({r['growth']:+.1%})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

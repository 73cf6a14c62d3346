"""`edge serve --parallel N` against llama.cpp's llama-server (-np N) under load (not a test).

Each server runs as its own process on a free port of 127.0.0.1 (loopback only). Clients
are threads using the real `openai` client, streaming chat completions: ~100-token prompts
(half of them behind one shared system prompt) and 128 new tokens each (`ignore_eos`: the
same work for both servers, wherever the model would stop). At each concurrency
level: aggregate generated tokens/s, requests/s, p50/p95 time to first token, p50/p95
time between tokens, and the server's peak RSS (VmHWM). Servers alternate level by level,
so a slow patch of the shared machine hits both. Every loop is bounded; --time-limit too.

    python benchmarks/serve_load.py --parallel 8 --out /tmp/serve_load_run.md
    python benchmarks/serve_load.py --concurrency 1 4 --requests-per-client 1   # a short run
    python benchmarks/serve_load.py --servers edge --concurrency 1 8   # edge alone
"""

from __future__ import annotations

import argparse
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
HERE = Path(__file__).resolve().parent
LLAMA_BIN = Path("/work/.peers-src/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin")  # see README.md
SYSTEM = ("You are a patient teacher. Answer in full sentences, explain each step, give one example, and end "
          "with a short summary. Avoid lists unless asked; prefer plain words to jargon.")
TOPICS = ["why the sky is blue", "how bees make honey", "how a bicycle stays upright", "why bread rises",
          "how rain forms", "what a compiler does", "how tides work", "why leaves change colour",
          "how a refrigerator keeps food cold", "what makes a good essay", "how vaccines train the body",
          "why the moon has phases", "how a lighthouse warns ships", "how glass is made", "what causes thunder",
          "how a seed becomes a tree"]


def question(i: int) -> list[dict]:
    """~100 tokens: even requests share the system prompt (prompt reuse), odd ones carry their own."""
    ask = (f"Please explain {TOPICS[i % len(TOPICS)]} to a curious twelve-year-old who likes science, in "
           f"enough detail that they could explain it to a friend afterwards. Request {i}.")
    if i % 2 == 0:
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": ask}]
    return [{"role": "user", "content": f"{ask} Use simple words, one example, and a closing summary. "
                                        f"Take your time and be thorough in every part of the answer."}]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class Server:
    def __init__(self, name: str, command: list[str], cwd: Path | None, port: int, deadline: float):
        import openai

        self.name, self.port = name, port
        self.process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = openai.OpenAI(base_url=f"http://{HOST}:{port}/v1", api_key="unused", max_retries=0,
                                    timeout=600)
        while True:
            try:
                self.model = self.client.models.list().data[0].id
                break
            except Exception:  # not listening yet (or llama-server still loading: 503)
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit(f"{name} did not start")
                time.sleep(0.3)

    def chat(self, messages: list[dict], max_tokens: int) -> dict:
        """One streamed greedy completion of exactly `max_tokens` (`ignore_eos`, which both
        servers accept, so a reply's length does not hang on where the model says EOS):
        arrival time of each piece of text."""
        started = time.perf_counter()
        stream = self.client.chat.completions.create(model=self.model, messages=messages, max_tokens=max_tokens,
                                                     temperature=0, stream=True,
                                                     stream_options={"include_usage": True},
                                                     extra_body={"ignore_eos": True})
        arrivals, tokens = [], None
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.perf_counter())
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
        return {"start": started, "arrivals": arrivals, "tokens": tokens if tokens is not None else len(arrivals)}

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def edge_server(args, deadline: float) -> Server:
    port = free_port()
    code = "import sys; from edge.cli import main; sys.exit(main(sys.argv[1:]))"
    command = [sys.executable, "-c", code, "serve", "-m", args.bundle, "--host", HOST, "--port", str(port),
               "--parallel", str(args.parallel), "--kv-tokens", str(args.parallel * args.ctx_per_slot),
               "--max-queue", "64"]
    return Server("edge", command, None, port, deadline)


def llama_server(args, deadline: float) -> Server:
    sys.path.insert(0, str(HERE))
    from compare import PEERS, ensure_model
    from export.fetch import SMOLLM2, fetch

    gguf = ensure_model(args, next(p for p in PEERS if p.kind == "q8_0"), fetch(SMOLLM2))
    port = free_port()
    command = ["./llama-server", "-m", str(gguf), "--host", HOST, "--port", str(port), "-np", str(args.parallel),
               "-c", str(args.parallel * args.ctx_per_slot), "-t", str(args.threads), "--no-webui"]
    return Server("llama-server", command, args.llama_bin, port, deadline)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def load(server: Server, concurrency: int, requests: int, max_tokens: int, offset: int) -> dict:
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        runs = list(pool.map(lambda i: server.chat(question(offset + i), max_tokens), range(requests)))
    wall = time.perf_counter() - started
    ttft = [r["arrivals"][0] - r["start"] for r in runs if r["arrivals"]]
    gaps = [b - a for r in runs for a, b in zip(r["arrivals"], r["arrivals"][1:])]
    return {"server": server.name, "concurrency": concurrency, "requests": requests, "wall_s": wall,
            "tok_s": sum(r["tokens"] for r in runs) / wall, "req_s": requests / wall,
            "ttft_p50": percentile(ttft, 0.5), "ttft_p95": percentile(ttft, 0.95),
            "tbt_p50": percentile(gaps, 0.5), "tbt_p95": percentile(gaps, 0.95), "peak_rss_mb": server.peak_rss_mb()}


def report(rows: list[dict], args) -> str:
    lines = [f"serve_load: {Path(args.bundle).name} vs llama-server Q8_0, slots {args.parallel} "
             f"({args.ctx_per_slot} tokens each), {args.threads} threads, {args.max_tokens} new tokens, "
             f"{args.requests_per_client} requests per client, {os.cpu_count()} CPUs", "",
             "| server | clients | tok/s | req/s | TTFT p50 (s) | TTFT p95 (s) | TBT p50 (ms) | TBT p95 (ms) | peak RSS (MB) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['server']} | {r['concurrency']} | {r['tok_s']:.1f} | {r['req_s']:.2f} | {r['ttft_p50']:.2f} "
                     f"| {r['ttft_p95']:.2f} | {1000 * r['tbt_p50']:.1f} | {1000 * r['tbt_p95']:.1f} "
                     f"| {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=str(Path.home() / ".cache/edge/bundles/smollm2-135m-instruct-int8"))
    parser.add_argument("--parallel", type=int, default=8, help="edge --parallel and llama-server -np")
    parser.add_argument("--ctx-per-slot", type=int, default=1024, help="KV tokens per slot (edge --kv-tokens "
                        "is parallel x this; llama-server -c the same)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="client counts, "
                        "one level each")
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens of every reply (sent with ignore_eos)")
    parser.add_argument("--servers", nargs="+", default=["edge", "llama-server"], choices=["edge", "llama-server"])
    parser.add_argument("--llama-bin", type=Path, default=LLAMA_BIN)
    parser.add_argument("--peers-venv", type=Path, default=Path.home() / ".cache/edge/peers-venv")
    parser.add_argument("--optimum-venv", type=Path, default=Path.home() / ".cache/edge/optimum-venv")
    parser.add_argument("--time-limit", type=float, default=1800)
    parser.add_argument("--out", type=Path, help="write the markdown table here")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    deadline = time.monotonic() + args.time_limit
    makers = {"edge": edge_server, "llama-server": llama_server}
    servers = {name: makers[name](args, deadline) for name in args.servers}
    rows = []
    try:
        for name, server in servers.items():  # warm-up
            server.chat(question(0), 16)
        for concurrency in args.concurrency:
            for name, server in servers.items():  # alternating, level by level
                if time.monotonic() > deadline:
                    break
                rows.append(load(server, concurrency, concurrency * args.requests_per_client, args.max_tokens,
                                 offset=concurrency))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    finally:
        for server in servers.values():
            server.stop()
    text = report(rows, args)
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

"""edge side by side with the other CPU runtimes on the same model and the same token ids.

Every measurement runs in a fresh child process (its own load time and peak RSS); the
runtimes alternate within each round so drift on a shared machine hits them alike, and
the table shows medians over --runs with each figure's ratio to edge's (the first bundle).

    python benchmarks/compare.py --peers-venv /work/.peers --runs 3 --json compare.json
    python benchmarks/compare.py --quality ...     # also perplexity and top-1 vs fp32

edge runs edge.tools.bench.run in this interpreter's venv. The peers (llama.cpp through
llama-cpp-python, onnxruntime-genai, transformers; optimum in its own venv, as it pins an
older transformers) run benchmarks/peers.py in theirs. Their models are built once from
the same SmolLM2 GGUF under ~/.cache/edge/peers (benchmarks/peer_models.py). A runtime
whose venv or package is missing is listed as skipped, with why.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
COLUMNS = {  # figure -> column title; ratios are edge / peer for every one
    "size_mb": "MB", "start_to_ready_s": "load s", "ttft_s": "TTFT s", "prefill_tok_s_short": "prefill tok/s short",
    "prefill_tok_s_long": "prefill tok/s long", "decode_tok_s": "decode tok/s",
    "decode_tok_s_long_context": "decode tok/s @ctx", "peak_rss_mb": "peak RSS MB",
}


@dataclass(frozen=True)
class Peer:
    name: str  # row label
    runtime: str  # peers.py RUNTIMES key
    package: str  # what must import in the venv
    model: str  # file/folder name under the peers cache
    kind: str  # peer_models.py KIND that builds it
    venv: str  # "peers" or "optimum"


PEERS = (
    Peer("llama.cpp Q8_0", "llama.cpp", "llama_cpp", "smollm2-q8_0.gguf", "q8_0", "peers"),
    Peer("onnxruntime-genai int8", "genai", "onnxruntime_genai", "genai-int8", "genai-int8", "peers"),
    Peer("onnxruntime-genai int4", "genai", "onnxruntime_genai", "genai-int4", "genai-int4", "peers"),
    Peer("transformers fp32", "transformers", "transformers", "hf", "hf", "peers"),
    Peer("optimum fp32", "optimum", "optimum.onnxruntime", "optimum-fp32", "optimum", "optimum"),
)


def peers_dir() -> Path:
    from edge.paths import cache_dir

    return cache_dir() / "peers"


def venv_python(args, peer: Peer) -> Path:
    return (args.optimum_venv if peer.venv == "optimum" else args.peers_venv) / "bin" / "python"


def missing(args, peer: Peer) -> str | None:
    """Why a peer cannot run here, or None."""
    python = venv_python(args, peer)
    if not python.exists():
        return f"not installed (no venv at {python.parent.parent}; see benchmarks/README.md)"
    probe = subprocess.run([str(python), "-c", f"import {peer.package}"], capture_output=True, text=True)
    return f"not installed ({peer.package} does not import in {python.parent.parent})" if probe.returncode else None


def ensure_model(args, peer: Peer, gguf: Path) -> Path:
    """The peer's model, built once (with the hf folder first when it needs one)."""
    out = peers_dir() / peer.model
    if out.exists():
        return out
    if peer.kind not in ("hf", "q8_0"):
        ensure_model(args, Peer("hf", "", "", "hf", "hf", "peers"), gguf)
    print(f"building {out} for {peer.name} (once) ...", file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(venv_python(args, peer)), str(HERE / "peer_models.py"), peer.kind, str(gguf), str(out)],
                   check=True)
    return out


def run_edge(bundle: str, threads: int, ids_file: Path, quality: bool) -> dict:
    code = ("import sys, json, time; started = time.perf_counter(); "
            f"sys.path.insert(0, {str(HERE)!r}); from peers import run_edge; "
            f"print(json.dumps(run_edge({bundle!r}, {threads}, started, {str(ids_file)!r}, {quality})))")
    return _child([sys.executable, "-c", code])


def run_peer(args, peer: Peer, model: Path, ids_file: Path, quality: bool) -> dict:
    command = [str(venv_python(args, peer)), str(HERE / "peers.py"), peer.runtime, str(model), str(ids_file),
               str(args.threads)]
    return _child(command + (["--quality"] if quality else []))


def _child(command: list[str]) -> dict:
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode:
        tail = out.stderr.strip().splitlines()[-3:]
        raise RuntimeError(f"{shlex.join(command[:3])} failed: " + " | ".join(tail))
    return json.loads(out.stdout.strip().splitlines()[-1])


def size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    return sum(f.stat().st_size for f in files) / 1e6


def prompts(bundle: str) -> dict[str, list[int]]:
    import edge
    from edge.tools.bench import prompts as bench_prompts

    return bench_prompts(edge.load(bundle))


def quality_windows(bundle: str) -> list[list[int]]:
    """The exporter's held-out text in the windows export.quality scores (one shared token)."""
    import edge
    from edge.generation.model import PERPLEXITY_WINDOW
    from export.quality import MAX_TOKENS, heldout_text

    ids = edge.load(bundle).encode_text(heldout_text())[:MAX_TOKENS]
    return [ids[s : s + PERPLEXITY_WINDOW + 1] for s in range(0, len(ids) - 1, PERPLEXITY_WINDOW)]


def main() -> None:
    args = parse_args()
    bundles = args.bundle or [str(default_bundle())]
    from export.fetch import SMOLLM2, fetch

    gguf = fetch(SMOLLM2)
    rows: dict[str, tuple] = {f"edge {Path(b).name}": ("edge", b, Path(b)) for b in bundles}
    skipped: dict[str, str] = {}
    for peer in PEERS:
        if args.only and peer.name not in args.only:
            continue
        reason = missing(args, peer)
        if reason:
            skipped[peer.name] = reason
            continue
        rows[peer.name] = (peer, None, ensure_model(args, peer, gguf))
    with tempfile.TemporaryDirectory() as tmp:
        ids_file = Path(tmp) / "ids.json"
        ids_file.write_text(json.dumps(prompts(bundles[0])))
        runs = measure(args, rows, ids_file, skipped, quality=False)
        table = {name: medians(r) | {"size_mb": size_mb(rows[name][2])} for name, r in runs.items()}
        scores = None
        if args.quality:
            ids_file.write_text(json.dumps({"windows": quality_windows(bundles[0])}))
            scores = measure(args, rows, ids_file, skipped, quality=True, rounds=1)
    report(args, table, runs, skipped, scores)


def measure(args, rows: dict, ids_file: Path, skipped: dict, quality: bool, rounds: int | None = None) -> dict:
    """name -> list of figure dicts; a runtime that fails is moved to `skipped`."""
    runs: dict[str, list[dict]] = {name: [] for name in rows}
    for round_ in range(rounds or args.runs):
        for name, (peer, bundle, model) in rows.items():  # alternate, so drift hits every runtime alike
            if name in skipped:
                continue
            print(f"round {round_ + 1}: {name}{' (quality)' if quality else ''}", file=sys.stderr)
            try:
                result = (run_edge(bundle, args.threads, ids_file, quality) if peer == "edge"
                          else run_peer(args, peer, model, ids_file, quality))
            except RuntimeError as exc:
                skipped[name] = f"failed: {exc}"
                continue
            runs[name].append(result)
    return {name: r for name, r in runs.items() if r and name not in skipped}


def medians(runs: list[dict]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def report(args, table: dict, runs: dict, skipped: dict, scores: dict | None) -> None:
    edge_name = next(iter(table))
    edge = table[edge_name]
    first = next(iter(table.values()))
    print(f"\n{args.runs} alternating runs (medians), {args.threads} threads; prompts: short {first['short_prompt']} "
          f"tokens (chat), long {first['long_prompt']}, decode {128} greedy tokens; @ctx = after "
          f"{first['long_context']} tokens\n")
    print("| runtime | " + " | ".join(COLUMNS.values()) + " | @ctx / short |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for name, row in table.items():
        cells = [f"{row[c]:.3g}" for c in COLUMNS] + [f"{row['decode_tok_s_long_context'] / row['decode_tok_s']:.2f}"]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\nratio {edge_name} / runtime (tok/s: >1 means edge is faster; s and MB: <1 means edge is lower)\n")
    print("| runtime | " + " | ".join(COLUMNS.values()) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for name, row in table.items():
        if name != edge_name:
            print(f"| {name} | " + " | ".join(f"{edge[c] / row[c]:.2f}" for c in COLUMNS) + " |")
    quality = quality_table(scores) if scores else {}
    for name, (ppl, agree) in quality.items():
        print(f"quality {name}: perplexity {ppl:.2f}, top-1 agreement with transformers fp32 {agree:.1%}")
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    if args.json:
        command = shlex.join([Path(sys.executable).name, *sys.argv])
        args.json.write_text(json.dumps({"command": command, "runs": args.runs, "threads": args.threads,
                                         "medians": table, "each_run": runs, "quality": quality,
                                         "skipped": skipped}, indent=2))


def quality_table(scores: dict) -> dict[str, tuple[float, float]]:
    """name -> (perplexity, top-1 agreement with the transformers fp32 reference)."""
    import math

    reference = scores.get("transformers fp32")
    out = {}
    for name, (result,) in scores.items():
        agree = float("nan") if reference is None else statistics.fmean(
            a == b for a, b in zip(result["argmax"], reference[0]["argmax"]))
        out[name] = (math.exp(result["mean_nll"]), agree)
    return out


def default_bundle() -> Path:
    from export.default import ensure_default_bundle

    return ensure_default_bundle()


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", action="append", help="edge bundle (repeat; the first is the reference)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peers-venv", type=Path, default=Path.home() / ".cache/edge/peers/venv")
    parser.add_argument("--optimum-venv", type=Path, default=Path.home() / ".cache/edge/peers/venv-optimum")
    parser.add_argument("--only", action="append", help="run only these peers (by row name)")
    parser.add_argument("--quality", action="store_true", help="also perplexity and top-1 agreement (one run)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args()


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"\n({time.perf_counter() - started:.0f} s)", file=sys.stderr)

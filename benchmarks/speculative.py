"""Speculative decoding side by side: edge's prompt-lookup drafts against llama.cpp's and
onnxruntime-genai's, on a shipped task suite (benchmarks/data/speculative_tasks.json).

    python benchmarks/speculative.py --rounds 3 --peers-venv /work/.peers [--json out.json]
    python benchmarks/speculative.py --agreement   # greedy ids with vs without drafts, flips and their gaps
    python benchmarks/speculative.py --costs       # one decoder call with n = 1..9 new tokens, relative to n = 1
    python benchmarks/speculative.py --profile     # Python time outside onnxruntime during drafted generation
    python benchmarks/speculative.py --bound       # the most clairvoyant copy-from-context drafts could gain on this CPU

The suite: grounded tasks whose answer copies from the prompt (summarise, extract fields,
answer questions about a passage, edit code, continue a chat that quotes earlier turns) and
open-ended ones (a story, small talk). Every task is a chat rendered by edge's SmolLM2
template; every runtime gets the same prompt ids and makes exactly max_tokens greedy
tokens, EOS masked. Each runtime runs the whole suite in a fresh child process
(speculative_runtimes.py, in the runtime's own venv), after an untimed warm-up; the
runtimes alternate within each round (the order rotated every round) and the table shows
per-task medians over rounds. Peer models come from compare.py (built once, on demand).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import compare  # noqa: E402  (the peers' venvs and models)

from edge.generation.generate import common_prefix  # noqa: E402

TASKS = HERE / "data" / "speculative_tasks.json"
DEFAULT_BUNDLE = Path.home() / ".cache/edge/bundles/smollm2-135m-instruct-int8"


@dataclass(frozen=True)
class Row:
    label: str
    runtime: str  # speculative_runtimes.RUNTIMES key
    peer: compare.Peer | None  # None: edge, in this interpreter's venv


LLAMA, GENAI = compare.PEERS[0], compare.PEERS[1]  # llama.cpp Q8_0, onnxruntime-genai int8
ROWS = (
    Row("edge int8 lookup", "edge-lookup", None),
    Row("edge int8 none", "edge-none", None),
    Row("llama.cpp Q8_0", "llama.cpp", LLAMA),
    Row("llama.cpp Q8_0 generate", "llama.cpp-generate", LLAMA),
    Row("llama.cpp Q8_0 PLD 2", "llama.cpp-pld2", LLAMA),
    Row("llama.cpp Q8_0 PLD 10", "llama.cpp-pld10", LLAMA),
    Row("genai int8", "genai", GENAI),
    Row("genai int8 ngram adaptive", "genai-ngram", GENAI),
    Row("genai int8 ngram K4", "genai-ngram-k4", GENAI),
)
REFERENCE = "edge int8 none"  # the ids every runtime's output is compared with


def load_suite(model, path: Path = TASKS, max_tokens: int | None = None) -> dict:
    """The tasks with their prompt ids (edge's chat template), as the children read them."""
    suite = json.loads(path.read_text())
    tasks = [{"name": t["name"], "kind": t["kind"], "group": t["group"], "ids": model.encode_chat(t["messages"]),
              "max_tokens": max_tokens or t.get("max_tokens", suite["max_tokens"])} for t in suite["tasks"]]
    return {"tasks": tasks, "warmup": tasks[0]["ids"], "eos": list(model.manifest.tokenizer.eos_token_ids)}


def machine() -> str:
    """CPU model, VNNI, and the load right now (the machine is shared)."""
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "?")
    vnni = "yes" if "avx512_vnni" in lscpu else "no"
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return f"{model}, {os.cpu_count()} cores, avx512_vnni {vnni}, load average {load}"


def child(args, row: Row, model: Path, ids_file: Path) -> dict:
    python = sys.executable if row.peer is None else str(compare.venv_python(args, row.peer))
    command = [python, str(HERE / "speculative_runtimes.py"), row.runtime, str(model), str(ids_file), str(args.threads)]
    env = os.environ | {"PYTHONPATH": str(HERE.parent)} if row.peer is None else None
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    if out.returncode:
        tail = out.stderr.strip().splitlines()[-3:]
        raise RuntimeError(f"{shlex.join(command[:3])} failed: " + " | ".join(tail))
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(args, rows: dict[str, tuple[Row, Path]], ids_file: Path, skipped: dict,
            after_child=None) -> dict[str, list[dict]]:
    """label -> one {task: result} per round; a runtime that fails is moved to `skipped`.
    `after_child(runs so far)` is called after every child (a long run's checkpoint)."""
    runs: dict[str, list[dict]] = {label: [] for label in rows}
    labels = list(rows)
    for round_ in range(args.rounds):
        order = labels[round_ % len(labels):] + labels[: round_ % len(labels)]  # rotated: no fixed neighbour
        for label in order:
            if label in skipped:
                continue
            print(f"round {round_ + 1}: {label}", file=sys.stderr, flush=True)
            try:
                runs[label].append(child(args, *rows[label], ids_file))
            except RuntimeError as exc:
                skipped[label] = f"failed: {exc}"
            if after_child:
                after_child({label: r for label, r in runs.items() if r and label not in skipped})
    return {label: r for label, r in runs.items() if r and label not in skipped}


def figures(results: list[dict], task: dict) -> dict:
    """One task's medians over rounds (speeds) and totals (drafts, which barely vary)."""
    decode = [(task["max_tokens"] - 1) / r["decode_s"] for r in results]
    out = {"decode_tok_s": statistics.median(decode), "last_s": statistics.median(r["last_s"] for r in results),
           "each_decode_tok_s": decode}
    first = results[0]
    for key in ("calls", "drafted", "accepted"):
        out[key] = None if first[key] is None else sum(r[key] for r in results)
    out["rounds"] = len(results)
    return out


def summarise(runs: dict[str, list[dict]], suite: dict) -> dict[str, dict[str, dict]]:
    """label -> task -> figures, plus each task's common-prefix share with the reference ids."""
    table = {label: {t["name"]: figures([r[t["name"]] for r in rounds], t) for t in suite["tasks"]}
             for label, rounds in runs.items()}
    reference = runs.get(REFERENCE)
    for label, rounds in runs.items():
        for t in suite["tasks"]:
            ids = rounds[0][t["name"]]["ids"]
            same = None if reference is None else common_prefix(ids, reference[0][t["name"]]["ids"]) / len(ids)
            table[label][t["name"]]["same_prefix"] = same
    return table


def group_means(rows: dict[str, dict], suite: dict, group: str) -> dict:
    names = [t["name"] for t in suite["tasks"] if t["group"] == group]
    cells = [rows[n] for n in names]
    out = {"decode_tok_s": statistics.fmean(c["decode_tok_s"] for c in cells),
           "last_s": statistics.fmean(c["last_s"] for c in cells)}
    out |= {k: (None if cells[0][k] is None else sum(c[k] for c in cells)) for k in ("calls", "drafted", "accepted")}
    out["same_prefix"] = None if cells[0]["same_prefix"] is None else statistics.fmean(c["same_prefix"] for c in cells)
    return out


def rates(cell: dict) -> tuple[str, str]:
    """(acceptance rate, accepted drafts per decoder call) as table cells."""
    if cell["drafted"] is None:
        return "n/a", "n/a"
    acceptance = f"{cell['accepted'] / cell['drafted']:.0%}" if cell["drafted"] else "-"
    return acceptance, f"{cell['accepted'] / cell['calls']:.2f}"


def print_table(args, table: dict, suite: dict, skipped: dict, header: str, rounds: int | None = None) -> None:
    groups = sorted({t["group"] for t in suite["tasks"]}, key=lambda g: g != "grounded")
    print(f"\n### {header}\n")
    print(f"{rounds or args.rounds} alternating rounds (per-task medians), {args.threads} threads, greedy, "
          f"{suite['tasks'][0]['max_tokens']} new tokens per task (EOS masked), same prompt ids for all.\n")
    print("| runtime | group | decode tok/s | time to last s | acceptance | accepted/call | same ids as edge none |")
    print("|---|---|---|---|---|---|---|")
    means = {label: {g: group_means(rows, suite, g) for g in groups} for label, rows in table.items()}
    for label in table:
        for g in groups:
            m = means[label][g]
            same = "-" if m["same_prefix"] is None else f"{m['same_prefix']:.0%}"
            print(f"| {label} | {g} | {m['decode_tok_s']:.1f} | {m['last_s']:.2f} | {' | '.join(rates(m))} | {same} |")
    for g in groups:
        print(f"\nratio edge int8 lookup / runtime, decode tok/s, {g} mean: " + ", ".join(
            f"{label} {means['edge int8 lookup'][g]['decode_tok_s'] / means[label][g]['decode_tok_s']:.2f}"
            for label in table if label != "edge int8 lookup") if "edge int8 lookup" in means else "")
    print("\nper task: decode tok/s (acceptance, accepted/call)\n")
    print("| task | group | " + " | ".join(table) + " |")
    print("|---" * (len(table) + 2) + "|")
    for t in suite["tasks"]:
        cells = []
        for label in table:
            c = table[label][t["name"]]
            acceptance, per_call = rates(c)
            cells.append(f"{c['decode_tok_s']:.0f}" + ("" if c["drafted"] is None else f" ({acceptance}, {per_call})"))
        print(f"| {t['name']} | {t['group']} | " + " | ".join(cells) + " |")
    for label, reason in skipped.items():
        print(f"\nskipped {label}: {reason}")


def run_side_by_side(args) -> None:
    import edge

    header = f"{machine()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    suite = load_suite(edge.load(args.bundle), args.tasks, args.max_tokens)
    gguf = None
    rows, skipped = {}, {}
    for row in ROWS:
        if args.only and row.label not in args.only:
            continue
        if row.peer is None:
            rows[row.label] = (row, args.bundle)
            continue
        reason = compare.missing(args, row.peer)
        if reason:
            skipped[row.label] = reason
            continue
        if gguf is None:
            from export.fetch import SMOLLM2, fetch

            gguf = fetch(SMOLLM2)
        rows[row.label] = (row, compare.ensure_model(args, row.peer, gguf))
    with tempfile.TemporaryDirectory() as tmp:
        ids_file = Path(tmp) / "suite.json"
        ids_file.write_text(json.dumps(suite))
        checkpoint = args.json.with_suffix(".partial.json") if args.json else Path(tmp) / "partial.json"
        save = (lambda runs: checkpoint.write_text(json.dumps({"machine": header, "suite": suite, "runs": runs,
                                                               "skipped": skipped})))
        runs = measure(args, rows, ids_file, skipped, save)
    table = summarise(runs, suite)
    print_table(args, table, suite, skipped, header + f"; after the run: load average "
                + " ".join(Path("/proc/loadavg").read_text().split()[:3]))
    if args.json:
        command = shlex.join([Path(sys.executable).name, *sys.argv])
        args.json.write_text(json.dumps({"command": command, "machine": header, "rounds": args.rounds,
                                         "table": table, "skipped": skipped, "each_round": runs}, indent=1))


def report_saved(args) -> None:
    """The table from a checkpoint a cut-short run left (--json X writes X.partial.json)."""
    saved = json.loads(args.report.read_text())
    rounds = min(len(r) for r in saved["runs"].values())
    runs = {label: r[:rounds] for label, r in saved["runs"].items()}  # complete rounds only: one load for all
    print_table(args, summarise(runs, saved["suite"]), saved["suite"], saved["skipped"],
                saved["machine"] + f" (cut short: the first {rounds} complete round(s))", rounds=rounds)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--tasks", type=Path, default=TASKS)
    parser.add_argument("--max-tokens", type=int, help="override every task's new tokens")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peers-venv", type=Path, default=Path.home() / ".cache/edge/peers/venv")
    parser.add_argument("--optimum-venv", type=Path, default=Path.home() / ".cache/edge/peers/venv-optimum")
    parser.add_argument("--only", action="append", help="run only these rows (by label; repeat)")
    parser.add_argument("--json", type=Path, help="also write every figure here (and a checkpoint as it goes)")
    parser.add_argument("--report", type=Path, help="print the table from a checkpoint (X.partial.json) and stop")
    parser.add_argument("--agreement", action="store_true", help="greedy ids with vs without drafts, and the flips")
    parser.add_argument("--costs", action="store_true", help="decoder call cost by new tokens, relative to one")
    parser.add_argument("--profile", action="store_true", help="Python share of drafted generation")
    parser.add_argument("--bound", action="store_true", help="the most copy-from-context drafts could gain here")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.report:
        report_saved(args)
        return
    if args.agreement or args.costs or args.profile or args.bound:
        import speculative_checks

        for wanted, check in ((args.agreement, speculative_checks.agreement), (args.costs, speculative_checks.costs),
                              (args.profile, speculative_checks.profile), (args.bound, speculative_checks.bound)):
            if wanted:
                check(args)
        return
    run_side_by_side(args)


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"\n({time.perf_counter() - started:.0f} s)", file=sys.stderr)

"""Structured output side by side: JSON extraction under a schema, edge against llama.cpp and
onnxruntime-genai with their own grammar engines, on the same token ids.

    python benchmarks/structured.py --peers-venv /work/.peers --rounds 3 [--json structured.json]

The suite is benchmarks/data/structured_tasks.json: short passages, each with the schema of
the fields to extract. The prompt (the passage, the schema, and a request for JSON) goes
through SmolLM2's chat template once, in edge; every runtime gets those ids. Greedy, at most
256 new tokens, EOS ends a reply. Rows:

- edge constrained: `json_schema` with the default prompt-lookup drafts, and with
  draft="none" (forced tokens only), and edge unconstrained (the same prompt) for reference;
- llama.cpp Q8_0 through llama-cpp-python: `create_completion` on the ids with
  `LlamaGrammar.from_json_schema` (its GBNF converter);
- onnxruntime-genai int8: `GeneratorParams.set_guidance("json_schema", ...)` (llguidance,
  with its forced tokens on: `enable_ff_tokens=True`), when the installed wheel has it.

Every runtime runs the whole suite in a fresh child process (after one untimed warm-up
reply), the runtimes alternating within each round. Per reply: time to the last token from
the call (grammar compile and prefill included), decode tokens/s (tokens after the first
over the time after the first; EOS counts as a token), and whether the text parses and
validates with `jsonschema` (checked here, in edge's venv, for every runtime alike). edge's
children also time each `Matcher.mask` call and each one-token `decode_step`: the mask's
share of a decode step. The figures are medians over the rounds.

A child is this file with --child; the peers' children run in the peers' venv, so the top
of this file imports only the standard library.
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
TASKS = HERE / "data" / "structured_tasks.json"
MAX_TOKENS = 256
EDGE_ROWS = {"edge int8 json (drafts)": "lookup", "edge int8 json (forced only)": "none", "edge int8 free": "free"}
PEER_ROWS = {"llama.cpp Q8_0 json (GBNF)": "llama.cpp Q8_0",  # row -> compare.PEERS name
             "onnxruntime-genai int8 json (guidance)": "onnxruntime-genai int8"}
WARM_UP = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def prompt_text(task: dict) -> str:
    return ("Extract the fields described by this JSON schema from the passage, and reply with one JSON "
            f"object only.\n\nSchema: {json.dumps(task['schema'])}\n\nPassage: {task['passage']}")


# --- children: one runtime, the whole suite -----------------------------------------------

def child_edge(bundle: str, threads: int, tasks: list[dict], mode: str) -> dict:
    """edge's replies; constrained modes also time Matcher.mask and one-token decode steps."""
    import edge
    from edge.engine.decoder_runner import DecoderRunner
    from edge.generation.constraints import Matcher

    spent = {"mask": [0.0, 0], "step": [0.0, 0]}
    Matcher.mask = _timed(Matcher.mask, spent["mask"])
    DecoderRunner.decode_step = _timed(DecoderRunner.decode_step, spent["step"])
    model = edge.load(bundle, threads=threads)

    def reply(ids: list[int], schema: dict | None, max_tokens: int = MAX_TOKENS) -> dict:
        start, stamps, text = time.perf_counter(), [], []
        schema = None if mode == "free" else schema
        for chunk in model.stream_ids(ids, max_tokens=max_tokens, temperature=0.0, json_schema=schema,
                                      draft="none" if mode == "none" else "lookup"):
            stamps.append(time.perf_counter())
            text.append(chunk.text)
        t = chunk.timings
        return _reply(start, stamps, "".join(text), chunk.finish_reason,
                      accepted=t.accepted_tokens, calls=t.decode_calls)

    reply(tasks[0]["ids"], WARM_UP, 8)
    for figures in spent.values():
        figures[:] = [0.0, 0]
    replies = [reply(t["ids"], t["schema"]) for t in tasks]
    return {"replies": replies, "mask_s": spent["mask"][0], "mask_calls": spent["mask"][1],
            "step_s": spent["step"][0], "step_calls": spent["step"][1]}


def _timed(method, total: list):
    def timed(*args):
        start = time.perf_counter()
        result = method(*args)
        total[0] += time.perf_counter() - start
        total[1] += 1
        return result

    return timed


def child_llama(model_path: str, threads: int, tasks: list[dict]) -> dict:
    """llama-cpp-python's completion API with its JSON-schema grammar; a stopping criterion
    (called after every sampled token, EOS included) stamps the tokens."""
    from llama_cpp import Llama, LlamaGrammar, StoppingCriteriaList

    llm = Llama(model_path, n_ctx=2048, n_batch=512, n_threads=threads, n_threads_batch=threads, verbose=False)

    def reply(ids: list[int], schema: dict, max_tokens: int = MAX_TOKENS) -> dict:
        llm.reset()  # no prefix reuse between replies: every runtime prefills the whole prompt
        start, stamps = time.perf_counter(), []
        grammar = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        stamp = StoppingCriteriaList([lambda *_: stamps.append(time.perf_counter())])  # never stops
        out = llm.create_completion(prompt=ids, grammar=grammar, temperature=0.0, max_tokens=max_tokens,
                                    stopping_criteria=stamp)
        choice = out["choices"][0]
        return _reply(start, stamps, choice["text"], choice["finish_reason"])

    reply(tasks[0]["ids"], WARM_UP, 8)
    return {"replies": [reply(t["ids"], t["schema"]) for t in tasks]}


def child_genai(model_path: str, threads: int, tasks: list[dict]) -> dict:
    """onnxruntime-genai's generator with its llguidance constraint and forced tokens."""
    import numpy as np
    import onnxruntime_genai as og

    config = og.Config(model_path)
    options = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
    config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
    model = og.Model(config)
    tokenizer = og.Tokenizer(model)
    eos = json.loads((Path(model_path) / "genai_config.json").read_text())["model"]["eos_token_id"]
    eos = eos if isinstance(eos, list) else [eos]

    def reply(ids: list[int], schema: dict, max_tokens: int = MAX_TOKENS) -> dict:
        start, stamps = time.perf_counter(), []
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(ids) + max_tokens, do_sample=False)
        params.set_guidance("json_schema", json.dumps(schema), enable_ff_tokens=True)
        generator = og.Generator(model, params)
        generator.append_tokens(np.asarray([ids], dtype=np.int32))
        while not generator.is_done():
            generator.generate_next_token()  # one sampled token, plus any forced after it
            stamps.append(time.perf_counter())
        tokens = [int(t) for t in generator.get_sequence(0)[len(ids):]]
        ends = bool(tokens) and tokens[-1] in eos  # an EOS kept in the sequence
        text = tokenizer.decode(np.asarray(tokens[:-1] if ends else tokens, dtype=np.int32))
        stopped = ends or len(tokens) < max_tokens  # done early: it sampled EOS (counted, as edge counts it)
        return _reply(start, stamps, text, "stop" if stopped else "length", tokens=len(tokens) + (stopped and not ends))

    reply(tasks[0]["ids"], WARM_UP, 8)
    return {"replies": [reply(t["ids"], t["schema"]) for t in tasks]}


def _reply(start: float, stamps: list[float], text: str, finish: str, tokens: int | None = None, **extra) -> dict:
    """One reply's figures from the call's start and a time stamp per decoder result."""
    count = tokens if tokens is not None else len(stamps)
    decode = stamps[-1] - stamps[0]
    return {"text": text, "finish": finish, "tokens": count, "ttft_s": stamps[0] - start,
            "last_s": stamps[-1] - start, "decode_s": decode,
            "decode_tok_s": (count - 1) / decode if decode > 0 else 0.0, **extra}


def child_main(argv: list[str]) -> None:
    kind, model, tasks_file, threads = argv
    tasks = json.loads(Path(tasks_file).read_text())
    if kind.startswith("edge:"):
        result = child_edge(model, int(threads), tasks, kind.split(":", 1)[1])
    else:
        result = (child_llama if kind == "llama.cpp" else child_genai)(model, int(threads), tasks)
    print(json.dumps(result))


# --- the parent: rounds, validity, tables -------------------------------------------------

def main() -> None:
    args = parse_args()
    sys.path.insert(0, str(HERE))
    import compare

    bundle = str(args.bundle or compare.default_bundle())
    suite = json.loads(TASKS.read_text())["tasks"][: args.tasks]
    rows, skipped = runnable(args, compare, bundle)
    header = machine()
    with tempfile.TemporaryDirectory() as tmp:
        tasks_file = Path(tmp) / "tasks.json"
        tasks_file.write_text(json.dumps([{**t, "ids": ids} for t, ids in zip(suite, prompt_ids(bundle, suite))]))
        runs = measure(args, compare, rows, tasks_file, skipped)
    for result in (r for each in runs.values() for r in each):
        for task, reply in zip(suite, result["replies"]):
            reply["valid"] = valid(reply["text"], task["schema"])
    report(args, header, suite, runs, skipped)


def runnable(args, compare, bundle: str) -> tuple[dict, dict]:
    """row -> (child kind, model path, python); and row -> why it is skipped."""
    rows = {name: (f"edge:{mode}", bundle, sys.executable) for name, mode in EDGE_ROWS.items()}
    skipped, peers = {}, {p.name: p for p in compare.PEERS}
    for name, peer_name in PEER_ROWS.items():
        peer = peers[peer_name]
        reason = compare.missing(args, peer)
        if reason is None and peer.runtime == "genai":
            reason = guidance_missing(compare.venv_python(args, peer))
        if reason:
            skipped[name] = reason
            continue
        from export.fetch import SMOLLM2, fetch

        model = compare.ensure_model(args, peer, fetch(SMOLLM2))
        rows[name] = (peer.runtime, str(model), compare.venv_python(args, peer))
    return {n: r for n, r in rows.items() if not args.only or n in args.only}, skipped


def guidance_missing(python: Path) -> str | None:
    probe = subprocess.run([str(python), "-c", "import onnxruntime_genai as og; og.GeneratorParams.set_guidance"],
                           capture_output=True, text=True)
    return "its wheel has no guidance (GeneratorParams.set_guidance)" if probe.returncode else None


def prompt_ids(bundle: str, suite: list[dict]) -> list[list[int]]:
    import edge

    model = edge.load(bundle)
    return [model.encode_prompt(prompt_text(task)) for task in suite]


def measure(args, compare, rows: dict, tasks_file: Path, skipped: dict) -> dict[str, list[dict]]:
    """row -> one result per round; the rows alternate within each round."""
    runs: dict[str, list[dict]] = {name: [] for name in rows}
    for round_ in range(args.rounds):
        for name, (kind, model, python) in rows.items():
            if name in skipped:
                continue
            print(f"round {round_ + 1}: {name}", file=sys.stderr)
            command = [str(python), str(Path(__file__).resolve()), "--child", kind, model, str(tasks_file),
                       str(args.threads)]
            try:
                runs[name].append(compare._child(command))
            except RuntimeError as exc:
                skipped[name] = f"failed: {exc}"
    return {name: r for name, r in runs.items() if r and name not in skipped}


def valid(text: str, schema: dict) -> bool:
    import jsonschema

    try:
        jsonschema.validate(json.loads(text), schema, format_checker=jsonschema.FormatChecker())
    except (json.JSONDecodeError, jsonschema.ValidationError):
        return False
    return True


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in _run(["lscpu"]).splitlines()
                if line.startswith("Model name")), "unknown CPU")
    vnni = "avx512_vnni" in Path("/proc/cpuinfo").read_text()
    return f"{cpu}, avx512_vnni {'yes' if vnni else 'no'}; uptime: {_run(['uptime']).strip()}"


def _run(command: list[str]) -> str:
    return subprocess.run(command, capture_output=True, text=True).stdout


# --- figures ------------------------------------------------------------------------------

def suite_figures(result: dict) -> dict[str, float]:
    """One round of one row over the suite: decode tok/s of all replies together, mean time to
    the last token, validity, and edge's tokens per decoder call and mask share."""
    replies = result["replies"]
    finished = [r for r in replies if r["finish"] == "stop"]
    out = {"decode_tok_s": sum(r["tokens"] - 1 for r in replies) / sum(r["decode_s"] for r in replies),
           "last_s": statistics.fmean(r["last_s"] for r in replies),
           "tokens": statistics.fmean(r["tokens"] for r in replies),
           "finished": len(finished), "valid": sum(r["valid"] for r in replies),
           "valid_finished": sum(r["valid"] for r in finished)}
    if "calls" in replies[0]:
        calls = sum(r["calls"] for r in replies)
        out["accepted_per_call"] = sum(r["accepted"] for r in replies) / calls
        out["tokens_per_call"] = sum(r["tokens"] - 1 for r in replies) / calls
    if result.get("mask_calls"):
        out["mask_us"] = 1e6 * result["mask_s"] / result["mask_calls"]
        out["step_us"] = 1e6 * result["step_s"] / result["step_calls"]
        out["mask_share"] = out["mask_us"] / out["step_us"]
    return out


def medians(rounds: list[dict]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}


def report(args, header: str, suite: list[dict], runs: dict, skipped: dict) -> None:
    table = {name: medians([suite_figures(r) for r in results]) for name, results in runs.items()}
    n = len(suite)
    print(f"\n### {header}\n")
    print(f"{len(suite)} extraction tasks, greedy, at most {MAX_TOKENS} new tokens, {args.threads} threads; "
          f"{args.rounds} alternating rounds, fresh child processes (medians over rounds)\n")
    print("| runtime | decode tok/s | time to last token s | tokens/reply | finished | valid (all) | "
          "valid of finished | tokens/decoder call | accepted/call |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, f in table.items():
        per_call = (f"{f['tokens_per_call']:.2f} | {f['accepted_per_call']:.2f}" if "tokens_per_call" in f
                    else "- | -")
        finished = max(f["finished"], 1)
        print(f"| {name} | {f['decode_tok_s']:.1f} | {f['last_s']:.3f} | {f['tokens']:.1f} | {f['finished']:g}/{n} | "
              f"{f['valid']:g}/{n} | {f['valid_finished'] / finished:.0%} | {per_call} |")
    per_task(suite, runs)
    targets(table)
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    if args.json:
        command = shlex.join([Path(sys.executable).name, *sys.argv])
        args.json.write_text(json.dumps({"command": command, "machine": header, "rounds": args.rounds,
                                         "threads": args.threads, "medians": table, "each_round": runs,
                                         "skipped": skipped}, indent=2))


def per_task(suite: list[dict], runs: dict) -> None:
    """Each task: decode tok/s and time to the last token (medians), valid in every round."""
    names = list(runs)
    print("\nper task: decode tok/s, time to last token s, valid (✓ in every round, ✗ in none, ~ in some)\n")
    print("| task | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for i, task in enumerate(suite):
        cells = []
        for name in names:
            replies = [r["replies"][i] for r in runs[name]]
            ok = sum(r["valid"] for r in replies)
            mark = "✓" if ok == len(replies) else "✗" if ok == 0 else "~"
            cells.append(f"{statistics.median(r['decode_tok_s'] for r in replies):.0f} · "
                         f"{statistics.median(r['last_s'] for r in replies):.2f} · {mark}")
        print(f"| {task['name']} | " + " | ".join(cells) + " |")


def targets(table: dict) -> None:
    """Issue 17's targets, measured."""
    drafts, forced = table.get("edge int8 json (drafts)"), table.get("edge int8 json (forced only)")
    llama = table.get("llama.cpp Q8_0 json (GBNF)")
    print("\ntargets (issue 17)\n")
    for name in EDGE_ROWS:
        if name in table and "free" not in name:
            f = table[name]
            print(f"- schema-valid finished outputs, {name}: {f['valid_finished']:g}/{f['finished']:g} "
                  f"(target 100%)")
    if llama:
        for name, f in (("drafts", drafts), ("forced only", forced)):
            if f:
                print(f"- constrained decode, edge ({name}) / llama.cpp Q8_0 GBNF: "
                      f"{f['decode_tok_s'] / llama['decode_tok_s']:.2f}x (target >= 1.3x); time to last token "
                      f"{f['last_s'] / llama['last_s']:.2f}x")
    for name in EDGE_ROWS:
        if "mask_share" in table.get(name, {}):
            f = table[name]
            print(f"- mask work, {name}: {f['mask_us']:.0f} us per Matcher.mask vs {f['step_us']:.0f} us per "
                  f"one-token decode step = {f['mask_share']:.1%} (target <= 5%)")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="edge bundle (default: the int8 SmolLM2 bundle)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tasks", type=int, help="only the first N tasks (a quick look)")
    parser.add_argument("--peers-venv", type=Path, default=Path.home() / ".cache/edge/peers/venv")
    parser.add_argument("--optimum-venv", type=Path, default=Path.home() / ".cache/edge/peers/venv-optimum")
    parser.add_argument("--only", action="append", help="run only these rows (by name)")
    parser.add_argument("--json", type=Path, help="also write every reply and figure here")
    return parser.parse_args()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child_main(sys.argv[2:])
    else:
        started = time.perf_counter()
        main()
        print(f"\n({time.perf_counter() - started:.0f} s)", file=sys.stderr)

"""One runtime over the speculative task suite; run in that runtime's venv by speculative.py.

    python speculative_runtimes.py RUNTIME MODEL IDS_JSON THREADS

RUNTIME is a key of RUNTIMES (edge with or without drafts, llama.cpp plain or with
llama-cpp-python's prompt-lookup drafts, onnxruntime-genai plain or with its n-gram
speculation); MODEL the bundle, GGUF or genai folder; IDS_JSON {"tasks": [{"name", "ids",
"max_tokens"}], "warmup": ids, "eos": ids}. Every task is greedy from the same prompt ids,
exactly max_tokens new tokens, the bundle's EOS ids masked everywhere (logit -inf here; genai's
min_length masks the same id): every runtime continues the reply the way the model would
without EOS. (Argmax through EOS instead would let edge and llama.cpp write a made-up next
chat turn after it while genai goes on with its reply: different texts, which drafts copy
from differently.) Prints one JSON object per run: per task the ids, time to first and last token,
decoder calls after the prompt, drafted and accepted tokens (None where a runtime does
not expose them).

Standalone like peers.py (stdlib + numpy + the runtime's package; peers.py for llama.cpp's
C API): the peer venvs do not have edge, and edge's venv does not have the peers.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

WARMUP_TOKENS = 48  # untimed, on the warm-up prompt: first-call costs of every runtime's kernels


class Run:
    """What one task's generation records; `tick` after every token."""

    def __init__(self):
        self.start = time.perf_counter()
        self.marks: list[float] = []
        self.ids: list[int] = []

    def tick(self, token: int) -> None:
        self.marks.append(time.perf_counter())
        self.ids.append(int(token))

    def result(self, calls: int | None, drafted: int | None, accepted: int | None) -> dict:
        return {"ids": self.ids, "ttft_s": self.marks[0] - self.start, "last_s": self.marks[-1] - self.start,
                "decode_s": self.marks[-1] - self.marks[0], "calls": calls, "drafted": drafted, "accepted": accepted}


def masked(logits: np.ndarray, eos: list[int]) -> np.ndarray:
    """logits (vocab,) with the EOS ids at -inf, in place: every caller hands over a row of its
    own (edge's and peers.py's logits are copies out of the runtime; llama-cpp-python's
    processor gets the sampler's scratch array), so no per-token copy is made."""
    logits[eos] = -np.inf
    return logits


def greedy_without_eos(eos: list[int]):
    """edge's greedy sampler with the EOS ids masked; still a `Greedy`, so quantized near-ties
    in checked rows are rechecked as usual (edge imported here: the peers' venvs lack it)."""
    from edge.generation.sampler import Greedy

    class GreedyWithoutEos(Greedy):
        def _scored(self, logits, previous_ids):
            return masked(logits, eos)

    return GreedyWithoutEos()


class Edge:
    """edge's generate_tokens with its greedy sampler, EOS masked: draft "lookup" or "none"."""

    def __init__(self, bundle: str, threads: int, draft: str, eos: list[int]):
        import edge

        self.model, self.draft, self.sampler = edge.load(bundle, threads=threads), draft, greedy_without_eos(eos)

    def generate(self, ids: list[int], max_tokens: int) -> dict:
        from edge.generation.generate import DraftStats, generate_tokens

        stats, run = DraftStats(), Run()
        for token in generate_tokens(self.model.decoder, ids, self.sampler, max_tokens, draft=self.draft, stats=stats):
            run.tick(token)
        return run.result(stats.calls, stats.drafted if self.draft != "none" else None,
                          stats.accepted if self.draft != "none" else None)


class LlamaCppPlain:
    """llama.cpp's C API, one token per llama_decode, argmax in numpy (peers.py, as compare.py)."""

    def __init__(self, path: str, threads: int, eos: list[int]):
        from peers import LlamaCpp

        self.runtime, self.eos = LlamaCpp(path, threads), eos

    def generate(self, ids: list[int], max_tokens: int) -> dict:
        runtime, run = self.runtime, Run()
        runtime.reset()
        token = int(masked(runtime.logits(ids), self.eos).argmax())
        run.tick(token)
        for _ in range(max_tokens - 1):
            token = int(masked(runtime.logits([token]), self.eos).argmax())
            run.tick(token)
        return run.result(max_tokens - 1, None, None)


class LlamaCppHigh:
    """llama-cpp-python's high-level Llama.generate, greedy (temp 0, top_k 1), fed token ids;
    with `num_pred` it drafts with LlamaPromptLookupDecoding(num_pred_tokens=num_pred).
    Decoder calls and accepted drafts are read off the evals it makes."""

    def __init__(self, path: str, threads: int, num_pred: int | None, eos: list[int]):
        from llama_cpp import Llama, LogitsProcessorList
        from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

        self.no_eos = LogitsProcessorList([lambda input_ids, scores: masked(scores, eos)])

        draft = None if num_pred is None else LlamaPromptLookupDecoding(num_pred_tokens=num_pred)
        self.llm = Llama(path, n_ctx=2048, n_batch=512, n_ubatch=512, n_threads=threads, n_threads_batch=threads,
                         draft_model=draft, verbose=False)
        self.evals: list[tuple[int, list[int]]] = []  # (cache length before, tokens) per llama eval
        plain_eval = self.llm.eval

        def eval_(tokens):
            self.evals.append((self.llm.n_tokens, list(tokens)))
            return plain_eval(tokens)

        self.llm.eval = eval_
        self.drafting = num_pred is not None

    def generate(self, ids: list[int], max_tokens: int) -> dict:
        llm, run = self.llm, Run()
        llm.reset()  # no prompt-prefix reuse between tasks: every runtime prefills every prompt
        self.evals.clear()
        tokens = llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True,
                              logits_processor=self.no_eos)
        for token in tokens:
            run.tick(token)
            if len(run.ids) == max_tokens:
                break
        tokens.close()
        calls = len(self.evals) - 1  # the first eval is the prompt
        if not self.drafting:
            return run.result(calls, None, None)
        drafted, accepted = self._drafts(ids + run.ids)
        return run.result(calls, drafted, accepted)

    def _drafts(self, sequence: list[int]) -> tuple[int, int]:
        """Drafted tokens sent to llama_decode after the prompt, and those the output kept."""
        drafted = accepted = 0
        for start, tokens in self.evals[1:]:
            drafts, truth = tokens[1:], sequence[start + 1 : start + len(tokens)]
            drafted += len(drafts)
            for d, t in zip(drafts, truth):
                if d != t:
                    break
                accepted += 1
        return drafted, accepted


class Genai:
    """onnxruntime-genai's generator loop, greedy; with `speculative` its n-gram speculation
    (GeneratorParams.set_speculative_options; docs/SpeculativeDecoding.md)."""

    def __init__(self, path: str, threads: int, speculative: dict | None):
        import onnxruntime_genai as og

        self.og, self.speculative = og, speculative
        config = og.Config(path)
        options = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
        config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
        self.model = og.Model(config)

    def generate(self, ids: list[int], max_tokens: int) -> dict:
        og, run = self.og, Run()
        params = og.GeneratorParams(self.model)
        total = len(ids) + max_tokens
        params.set_search_options(max_length=total, min_length=total, do_sample=False)  # masks its EOS
        if self.speculative:
            params.set_speculative_options(**self.speculative)
        generator = og.Generator(self.model, params)
        generator.append_tokens(np.asarray([ids], dtype=np.int32))
        while len(run.ids) < max_tokens and not generator.is_done():
            generator.generate_next_token()
            run.tick(int(generator.get_next_tokens()[0]))
        if not self.speculative:
            return run.result(max_tokens - 1, None, None)
        stats = generator.get_speculative_stats()
        # target runs after the prompt: verifications and re-anchors (target_forward_passes) plus
        # plain steps on lookup misses; the first plain step samples the prompt's logits
        calls = int(stats["target_forward_passes"]) + int(stats["standard_fallback_steps"]) - 1
        return run.result(calls, int(stats["draft_tokens_proposed"]), int(stats["draft_tokens_accepted"])) | {
            "genai_stats": {k: v for k, v in stats.items() if isinstance(v, (int, float))}}


GENAI_NGRAM = {"ngram_size": 4, "max_draft_tokens": 8, "ngram_chained_lookup": True, "min_adaptive_k": 2,
               "cooldown": False}  # the n-gram setting docs/SpeculativeDecoding.md shows
GENAI_NGRAM_K4 = {"ngram_size": 4, "max_draft_tokens": 4}  # its tuning section's starting point: fixed K 4

RUNTIMES = {  # name -> (model, threads, eos ids) -> runtime
    "edge-lookup": lambda model, threads, eos: Edge(model, threads, "lookup", eos),
    "edge-none": lambda model, threads, eos: Edge(model, threads, "none", eos),
    "llama.cpp": LlamaCppPlain,
    "llama.cpp-generate": lambda model, threads, eos: LlamaCppHigh(model, threads, None, eos),
    "llama.cpp-pld2": lambda model, threads, eos: LlamaCppHigh(model, threads, 2, eos),
    "llama.cpp-pld10": lambda model, threads, eos: LlamaCppHigh(model, threads, 10, eos),
    "genai": lambda model, threads, eos: Genai(model, threads, None),  # min_length masks EOS
    "genai-ngram": lambda model, threads, eos: Genai(model, threads, GENAI_NGRAM),  # min_length masks EOS
    "genai-ngram-k4": lambda model, threads, eos: Genai(model, threads, GENAI_NGRAM_K4),  # min_length masks EOS
}


def main() -> None:
    name, model, ids_file, threads = sys.argv[1:5]
    suite = json.loads(Path(ids_file).read_text())
    runtime = RUNTIMES[name](model, int(threads), suite["eos"])
    runtime.generate(suite["warmup"], WARMUP_TOKENS)
    results = {task["name"]: runtime.generate(task["ids"], task["max_tokens"]) for task in suite["tasks"]}
    print(json.dumps(results))


if __name__ == "__main__":
    main()

"""One peer runtime measured the way edge.tools.bench measures edge; run in the peer's own venv.

    python peers.py RUNTIME MODEL IDS_JSON THREADS [--quality]

RUNTIME is llama.cpp, genai, transformers or optimum; MODEL its model file or folder;
IDS_JSON the prompts edge.tools.bench.prompts made ({"short", "long", "context"} token ids, or
{"windows"} with --quality). Prints one JSON object: load, time to first token, prefill
and decode tokens/s, decode at long context, peak RSS; with --quality the mean next-token
NLL and the top-1 id at every position of each window.

Standalone on purpose (stdlib + numpy + the peer's package): the peer venvs do not have
edge, and edge's venv does not have the peers.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # before the peer's imports: load counts them, as for edge

import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

DECODE = 128  # greedy steps after the short prompt (edge.tools.bench.DECODE)


class Greedy:
    """Greedy prefill/step for a runtime that returns logits: `logits(ids)` appends `ids`."""

    def prefill(self, ids: list[int]) -> int:
        return int(self.logits(ids).argmax())

    def step(self, token: int) -> int:
        return int(self.logits([token]).argmax())


class LlamaCpp(Greedy):
    """llama.cpp through llama-cpp-python's C API: one sequence, logits of the last token."""

    def __init__(self, path: str, threads: int, context: int = 2048):
        import llama_cpp as L

        self.L = L
        L.llama_backend_init()
        self.model = L.llama_model_load_from_file(path.encode(), L.llama_model_default_params())
        params = L.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch = context, 512, 512
        params.n_threads = params.n_threads_batch = threads
        self.ctx = L.llama_init_from_model(self.model, params)
        self.vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))
        self.batch = L.llama_batch_init(512, 0, 1)
        self.length = 0

    def reset(self) -> None:
        self.L.llama_memory_clear(self.L.llama_get_memory(self.ctx), True)
        self.length = 0

    def logits(self, ids: list[int], every: bool = False) -> np.ndarray:
        """Append ids in batches of 512; logits (vocab,) of the last, or (n, vocab) of all."""
        rows = []
        for start in range(0, len(ids), 512):
            chunk = ids[start : start + 512]
            b = self.batch
            b.n_tokens = len(chunk)
            for i, token in enumerate(chunk):
                b.token[i], b.pos[i], b.n_seq_id[i], b.seq_id[i][0] = token, self.length + i, 1, 0
                b.logits[i] = every or i == len(chunk) - 1
            if self.L.llama_decode(self.ctx, b) != 0:
                raise RuntimeError("llama_decode failed")
            self.length += len(chunk)
            picked = range(len(chunk)) if every else [len(chunk) - 1]
            rows += [np.ctypeslib.as_array(self.L.llama_get_logits_ith(self.ctx, i), shape=(self.vocab,)).copy()
                     for i in picked]
        return np.stack(rows) if every else rows[-1]


class Genai:
    """onnxruntime-genai: a fresh generator per prompt (its KV buffer is sized by max_length)."""

    def __init__(self, path: str, threads: int):
        import onnxruntime_genai as og

        self.og = og
        config = og.Config(path)
        options = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
        config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
        self.model = og.Model(config)
        self.generator = None

    def reset(self) -> None:
        self.generator = None

    def prefill(self, ids: list[int]) -> int:
        self._append(ids, room=DECODE + 1)
        return self.step(None)

    def logits(self, ids: list[int], every: bool = False) -> np.ndarray:
        """Its prompt run returns every position's logits (1, seq, vocab)."""
        self._append(ids, room=1)
        logits = self.generator.get_output("logits")[0]
        return logits if every else logits[-1]

    def _append(self, ids: list[int], room: int) -> None:
        params = self.og.GeneratorParams(self.model)
        total = len(ids) + room
        params.set_search_options(max_length=total, min_length=total, do_sample=False)
        self.generator = self.og.Generator(self.model, params)
        self.generator.append_tokens(np.asarray([ids], dtype=np.int32))

    def step(self, token: int | None) -> int:
        """genai feeds back its own last token; greedy, so that is `token`."""
        self.generator.generate_next_token()
        return int(self.generator.get_next_tokens()[0])


class Transformers(Greedy):
    """transformers + torch fp32, the reference; a DynamicCache kept between calls."""

    def __init__(self, path: str, threads: int):
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(threads)
        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        self.reset()

    def reset(self) -> None:
        self.past, self.length = None, 0

    def logits(self, ids: list[int], every: bool = False) -> np.ndarray:
        self.length += len(ids)
        mask = self.torch.ones((1, self.length), dtype=self.torch.int64)  # optimum's graph requires it
        with self.torch.inference_mode():
            out = self.model(input_ids=self.torch.tensor([ids]), attention_mask=mask, past_key_values=self.past,
                             use_cache=True)
        self.past = out.past_key_values
        return out.logits[0].numpy() if every else out.logits[0, -1].numpy()


class Optimum(Transformers):
    """optimum's ORTModelForCausalLM on an exported folder (same call shape as transformers)."""

    def __init__(self, path: str, threads: int):
        import onnxruntime as ort
        import torch
        from optimum.onnxruntime import ORTModelForCausalLM

        torch.set_num_threads(threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.torch = torch
        self.model = ORTModelForCausalLM.from_pretrained(path, session_options=options, use_cache=True)
        self.reset()


RUNTIMES = {"llama.cpp": LlamaCpp, "genai": Genai, "transformers": Transformers, "optimum": Optimum}


def speed(runtime, ids: dict[str, list[int]], ready: float) -> dict[str, float]:
    """edge.tools.bench.run's figures, in the same order and with the same prompts."""
    figures = {"start_to_ready_s": ready - STARTED, "short_prompt": len(ids["short"]),
               "long_prompt": len(ids["long"]), "long_context": len(ids["context"])}
    start = time.perf_counter()
    token = runtime.prefill(ids["short"])
    figures["ttft_s"] = time.perf_counter() - start
    figures["prefill_tok_s_short"] = len(ids["short"]) / figures["ttft_s"]
    figures["decode_tok_s"] = _decode(runtime, token, DECODE)
    runtime.reset()
    start = time.perf_counter()
    runtime.prefill(ids["long"])
    figures["prefill_tok_s_long"] = len(ids["long"]) / (time.perf_counter() - start)
    runtime.reset()
    figures["decode_tok_s_long_context"] = _decode(runtime, runtime.prefill(ids["context"]), DECODE // 4)
    figures["peak_rss_mb"] = _peak_rss_mb()
    return figures


def _decode(runtime, token: int, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        token = runtime.step(token)
    return steps / (time.perf_counter() - start)


def quality(runtime, windows: list[list[int]]) -> dict:
    """Teacher-forced over each window (fresh cache): mean NLL of the next token, top-1 ids."""
    nll, count, argmax = 0.0, 0, []
    for window in windows:
        runtime.reset()
        logits = runtime.logits(window[:-1], every=True).astype(np.float64)  # (n, vocab)
        top = logits.max(axis=1)
        log_z = np.log(np.exp(logits - top[:, None]).sum(axis=1)) + top
        nll += float((log_z - logits[np.arange(len(logits)), window[1:]]).sum())
        count += len(logits)
        argmax += logits.argmax(axis=1).tolist()
    return {"mean_nll": nll / count, "argmax": argmax}


class EdgeDecoder:
    """edge's decoder in the shape `quality` expects (used from edge's own venv)."""

    def __init__(self, bundle: str, threads: int):
        import edge

        self.decoder = edge.load(bundle, threads=threads).decoder

    def reset(self) -> None:
        self.decoder.reset()

    def logits(self, ids: list[int], every: bool = False) -> np.ndarray:
        return self.decoder.logits(ids)


def run_edge(bundle: str, threads: int, started: float, ids_file: str, with_quality: bool) -> dict:
    """edge's figures by edge.tools.bench.run itself, or its quality scored as the peers' are."""
    from edge.tools.bench import run

    ids = json.loads(open(ids_file).read())
    if with_quality:
        return quality(EdgeDecoder(bundle, threads), ids["windows"])
    return run(bundle, threads, started, ids)

def _peak_rss_mb() -> float:
    """VmHWM, as edge.tools.bench reads it (this file cannot import edge): ru_maxrss survives exec
    and would report compare.py's own peak for a small peer."""
    try:
        status = open("/proc/self/status").read()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024



def main() -> None:
    name, model, ids_file, threads = sys.argv[1:5]
    ids = json.loads(open(ids_file).read())
    runtime = RUNTIMES[name](model, int(threads))
    ready = time.perf_counter()
    result = quality(runtime, ids["windows"]) if "--quality" in sys.argv else speed(runtime, ids, ready)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Kernel micro-benchmark (not a test): single onnxruntime ops behind two graph decisions.

1. Norms. The encoder builds LayerNorm from plain ops (`GraphBuilder.add_norm`) because
   onnxruntime's CPU (Skip)LayerNormalization kernel is several times slower than them at
   encoder row counts; decoders keep SkipSimplifiedLayerNormalization (RMSNorm), which is fast.
2. KV cache dtype. GroupQueryAttention over an fp16 cache instead of fp32, at short and
   long context: whether halving the bytes a decode step reads pays on this CPU.

    python benchmarks/op_timings.py [--threads 2]   # with the `export` extra (the graph builder)

Times are medians of 5 rounds of many calls, per call, in microseconds.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from export.graph.builder import GraphBuilder

MS = "com.microsoft"


def _options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return options


def session(nodes, inputs: dict[str, np.ndarray], outputs: list[str], threads: int, dtype=np.float32):
    """A one-op model: `inputs` fed, `outputs` of `dtype` read."""
    graph = helper.make_graph(
        nodes, "k",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape))
         for n, a in inputs.items()],
        [helper.make_tensor_value_info(o, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), None) for o in outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    model.ir_version = 8
    return ort.InferenceSession(model.SerializeToString(), _options(threads), providers=["CPUExecutionProvider"])


def per_call_us(run, calls: int) -> float:
    for _ in range(max(calls // 10, 3)):
        run()
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(calls):
            run()
        rounds.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(rounds)


def norms(threads: int) -> None:
    """The norms as the exporter emits them (`GraphBuilder.skip_norm`, `GraphBuilder.add_norm`),
    so this times the graphs bundles hold; plain-op RMSNorm is the alternative not taken."""
    rng = np.random.default_rng(0)
    print("| norm | rows x width | fused op | plain ops |\n|---|---|---|---|")
    for rows, width, layer in ((2400, 384, True), (480, 384, True), (64, 576, False), (1, 576, False)):
        feeds = {name: rng.normal(size=(1, rows, width)).astype(np.float32) for name in ("x", "d")}
        weight, bias = (rng.normal(size=width).astype(np.float32) for _ in range(2))
        fused = _norm_graph(rows, width, lambda g: g.skip_norm("x", "d", weight, bias if layer else None, 1e-5, "n")[0])
        plain = (_norm_graph(rows, width, lambda g: g.add_norm("x", "d", weight, bias, 1e-5, "n")) if layer
                 else _norm_graph(rows, width, lambda g: _plain_rms_norm(g, weight)))
        times = []
        for model in (fused, plain):
            s = ort.InferenceSession(model.SerializeToString(), _options(threads), providers=["CPUExecutionProvider"])
            times.append(per_call_us(lambda: s.run(None, feeds), 2000 if rows == 1 else 100))
        kind = "LayerNorm" if layer else "RMSNorm"
        print(f"| {kind} | {rows} x {width} | {times[0]:.0f} | {times[1]:.0f} |")


def _norm_graph(rows: int, width: int, norm) -> onnx.ModelProto:
    """A graph of inputs x and d (1, rows, width) and output y = norm(builder)."""
    g = GraphBuilder("norm")
    for name in ("x", "d"):
        g.input(name, TensorProto.FLOAT, [1, rows, width])
    g.output(norm(g), "y", TensorProto.FLOAT, [1, rows, width])
    return g.model()


def _plain_rms_norm(g: GraphBuilder, weight: np.ndarray) -> str:
    total = g.op("Add", "x", "d")
    mean_square = g.op("ReduceMean", g.op("Mul", total, total), axes=[-1])
    inverse = g.op("Reciprocal", g.op("Sqrt", g.op("Add", mean_square, g.const(1e-5, np.float32))))
    return g.op("Mul", g.op("Mul", total, inverse), g.init("n.weight", weight))


def kv_cache(threads: int, heads: int = 9, kv_heads: int = 3, dim: int = 64, capacity: int = 1100) -> None:
    """One decode step of one SmolLM2-135M layer's attention (9 query heads, 3 KV heads)."""
    print("\n| GroupQueryAttention cache | context 50 | context 1,000 |\n|---|---|---|")
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float16):
        times = []
        for context in (50, 1000):
            feeds = {"qkv": rng.normal(size=(1, 1, (heads + 2 * kv_heads) * dim)).astype(dtype),
                     "past_k": rng.normal(size=(1, kv_heads, capacity, dim)).astype(dtype),
                     "past_v": rng.normal(size=(1, kv_heads, capacity, dim)).astype(dtype),
                     "seqlens_k": np.array([context - 1], np.int32), "total": np.array(context, np.int32),
                     "cos": rng.normal(size=(capacity, dim // 2)).astype(dtype),
                     "sin": rng.normal(size=(capacity, dim // 2)).astype(dtype)}
            node = helper.make_node("GroupQueryAttention", ["qkv", "", "", "past_k", "past_v", "seqlens_k", "total",
                                                            "cos", "sin"], ["out", "k", "v"], domain=MS,
                                    num_heads=heads, kv_num_heads=kv_heads, do_rotary=1)
            s = session([node], feeds, ["out", "k", "v"], threads, dtype)
            io = s.io_binding()
            for name, value in feeds.items():
                io.bind_cpu_input(name, value)
            io.bind_output("out")
            for name, past in (("k", "past_k"), ("v", "past_v")):  # the cache is shared in place, as edge runs it
                io.bind_output(name, "cpu", 0, dtype, list(feeds[past].shape), feeds[past].ctypes.data)
            times.append(per_call_us(lambda: s.run_with_iobinding(io), 500))
        print(f"| {np.dtype(dtype).name} | {times[0]:.0f} us | {times[1]:.0f} us |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(f"onnxruntime {ort.__version__}, {args.threads} threads; microseconds per call\n")
    norms(args.threads)
    kv_cache(args.threads)


if __name__ == "__main__":
    main()

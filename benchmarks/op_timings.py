"""Kernel micro-benchmark (not a test): onnxruntime kernels behind three graph decisions.

1. Norms. The encoder builds LayerNorm from plain ops (`GraphBuilder.add_norm`) because
   onnxruntime's CPU (Skip)LayerNormalization kernel is several times slower than them at
   encoder row counts; decoders keep SkipSimplifiedLayerNormalization (RMSNorm), which is fast.
2. KV cache dtype. GroupQueryAttention over an fp16 cache instead of fp32, at short and
   long context: whether halving the bytes a decode step reads pays on this CPU.
3. Weight formats by rows (`--rows`): what a call with M rows (M new tokens, or M sequences
   of one token) costs against one row, for a stack of linear layers shaped like SmolLM2-135M
   (30 x qkv, o, gate_up, down, then the 49k LM head; no attention), stored as edge's int8
   (MatMulNBits 8-bit blocks of 32), the same in blocks of 64 and 128, 4-bit blocks with
   integer zero points (not edge's int4 recipe, whose float block minimum adds two small
   MatMuls per layer), fp32, and DynamicQuantizeMatMul (int8 weights per output channel,
   activations quantized per call: one scale for all M rows). This row growth is what
   speculative drafts and batching pay (drafts.py COSTS). Each format's error against fp32 is
   printed too, for one gate_up layer on its own random rows: signed int8 weights under
   DynamicQuantizeMatMul (U8S8) add pairs in 16 bits and saturate on x86 without VNNI. Those
   rows are alike, so the error at 16 rows does not show what one activation scale for rows of
   different ranges costs a real model (benchmarks/README.md: +14.4% perplexity on SmolLM2).

    python benchmarks/op_timings.py [--threads 2]   # with the `export` extra (the graph builder)
    python benchmarks/op_timings.py --rows          # part 3 alone (1-2 minutes on a quiet 2-core CPU)

Times are medians of 5 rounds of many calls, per call: microseconds in parts 1-2, ms in 3.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from edge.tools.doctor import report
from export.graph.builder import GraphBuilder
from export.quantize import QuantSpec, quantize_channels

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


# SmolLM2-135M's linear layers, (out, in): qkv, o, gate_up, down; the LM head after them
LAYERS, LAYER_SHAPES, HEAD_SHAPE = 30, ((960, 576), (576, 576), (3072, 576), (576, 1536)), (49152, 576)
ROWS = (1, 2, 3, 5, 9, 16)
FORMATS = {  # name -> QuantSpec for GraphBuilder.linear, or a DynamicQuantizeMatMul weight kind
    "int8 (MatMulNBits 8-bit, blocks of 32, edge's default)": QuantSpec(bits=8, block_size=32),
    "int8 symmetric blocks of 32": QuantSpec(bits=8, block_size=32, symmetric=True),
    "int8 blocks of 64": QuantSpec(bits=8, block_size=64),
    "int8 blocks of 128": QuantSpec(bits=8, block_size=128),
    "int4 blocks of 32 (integer zero points)": QuantSpec(bits=4, block_size=32),
    "DynamicQuantizeMatMul, uint8 weights per channel (U8U8)": "u8",
    "DynamicQuantizeMatMul, int8 weights per channel (U8S8)": "s8",
    "fp32 (MatMul)": None,
}


def formats_by_rows(threads: int) -> None:
    """Per-call ms of the SmolLM2-shaped stack at each row count, one format at a time."""
    rng = np.random.default_rng(0)
    weights = [[(rng.normal(size=shape) * 0.05).astype(np.float32) for shape in LAYER_SHAPES]
               for _ in range(LAYERS)]
    head = (rng.normal(size=HEAD_SHAPE) * 0.05).astype(np.float32)
    feeds = {m: {"x": rng.normal(size=(m, LAYER_SHAPES[0][1])).astype(np.float32)} for m in ROWS}
    error_feeds = {m: {"x": rng.normal(size=(m, LAYER_SHAPES[2][1])).astype(np.float32)} for m in (1, 16)}
    reference = None
    print(f"| weights ({LAYERS} layers + LM head) | " + " | ".join(f"{m} row{'s' * (m > 1)}" for m in ROWS)
          + " | 9 rows / 1 | 16 rows / 1 | error 1 / 16 rows |\n|" + "---|" * (len(ROWS) + 4))
    for name in sorted(FORMATS, key=lambda n: FORMATS[n] is not None):  # fp32 first: the reference
        session = _session(_stack(FORMATS[name], weights, head), threads)
        ms = [per_call_us(lambda: session.run(None, feeds[m]), 20) / 1000 for m in ROWS]
        del session  # one session at a time: an idle one's spinning threads would share the cores
        single_layer = _session(_stack(FORMATS[name], [], weights[0][2]), threads)  # gate_up alone: its error
        outs = [single_layer.run(None, error_feeds[m])[0] for m in error_feeds]
        reference = outs if reference is None else reference
        error = [float(np.abs(o - r).max() / np.abs(r).max()) for o, r in zip(outs, reference)]
        print(f"| {name} | " + " | ".join(f"{t:.1f}" for t in ms) + f" | {ms[ROWS.index(9)] / ms[0]:.2f} | "
              f"{ms[-1] / ms[0]:.2f} | " + " / ".join(f"{e:.2%}" for e in error) + " |")
    print("\nms per call. Error: one gate_up layer (576 -> 3072) on random normal rows, largest |difference|"
          "\nfrom fp32 over the largest |fp32 output|, at 1 row / 16 rows (alike rows: what one activation"
          "\nscale for rows of different ranges costs does not show here)")


def _session(model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), _options(threads), providers=["CPUExecutionProvider"])


def _stack(kind: QuantSpec | str | None, weights, head) -> onnx.ModelProto:
    """x (M, 576) through every layer's four linears (a residual add, slices where widths
    differ) and then `head` (any (out, in) weight: the LM head, or one layer alone). `kind`:
    a QuantSpec (MatMulNBits), "u8" / "s8" (DynamicQuantizeMatMul weights), None (fp32)."""
    g = GraphBuilder("rows", quant=kind if isinstance(kind, QuantSpec) else None)

    def linear(x: str, w: np.ndarray, name: str) -> str:
        if not isinstance(kind, str):
            return g.linear(x, w, name)
        codes, scales = quantize_channels(w)  # (K, N) uint8 = int8 + 128, (N,)
        inputs = [g.init(f"{name}.scales", scales)]
        if kind == "u8":
            inputs.append(g.init(f"{name}.zero", np.full(w.shape[0], 128, np.uint8)))
        else:
            codes = (codes.astype(np.int16) - 128).astype(np.int8)
        return g.op("DynamicQuantizeMatMul", x, g.init(f"{name}.codes", codes), *inputs, domain=MS)

    def first(x: str, width: int) -> str:
        return g.op("Slice", x, g.const([0]), g.const([width]), g.const([-1]))

    x = g.input("x", TensorProto.FLOAT, ["rows", head.shape[1]])
    for i, (qkv, o, gate_up, down) in enumerate(weights):
        attn = linear(first(linear(x, qkv, f"l{i}.qkv"), o.shape[1]), o, f"l{i}.o")
        mlp = linear(first(linear(attn, gate_up, f"l{i}.gate_up"), down.shape[1]), down, f"l{i}.down")
        x = g.op("Add", x, mlp)
    g.output(linear(x, head, "head"), "logits", TensorProto.FLOAT, ["rows", HEAD_SHAPE[0]])
    return g.model()


def cpu_line() -> str:
    """The CPU as `edge doctor` names it, with the int8 kernel it gets."""
    facts = report()
    return f"{facts['cpu']} ({facts['cores']} logical, int8 kernel {facts['int8_kernel'] or 'none'})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", action="store_true", help="only part 3: weight formats by rows per call")
    args = parser.parse_args()
    print(f"onnxruntime {ort.__version__}, {args.threads} threads, CPU {cpu_line()}\n")
    if not args.rows:
        print("microseconds per call\n")
        norms(args.threads)
        kv_cache(args.threads)
        print()
    formats_by_rows(args.threads)


if __name__ == "__main__":
    main()

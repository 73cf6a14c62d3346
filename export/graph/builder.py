"""A small ONNX graph builder: named ops, initializers from numpy, and the weight formats.

The architecture modules (llama.py, gpt2.py, bert.py) describe the forward pass with it;
how a linear layer or an embedding is stored (fp32, block-quantized, or for the pi4
recipe's LM head int8 per channel under MatMulInteger) is decided here
once, by the `QuantSpec` the builder was made with, so fp32 and int8 graphs share one
description of the model.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.quantize import QuantSpec, quantize_channels, quantize_embedding, quantize_matmul_weight

OPSET = 17
MS_DOMAIN = "com.microsoft"
HEAD_PART_BYTES = 8 << 20  # of weights at one byte each (8-bit codes); see GraphBuilder._quantized_head


class GraphBuilder:
    def __init__(self, name: str, quant: QuantSpec | None = None, capture_attention: bool = False):
        self.name = name
        self.quant = quant
        self.capture_attention = capture_attention  # inspection graphs also output attention weights
        # role ("tokens", "positions") -> (values, scales or None): initializers `edge inspect` reads
        self.tables: dict[str, tuple[str, str | None]] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._counter = 0
        self._consts: dict[tuple, str] = {}

    # --- plumbing -------------------------------------------------------------------
    def op(self, op_type: str, *inputs: str, outputs: int | list[str] = 1, domain: str = "", **attrs):
        """Add a node; returns its output name (or list of names when outputs > 1)."""
        self._counter += 1
        base = f"/{self.name}/{op_type}_{self._counter}"
        names = outputs if isinstance(outputs, list) else [f"{base}/out{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=base, domain=domain, **attrs))
        return names[0] if len(names) == 1 else names

    def init(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, values, dtype=np.int64) -> str:
        """A small constant (shapes, axes, scalars), shared between uses."""
        array = np.asarray(values, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            self._consts[key] = self.init(f"const_{len(self._consts)}", array)
        return self._consts[key]

    def input(self, name: str, elem_type: int, shape: list) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def output(self, value: str, name: str, elem_type: int, shape: list) -> str:
        self.nodes.append(helper.make_node("Identity", [value], [name], name=f"/{self.name}/out_{name}"))
        return self.declare_output(name, elem_type, shape)

    def declare_output(self, name: str, elem_type: int, shape: list) -> str:
        """Make an existing node output (named `name` when it was made) a graph output."""
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def model(self) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.initializers)
        opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="edge-export")
        model.ir_version = 8
        return model

    # --- weights --------------------------------------------------------------------
    def linear(self, x: str, weight: np.ndarray, name: str, bias: np.ndarray | None = None) -> str:
        """x @ weight.T (+ bias) for a weight stored (out_features, in_features)."""
        if self.quant is None:
            y = self.op("MatMul", x, self.init(f"{name}.weight_t", weight.T.astype(np.float32)))
        else:
            y = self._matmul_nbits(x, weight, name)
        if bias is not None:
            y = self.op("Add", y, self.init(f"{name}.bias", bias.astype(np.float32)))
        return y

    def _matmul_nbits(self, x: str, weight: np.ndarray, name: str, stored_as: str | None = None) -> str:
        """x @ weight.T with `weight` quantized as the spec for `name` says, its
        initializers named after `stored_as` (default: `name`)."""
        spec = self.quant.for_weight(name)
        q = quantize_matmul_weight(weight, spec)
        stored_as = stored_as or name
        inputs = [x, self.init(f"{stored_as}.qweight", q.packed), self.init(f"{stored_as}.scales", q.scales)]
        if q.zero_points is not None:
            inputs.append(self.init(f"{stored_as}.zero_points", q.zero_points))
        n, k = weight.shape
        y = self.op(
            "MatMulNBits", *inputs, domain=MS_DOMAIN,
            K=k, N=n, bits=spec.bits, block_size=spec.block_size, accuracy_level=spec.accuracy_level,
        )
        if q.offsets is None:
            return y
        # the blocks' float minimum: sum_b offset[n, b] * sum(x in block b). Block sums as a
        # MatMul with a 0/1 matrix: one op where Reshape + ReduceSum are two (ops, not
        # arithmetic, are what a decode step of a small model pays for)
        blocks = k // spec.block_size
        ones = np.repeat(np.eye(blocks, dtype=np.float32), spec.block_size, axis=0)  # (K, K / block)
        sums = self.op("MatMul", x, self.const(ones, np.float32))  # (B, S, K / block)
        return self.op("Add", y, self.op("MatMul", sums, self.init(f"{stored_as}.offsets", q.offsets.T)))

    def table(self, role: str, name: str, array: np.ndarray) -> str:
        """An fp32 lookup table (e.g. learned positions) that `edge inspect` reads as `role`."""
        self.tables[role] = (name, None)
        return self.init(name, array.astype(np.float32))

    def embedding(self, ids: str, table: np.ndarray, name: str, role: str = "tokens") -> str:
        """table[ids]: (…,) int64 -> (…, H); int8 blocks when the spec quantizes embeddings
        (4.5x smaller)."""
        if self.quant is None or not self.quant.embeddings:
            return self.op("Gather", self.table(role, name, table), ids)
        block = self.quant.block_size
        codes, scales = quantize_embedding(table, block)  # (V, H) int8, (V, H/block)
        self.tables[role] = (f"{name}.codes", f"{name}.scales")
        rows = self.op("Cast", self.op("Gather", self.init(f"{name}.codes", codes), ids), to=TensorProto.FLOAT)
        row_scales = self.op("Gather", self.init(f"{name}.scales", scales), ids)  # (…, H/block)
        hidden = table.shape[1]
        if hidden % block:
            raise ValueError(f"embedding width {hidden} is not a multiple of block {block}")
        blocked = self.op("Reshape", rows, self.const([0, 0, hidden // block, block]))
        scaled = self.op("Mul", blocked, self.op("Unsqueeze", row_scales, self.const([-1])))
        return self.op("Reshape", scaled, self.const([0, 0, hidden]))

    def lm_head(self, x: str, weight: np.ndarray, tied_table: str | None) -> str:
        """Logits (B, S, V). fp32 reuses a tied embedding table in place (Gemm transB, no copy);
        quantized graphs store the head as its own MatMulNBits weights (see _quantized_head), or
        as MatMulInteger weights (see _integer_head)."""
        if self.quant is not None and self.quant.head_integer_chunk:
            return self._integer_head(x, weight, self.quant.head_integer_chunk)
        if self.quant is not None:
            return self._quantized_head(x, weight)
        table = tied_table or self.init("lm_head.weight", weight.astype(np.float32))
        flat = self.op("Reshape", x, self.const([-1, weight.shape[1]]))  # (B*S, H)
        logits = self.op("Gemm", flat, table, transB=1)  # (B*S, V)
        batch_seq = self.op("Shape", x, start=0, end=2)
        shape = self.op("Concat", batch_seq, self.const([weight.shape[0]]), axis=0)
        return self.op("Reshape", logits, shape)

    def _quantized_head(self, x: str, weight: np.ndarray) -> str:
        """The head in row blocks of at most HEAD_PART_BYTES weights, logits concatenated.

        MatMulNBits prepacks a weight into a new buffer before onnxruntime frees the
        original, so loading briefly holds both copies of the largest weight: 28 MB for
        SmolLM2's 49k x 576 head, the whole of the peak RSS above steady state. Parts cap it.
        """
        rows = max(1, HEAD_PART_BYTES // weight.shape[1])
        parts = np.array_split(weight, -(-weight.shape[0] // rows))
        if len(parts) == 1:
            return self._matmul_nbits(x, weight, "lm_head")
        logits = [self._matmul_nbits(x, part, "lm_head", f"lm_head.{i}") for i, part in enumerate(parts)]
        return self.op("Concat", *logits, axis=-1)

    def _integer_head(self, x: str, weight: np.ndarray, chunk: int) -> str:
        """x (B, S, K) @ weight.T as MatMulInteger: int8 weights per output channel
        (quantize_channels), x quantized to int8 here with one scale per row per `chunk` inputs.

        One scale per row (per token) costs SmolLM2 1.5 points of top-1 agreement; per 64
        inputs the head is as good as fp32's (benchmarks/README.md). MatMulInteger takes one
        activation zero point, so the scales are applied outside: each chunk of K gets its own
        MatMulInteger on a 2-D (chunk, N) weight (prepacked once; a few MB each, so the load
        peak needs no row parts), and the chunks' sums are scaled and added one by one, never
        held as a (B, S, chunks, N) tensor (900 MB for a 512-token window of SmolLM2).
        """
        n, k = weight.shape
        codes_t, scales = quantize_channels(weight)  # (K, N) uint8, (N,)
        pad = -k % chunk
        if pad:  # zero inputs against zero-code weights (128): adds nothing
            x = self.op("Pad", x, self.const([0, 0, 0, 0, 0, pad]))
            codes_t = np.pad(codes_t, ((0, pad), (0, 0)), constant_values=128)
        pieces = (k + pad) // chunk
        blocked = self.op("Reshape", x, self.const([0, 0, pieces, chunk]))  # (B, S, pieces, chunk)
        absmax = self.op("ReduceMax", self.op("Abs", blocked), axes=[-1], keepdims=1)  # (B, S, pieces, 1)
        absmax = self.op("Max", absmax, self.const(1e-30, np.float32))  # an all-zero chunk: codes 0, not NaN
        scaled = self.op("Round", self.op("Mul", blocked, self.op("Div", self.const(127.0, np.float32), absmax)))
        codes = self.op("Cast", self.op("Add", scaled, self.const(128.0, np.float32)), to=TensorProto.UINT8)
        zero = self.const(128, np.uint8)
        split = self.const([1] * pieces)
        code_parts = self.op("Split", codes, split, axis=2, outputs=pieces) if pieces > 1 else [codes]
        scale_parts = self.op("Split", absmax, split, axis=2, outputs=pieces) if pieces > 1 else [absmax]
        total = None
        for i in range(pieces):
            w = self.init(f"lm_head.{i}.qweight", codes_t[i * chunk:(i + 1) * chunk])  # (chunk, N)
            dot = self.op("MatMulInteger", code_parts[i], w, zero, zero)  # (B, S, 1, N) int32
            part = self.op("Mul", self.op("Cast", dot, to=TensorProto.FLOAT), scale_parts[i])
            total = part if total is None else self.op("Add", total, part)
        logits = self.op("Squeeze", total, self.const([2]))  # (B, S, N)
        return self.op("Mul", logits, self.init("lm_head.scales", scales / 127.0))

    # --- common blocks ----------------------------------------------------------------
    def rms_norm(self, x: str, weight: np.ndarray, eps: float, name: str) -> str:
        return self.op("SimplifiedLayerNormalization", x, self.init(f"{name}.weight", weight.astype(np.float32)),
                       axis=-1, epsilon=float(eps), stash_type=1)

    def skip_norm(self, x: str, delta: str, weight: np.ndarray, bias: np.ndarray | None, eps: float, name: str):
        """The residual add and the next norm in one op: returns (norm(x + delta), x + delta).
        RMSNorm without `bias`, LayerNorm with it."""
        inputs = [x, delta, self.init(f"{name}.weight", weight.astype(np.float32))]
        op = "SkipSimplifiedLayerNormalization"
        if bias is not None:
            op = "SkipLayerNormalization"
            inputs.append(self.init(f"{name}.bias", bias.astype(np.float32)))
        self._counter += 1
        normed, total = f"/{self.name}/{name}/norm", f"/{self.name}/{name}/sum"
        self.nodes.append(helper.make_node(op, inputs, [normed, "", "", total], name=f"/{self.name}/{name}",
                                           domain=MS_DOMAIN, epsilon=float(eps)))
        return normed, total

    def add_norm(self, x: str, delta: str, weight: np.ndarray, bias: np.ndarray, eps: float, name: str) -> str:
        """LayerNorm(x + delta) in plain ops, for encoders, which normalize many rows per call.

        onnxruntime's CPU (Skip)LayerNormalization kernels take ~4.4 ns per element: 2.0 ms
        for 2,400 x 384 on 2 threads, where these ops take 0.43 ms (and 0.43 vs 0.06 ms at 64
        rows). Decoders keep the fused op: a decode step normalizes one row, where op count
        decides. The variance is Mul(d, d), not Pow: onnxruntime's LayerNormFusion matches
        Pow and would put the slow kernel back.
        """
        total = self.op("Add", x, delta)
        centered = self.op("Sub", total, self.op("ReduceMean", total, axes=[-1]))
        variance = self.op("ReduceMean", self.op("Mul", centered, centered), axes=[-1])
        inverse = self.op("Reciprocal", self.op("Sqrt", self.op("Add", variance, self.const(eps, np.float32))))
        normed = self.op("Mul", self.op("Mul", centered, inverse), self.init(f"{name}.weight", weight.astype(np.float32)))
        return self.op("Add", normed, self.init(f"{name}.bias", bias.astype(np.float32)))

    def layer_norm(self, x: str, weight: np.ndarray, bias: np.ndarray, eps: float, name: str) -> str:
        return self.op("LayerNormalization", x, self.init(f"{name}.weight", weight.astype(np.float32)),
                       self.init(f"{name}.bias", bias.astype(np.float32)), axis=-1, epsilon=float(eps))

    def split_heads(self, x: str, heads: int, head_dim: int) -> str:
        """(B, S, heads*D) -> (B, heads, S, D)."""
        shaped = self.op("Reshape", x, self.const([0, 0, heads, head_dim]))
        return self.op("Transpose", shaped, perm=[0, 2, 1, 3])

    def merge_heads(self, x: str, heads: int, head_dim: int) -> str:
        """(B, heads, S, D) -> (B, S, heads*D)."""
        return self.op("Reshape", self.op("Transpose", x, perm=[0, 2, 1, 3]), self.const([0, 0, heads * head_dim]))

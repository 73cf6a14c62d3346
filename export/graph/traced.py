"""The fallback for causal LMs the graph builder does not know: trace the Hugging Face
model itself with torch.onnx, then quantize its MatMuls with the same block scheme.

In: a transformers causal LM (a torch module) and a `QuantSpec` or None (the recipe's
`traced` spec: plain blocks, see export/recipes.py). Out: a graph with the plain decoder
contract of export/graph/causal_lm.py, so the runtime runs it like
a native plain graph (the cache grows by concatenation):
    inputs  input_ids (1, seq) int64; logits_to_keep () int64;
            past.{i}.key / past.{i}.value (1, kv_heads, past, head_dim)
    outputs logits (1, logits_to_keep, vocab); present.{i}.key / .value (1, kv_heads, past + seq, head_dim)

Why not optimum: its ONNX exporter now lives in optimum-onnx, whose only release (0.1.0)
pins transformers < 4.58, and the exporter needs transformers 5. Why the TorchScript
exporter (`dynamo=False`): the dynamo one needs onnxscript, one more dependency for the
same graph. The trace is checked against the eager model before it is used.
"""

from __future__ import annotations

import inspect
import io
from dataclasses import replace

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edge.errors import ExportError
from edge.manifest import GraphSpec, KVLayout, ModelConfig
from export.graph import Graph
from export.graph.builder import MS_DOMAIN, OPSET
from export.quantize import QuantSpec, quantize_matmul_weight

TRACE_PAST, TRACE_SEQ = 5, 3  # example lengths: both > 1, so neither axis is traced as a constant
BUILDER = "torch.onnx (traced Hugging Face model)"


def cache_shape(module) -> tuple[int, int, int]:
    """(layers, kv_heads, head_dim) from one real forward pass: the config may not say."""
    import torch

    with torch.no_grad():
        out = module(input_ids=torch.zeros((1, 1), dtype=torch.long), use_cache=True)
    layers = getattr(out.past_key_values, "layers", None)
    keys = [getattr(layer, "keys", None) for layer in layers or []]
    if not keys or any(k is None or k.dim() != 4 for k in keys):
        raise ExportError(f"{type(module).__name__} keeps a cache edge cannot hold (not per-layer keys and "
                          "values). Use a supported architecture.")
    return len(keys), keys[0].shape[1], keys[0].shape[3]


def with_cache_shape(model: ModelConfig, module) -> ModelConfig:
    """The manifest's KV shapes as the model's cache really has them."""
    layers, kv_heads, head_dim = cache_shape(module)
    return replace(model, num_layers=layers, num_kv_heads=kv_heads, head_dim=head_dim)


def build_traced(module, quant: QuantSpec | None, file: str) -> Graph:
    layers, kv_heads, head_dim = cache_shape(module)
    kv = KVLayout(shared_buffer=False)
    past = [name.format(layer=i) for i in range(layers) for name in (kv.past_key, kv.past_value)]
    present = [name.format(layer=i) for i in range(layers) for name in (kv.present_key, kv.present_value)]
    proto = _trace(module, layers, kv_heads, head_dim, past, present)
    _check_trace(module, proto, past, (1, kv_heads, 0, head_dim))
    if quant is not None:
        proto = quantize_matmuls(proto, quant)
    inputs = ("input_ids", "logits_to_keep", *past)
    return Graph(proto, GraphSpec(file=file, inputs=inputs, outputs=("logits", *present), kv=kv, builder=BUILDER))


def _with_cache(module, layers: int):
    """A module: forward(input_ids, logits_to_keep, *past) -> (logits, *present), plain tensors."""
    import torch
    from transformers import DynamicCache

    takes_keep = "logits_to_keep" in inspect.signature(module.forward).parameters

    class WithCache(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = module

        def forward(self, input_ids, logits_to_keep, *past):
            cache = DynamicCache(config=module.config)
            for layer in range(layers):
                cache.update(past[2 * layer], past[2 * layer + 1], layer)
            start, seq = past[0].shape[2], input_ids.shape[1]
            positions = torch.arange(start, start + seq).unsqueeze(0)  # (1, seq)
            mask = torch.ones((1, start + seq), dtype=torch.long)  # one unpadded sequence
            keep = torch.arange(seq - logits_to_keep, seq)  # the last logits_to_keep positions
            extra = {"logits_to_keep": keep} if takes_keep else {}
            out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                             past_key_values=cache, use_cache=True, **extra)
            logits = out.logits if takes_keep else out.logits.index_select(1, keep)
            return (logits, *[t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)])

    return WithCache().eval()


def _trace(module, layers: int, kv_heads: int, head_dim: int, past: list[str], present: list[str]) -> onnx.ModelProto:
    import warnings

    import torch

    wrapper = _with_cache(module, layers)
    ids = torch.zeros((1, TRACE_SEQ), dtype=torch.long)
    keep = torch.tensor(TRACE_SEQ)
    cache = [torch.zeros((1, kv_heads, TRACE_PAST, head_dim)) for _ in past]
    axes = {"input_ids": {1: "seq"}, "logits": {1: "keep"},
            **{n: {2: "past"} for n in past}, **{n: {2: "total"} for n in present}}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python values; the check below decides
        torch.onnx.export(wrapper, (ids, keep, *cache), buffer, dynamo=False, opset_version=OPSET,
                          input_names=["input_ids", "logits_to_keep", *past],
                          output_names=["logits", *present], dynamic_axes=axes)
    return onnx.load_from_string(buffer.getvalue())


def _check_trace(module, proto: onnx.ModelProto, past: list[str], empty_shape: tuple) -> None:
    """The graph must give the eager model's logits, fed in chunks through its own cache: a
    trace that froze a length or a position (it happens) is caught here, not in use."""
    import onnxruntime as ort
    import torch

    ids = (np.arange(6, dtype=np.int64) * 7 + 1)[None] % module.config.vocab_size  # (1, 6)
    with torch.no_grad():
        want = module(input_ids=torch.from_numpy(ids)).logits.numpy()  # (1, 6, vocab)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    cache, got = [np.zeros(empty_shape, np.float32)] * len(past), []
    for chunk in (ids[:, :3], ids[:, 3:4], ids[:, 4:]):
        feeds = {"input_ids": chunk, "logits_to_keep": np.array(chunk.shape[1], np.int64), **dict(zip(past, cache))}
        logits, *cache = session.run(None, feeds)
        got.append(logits)
    error = np.abs(np.concatenate(got, axis=1) - want).max()
    if error > 1e-3 * max(1.0, np.abs(want).max()):
        raise ExportError(f"tracing {type(module).__name__} gave a graph that disagrees with the model "
                          f"(max logit error {error:.3g}). Use a supported architecture.")


def quantize_matmuls(proto: onnx.ModelProto, quant: QuantSpec) -> onnx.ModelProto:
    """Every MatMul whose right input is a 2-D float initializer (K, N) becomes MatMulNBits;
    the rest of the graph is untouched."""
    graph = proto.graph
    weights = {t.name: t for t in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    nodes, dropped = [], set()
    for node in graph.node:
        tensor = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if tensor is None or len(tensor.dims) != 2 or tensor.data_type != onnx.TensorProto.FLOAT:
            nodes.append(node)
            continue
        nodes.append(_matmul_nbits(graph, node, numpy_helper.to_array(tensor).T, quant))
        if uses[tensor.name] == 1:
            dropped.add(tensor.name)
    kept = [t for t in graph.initializer if t.name not in dropped]
    del graph.node[:], graph.initializer[:]
    graph.node.extend(nodes)
    graph.initializer.extend(kept)
    if all(o.domain != MS_DOMAIN for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return proto


def _matmul_nbits(graph: onnx.GraphProto, node: onnx.NodeProto, weight: np.ndarray, quant: QuantSpec):
    """weight (N, K) = the MatMul's (K, N) initializer transposed."""
    q = quantize_matmul_weight(weight, quant)
    base = node.output[0].replace("/", "_").strip("_")
    names = [f"{base}.qweight", f"{base}.scales"]
    arrays = [q.packed, q.scales]
    if q.zero_points is not None:
        names.append(f"{base}.zero_points")
        arrays.append(q.zero_points)
    graph.initializer.extend(numpy_helper.from_array(a, n) for a, n in zip(arrays, names))
    n, k = weight.shape
    return helper.make_node("MatMulNBits", [node.input[0], *names], list(node.output), name=f"{node.name}_nbits",
                            domain=MS_DOMAIN, K=k, N=n, bits=quant.bits, block_size=quant.block_size,
                            accuracy_level=quant.accuracy_level)

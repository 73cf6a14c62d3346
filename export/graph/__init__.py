"""to_onnx: Hugging Face weights -> an ONNX graph built op by op (no tracing).

Building the graph ourselves keeps it small and predictable: fused QKV and gate/up
projections, grouped-query attention without repeating K/V, logits for the last
position only while generating, and the I/O names the manifest records.
"""

from __future__ import annotations

import onnx

from edge.manifest import GraphSpec, KVLayout, ModelConfig
from export.graph import gpt2, llama
from export.graph.builder import GraphBuilder
from export.graph.causal_lm import can_fuse, graph_spec
from export.quantize import QuantSpec

MODEL_FILE = "model.onnx"
INSPECT_FILE = "inspect.onnx"
_DECODERS = {"llama": llama.build, "qwen2": llama.build, "gpt2": gpt2.build}


def build_decoder(model: ModelConfig, weights, config, quant: QuantSpec | None) -> tuple[onnx.ModelProto, GraphSpec]:
    """The generation graph (fused attention where onnxruntime's kernel allows it)."""
    g, kv = _decoder(model, weights, config, quant, capture_attention=False)
    return g.model(), graph_spec(g, kv, MODEL_FILE)


def build_inspection(model: ModelConfig, weights, config, quant: QuantSpec | None) -> tuple[onnx.ModelProto, GraphSpec, dict]:
    """The same decoder in plain ops that also outputs attention.{layer} (B, H, S, T), and
    the builder's `tables` (which initializers hold the embeddings)."""
    g, kv = _decoder(model, weights, config, quant, capture_attention=True)
    return g.model(), graph_spec(g, kv, INSPECT_FILE), g.tables


def _decoder(model: ModelConfig, weights, config, quant: QuantSpec | None, capture_attention: bool) -> tuple[GraphBuilder, KVLayout]:
    g = GraphBuilder("decoder", quant, capture_attention)
    kv = KVLayout(shared_buffer=can_fuse(g, model))
    _DECODERS[model.architecture](g, model, weights, config, kv)
    g.outputs.sort(key=lambda o: o.name != "logits")  # logits first, then the cache
    return g, kv

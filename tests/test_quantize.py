"""Block quantization against hand-computed values and a numpy matmul oracle."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto

from export.graph import builder
from export.graph.builder import GraphBuilder
from export.quantize import QuantSpec, dequantize_matmul_weight, quantize_embedding, quantize_matmul_weight


def test_symmetric_8bit_block_by_hand():
    # block [-1.0, 0.5]: scale 1/127, codes round(w / scale) + 128 = [1, 192] (63.5 rounds to even 64)
    q = quantize_matmul_weight(np.array([[-1.0, 0.5]], np.float32), QuantSpec(bits=8, block_size=2, symmetric=True))
    np.testing.assert_allclose(q.scales, [1 / 127], rtol=1e-6)
    assert q.packed.tolist() == [[[1, 192]]]
    assert q.zero_points is None


def test_asymmetric_8bit_block_by_hand():
    # block [0, 1, 2, 3]: range [0, 3] (0 always included), scale 3/255, zero point 0
    q = quantize_matmul_weight(np.array([[0.0, 1.0, 2.0, 3.0]], np.float32), QuantSpec(bits=8, block_size=4))
    np.testing.assert_allclose(q.scales, [3 / 255], rtol=1e-6)
    assert q.packed.tolist() == [[[0, 85, 170, 255]]]
    assert q.zero_points.tolist() == [0]


@pytest.mark.parametrize("spec", [QuantSpec(bits=8), QuantSpec(bits=8, symmetric=True), QuantSpec(bits=4),
                                  QuantSpec(bits=4, block_min=True)])
def test_round_trip_error_is_at_most_half_a_step(spec):
    w = np.random.default_rng(0).normal(size=(48, 100)).astype(np.float32)  # K not a multiple of 32
    q = quantize_matmul_weight(w, spec)
    back = dequantize_matmul_weight(q, w.shape, spec)
    step = np.repeat(q.scales.reshape(48, -1), spec.block_size, axis=1)[:, :100]
    assert np.all(np.abs(back - w) <= step / 2 + 1e-6)


def test_block_min_reproduces_q4_1_blocks_exactly():
    # GGUF Q4_1: each block of 32 is d * q + m with q in 0..15 (0 and 15 both occur)
    rng = np.random.default_rng(3)
    q = rng.integers(0, 16, size=(8, 4, 32)).astype(np.float32)
    q[..., 0], q[..., 1] = 0, 15
    d, m = rng.uniform(0.001, 0.02, size=(8, 4, 1)), rng.uniform(-0.2, 0.0, size=(8, 4, 1))
    w = (d * q + m).astype(np.float32).reshape(8, 128)
    spec = QuantSpec(bits=4, block_min=True)
    quantized = quantize_matmul_weight(w, spec)
    np.testing.assert_array_equal(quantized.packed & 0x0F, q[..., 0::2].astype(np.uint8))
    np.testing.assert_allclose(dequantize_matmul_weight(quantized, w.shape, spec), w, rtol=0, atol=1e-7)


def test_for_weight_keeps_named_weights_at_8_bits():
    spec = QuantSpec(bits=4, block_min=True, head_symmetric=True, keep_8bit=("down_proj", "layers.0."))
    assert spec.for_weight("model.layers.3.mlp.down_proj") == QuantSpec(
        bits=8, head_symmetric=True, keep_8bit=("down_proj", "layers.0."))
    assert spec.for_weight("model.layers.0.self_attn.qkv_proj").bits == 8
    assert spec.for_weight("model.layers.10.self_attn.qkv_proj") is spec
    head = spec.for_weight("lm_head")
    assert (head.bits, head.symmetric, head.block_min) == (8, True, False)


def test_for_weight_block_sizes_by_name_first_match():
    spec = QuantSpec(bits=8, block_sizes=(("mlp.", 64), ("lm_head", 16), ("layers.", 128)))
    assert spec.for_weight("model.layers.3.mlp.down_proj").block_size == 64
    assert spec.for_weight("model.layers.3.self_attn.qkv_proj").block_size == 128
    assert spec.for_weight("lm_head").block_size == 16
    assert spec.for_weight("other").block_size == 32
    assert "blocks of 64: mlp." in spec.describe()


@pytest.mark.parametrize("spec", [QuantSpec(bits=8, accuracy_level=0), QuantSpec(bits=4, accuracy_level=0),
                                  QuantSpec(bits=4, accuracy_level=0, block_min=True),
                                  QuantSpec(bits=8, accuracy_level=0, block_min=True)])
def test_matmulnbits_layout_matches_numpy(spec):
    """onnxruntime's kernel reads our packed layout as the weights we meant."""
    rng = np.random.default_rng(1)
    w = rng.normal(size=(40, 64)).astype(np.float32)  # (out, in)
    x = rng.normal(size=(1, 3, 64)).astype(np.float32)
    g = GraphBuilder("t", spec)
    g.input("x", TensorProto.FLOAT, [1, 3, 64])
    g.output(g.linear("x", w, "w"), "y", TensorProto.FLOAT, [1, 3, 40])
    y = ort.InferenceSession(g.model().SerializeToString()).run(None, {"x": x})[0]
    want = x @ dequantize_matmul_weight(quantize_matmul_weight(w, spec), w.shape, spec).T
    np.testing.assert_allclose(y, want, atol=1e-4, rtol=1e-4)


def test_quantized_head_in_row_parts_gives_the_whole_logits(monkeypatch):
    """A head over HEAD_PART_BYTES is stored as several MatMulNBits (load holds one part's
    two copies, not the whole head's); the logits are the whole head's, in vocabulary order."""
    monkeypatch.setattr(builder, "HEAD_PART_BYTES", 30 * 64)  # 30 rows of K=64 per part -> 100 rows in 4
    rng = np.random.default_rng(4)
    w = rng.normal(size=(100, 64)).astype(np.float32)  # (vocab, hidden)
    x = rng.normal(size=(1, 2, 64)).astype(np.float32)
    spec = QuantSpec(bits=8, accuracy_level=0)
    g = GraphBuilder("t", spec)
    g.input("x", TensorProto.FLOAT, [1, 2, 64])
    g.output(g.lm_head("x", w, None), "logits", TensorProto.FLOAT, [1, 2, 100])
    model = g.model()
    assert [n.op_type for n in model.graph.node].count("MatMulNBits") == 4
    logits = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    want = x @ np.concatenate([dequantize_matmul_weight(quantize_matmul_weight(part, spec), part.shape, spec)
                               for part in np.array_split(w, 4)]).T
    np.testing.assert_allclose(logits, want, atol=1e-4, rtol=1e-4)


def test_embedding_int8_rows():
    table = np.random.default_rng(2).normal(size=(10, 64)).astype(np.float32)
    codes, scales = quantize_embedding(table, 32)
    back = (codes.reshape(10, 2, 32) * scales[..., None]).reshape(10, 64)
    assert np.all(np.abs(back - table) <= np.repeat(scales, 32, axis=1) / 2 + 1e-7)

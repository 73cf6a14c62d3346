"""Block quantization against hand-computed values and a numpy matmul oracle."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto

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


@pytest.mark.parametrize("spec", [QuantSpec(bits=8), QuantSpec(bits=8, symmetric=True), QuantSpec(bits=4)])
def test_round_trip_error_is_at_most_half_a_step(spec):
    w = np.random.default_rng(0).normal(size=(48, 100)).astype(np.float32)  # K not a multiple of 32
    q = quantize_matmul_weight(w, spec)
    back = dequantize_matmul_weight(q, w.shape, spec)
    step = np.repeat(q.scales.reshape(48, -1), spec.block_size, axis=1)[:, :100]
    assert np.all(np.abs(back - w) <= step / 2 + 1e-6)


@pytest.mark.parametrize("spec", [QuantSpec(bits=8, accuracy_level=0), QuantSpec(bits=4, accuracy_level=0)])
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


def test_embedding_int8_rows():
    table = np.random.default_rng(2).normal(size=(10, 64)).astype(np.float32)
    codes, scales = quantize_embedding(table, 32)
    back = (codes.reshape(10, 2, 32) * scales[..., None]).reshape(10, 64)
    assert np.all(np.abs(back - table) <= np.repeat(scales, 32, axis=1) / 2 + 1e-7)

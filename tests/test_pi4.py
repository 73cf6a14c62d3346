"""The pi4 recipe (4-bit layers, MatMulInteger LM head) and `--target`: the head's graph
against its own arithmetic in numpy, the tiny Llama's logits against transformers, the
manifest's target and CPU features, and `edge export` / `edge pull --target`."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

import edge
from edge.bundle import open_bundle
from edge.cli import main
from edge.engine.decoder_runner import DecoderRunner
from edge.errors import ExportError
from edge.manifest import Manifest
from edge.tools import doctor
from export import recipes
from export.graph.builder import GraphBuilder
from export.pipeline import export_model
from export.quantize import quantize_channels
from hf_oracle import hf_logits
from test_doctor import CPUINFO, cpu


@pytest.fixture(scope="module")
def tiny_llama_bundle_pi4(tiny_llama_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "llama-pi4"
    export_model(str(tiny_llama_dir), out, target="pi4")
    return out


def _head_numpy(x: np.ndarray, weight: np.ndarray, chunk: int) -> np.ndarray:
    """The integer head's arithmetic, independently: x (rows, K) in chunks of `chunk` inputs,
    each quantized to int8 by its own absmax, times the int8 weights per channel."""
    codes_t, scales = quantize_channels(weight)  # (K, N) uint8, (N,)
    w = codes_t.astype(np.int64) - 128  # (K, N)
    out = np.zeros((x.shape[0], weight.shape[0]))
    for start in range(0, x.shape[1], chunk):
        part = x[:, start:start + chunk]  # (rows, chunk)
        absmax = np.maximum(np.abs(part).max(axis=1, keepdims=True), 1e-30)
        q = np.round(part * (127.0 / absmax)).astype(np.int64)
        out += (q @ w[start:start + chunk]) * absmax
    return out * scales / 127.0


@pytest.mark.parametrize("k", [64, 160, 576])  # one chunk; padded to 192; SmolLM2's 9 chunks
def test_integer_head_is_its_arithmetic_and_close_to_float(k):
    rng = np.random.default_rng(k)
    weight = rng.normal(size=(300, k)).astype(np.float32)  # (N, K)
    x = rng.normal(size=(2, 3, k)).astype(np.float32)
    x[0, 1, :] = 0.0  # an all-zero row: zero logits, not NaN
    x[1, 2, 5] = 40.0  # an outlier: only its own chunk's scale grows
    g = GraphBuilder("head", recipes.PI4_DECODER)
    g.output(g.lm_head(g.input("x", TensorProto.FLOAT, ["b", "s", k]), weight, None), "y", TensorProto.FLOAT,
             ["b", "s", 300])
    assert sum(node.op_type == "MatMulInteger" for node in g.nodes) == -(-k // 64)
    got = ort.InferenceSession(g.model().SerializeToString()).run(None, {"x": x})[0]  # (2, 3, 300)
    np.testing.assert_allclose(got.reshape(6, -1), _head_numpy(x.reshape(6, -1), weight, 64), rtol=1e-4, atol=1e-4)
    want = x @ weight.T  # int8 steps of ~1/127 of each chunk's and channel's range: ~1% off
    assert np.abs(got - want).mean() / np.abs(want).mean() < 0.02


def test_pi4_logits_close_to_transformers(tiny_llama_bundle_pi4, tiny_llama_dir):
    # The layers are the int4 bundle's (tests/test_int4.py: ~10% logit noise on random
    # weights, off any 4-bit grid); the head adds int8 rounding of weights and activations.
    ids = np.random.default_rng(2).integers(0, 49152, 40).tolist()
    got, want = DecoderRunner.open(open_bundle(tiny_llama_bundle_pi4)).logits(ids), hf_logits(tiny_llama_dir, ids)
    error = float(np.abs(got - want).mean() / np.abs(want).mean())
    assert error < 0.2, f"pi4 logits differ from fp32 by {error:.1%} on average"
    assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.7


def test_pi4_step_by_step_equals_full_sequence(tiny_llama_bundle_pi4):
    """Each row is quantized on its own, so prefill and decode steps give the same logits."""
    decoder = DecoderRunner.open(open_bundle(tiny_llama_bundle_pi4))
    ids = np.random.default_rng(1).integers(0, 49152, 30).tolist()
    full = decoder.logits(ids)  # (30, vocab)
    decoder.reset()
    steps = [decoder.prefill(ids[:10])] + [decoder.decode_step(t) for t in ids[10:]]
    np.testing.assert_allclose(np.stack(steps), full[9:], atol=1e-4, rtol=0)


def test_pi4_graph_has_no_8bit_matmulnbits(tiny_llama_bundle_pi4):
    """8-bit MatMulNBits is what dequantizes per call without dot product: none may be left."""
    graph = onnx.load(str(tiny_llama_bundle_pi4 / "model.onnx"), load_external_data=False).graph
    bits = {attr.i for node in graph.node if node.op_type == "MatMulNBits" for attr in node.attribute
            if attr.name == "bits"}
    assert bits == {4}
    assert any(node.op_type == "MatMulInteger" for node in graph.node)


def test_pi4_manifest_records_target_and_cpu_features(tiny_llama_bundle_pi4):
    q = Manifest.read(tiny_llama_bundle_pi4).quantization
    assert (q.scheme, q.recipe, q.target) == ("int4", "pi4", "pi4")
    assert q.cpu_features == {"x86_64": ("avx2",), "aarch64": ("asimd",)}
    assert "LM head MatMulInteger" in q.method and "per 64 inputs" in q.method
    assert Manifest.from_dict(json.loads(Manifest.read(tiny_llama_bundle_pi4).to_json())).quantization == q


def test_int8_and_fp32_manifests_record_their_needs(tiny_llama_bundle_int8, tiny_llama_bundle_fp32):
    int8 = Manifest.read(tiny_llama_bundle_int8).quantization
    assert (int8.recipe, int8.target, int8.cpu_features) == ("int8", "", {"x86_64": ("avx2",), "aarch64": ("asimddp",)})
    fp32 = Manifest.read(tiny_llama_bundle_fp32).quantization
    assert (fp32.recipe, fp32.cpu_features) == ("none", {})


@pytest.mark.parametrize("cpuinfo, warned", [("rpi4-cortex-a72", False), ("rpi5-cortex-a76", False),
                                             ("x86-zen3-epyc", False)])
def test_pi4_bundle_loads_quietly_where_its_kernels_pack(tiny_llama_bundle_pi4, monkeypatch, cpuinfo, warned):
    monkeypatch.setattr(doctor, "host_cpu", lambda: cpu(cpuinfo))
    monkeypatch.setattr(doctor, "_WARNED", set())
    assert doctor.quantization_warning(Manifest.read(tiny_llama_bundle_pi4), cpu(cpuinfo)) is None
    edge.load(tiny_llama_bundle_pi4)


@pytest.mark.parametrize("target, quantize, recipe", [
    ("pi4", None, "pi4"), ("pi5", None, "int8"), ("portable", None, "pi4"), ("pi4", "pi4", "pi4"),
    (None, None, "int8"), (None, "int4", "int4"),
])
def test_targets_pick_recipes(target, quantize, recipe):
    assert recipes.choose(quantize, target).name == recipe


@pytest.mark.parametrize("cpuinfo, recipe", [
    ("rpi4-cortex-a72", "pi4"), ("rpi5-cortex-a76", "int8"), ("x86-zen4-epyc", "int8"), ("x86-zen3-epyc", "int8"),
])
def test_native_reads_this_cpu(monkeypatch, cpuinfo, recipe):
    monkeypatch.setattr(doctor, "host_cpu", lambda: cpu(cpuinfo))
    assert recipes.choose(None, "native").name == recipe


@pytest.mark.parametrize("name", sorted(path.stem for path in CPUINFO.glob("*.txt")))
def test_the_fitting_recipe_has_what_it_needs(name):
    """doctor's choice and the recipes' recorded needs agree on every recorded CPU."""
    chosen = recipes.RECIPES[doctor.fitting_recipe(cpu(name))]
    assert set(chosen.needs.get(cpu(name).arch, ())) <= cpu(name).features


def test_target_and_quantize_that_disagree_or_unknown():
    with pytest.raises(ExportError, match="--target pi4 exports --quantize pi4, not int8"):
        recipes.choose("int8", "pi4")
    with pytest.raises(ExportError, match="--target must be one of pi4, pi5, portable, native"):
        recipes.choose(None, "pi3")


def test_cli_export_and_pull_take_target(tiny_llama_dir, tmp_path, monkeypatch, capsys, no_network):
    assert main(["export", str(tiny_llama_dir), "-o", str(tmp_path / "a"), "--target", "pi5", "-q", "pi4"]) == 1
    assert "--target pi5 exports --quantize int8" in capsys.readouterr().err and not (tmp_path / "a").exists()
    monkeypatch.setenv("EDGE_HOME", str(tmp_path))
    assert main(["pull", str(tiny_llama_dir), "--target", "pi4"]) == 0
    name = capsys.readouterr().out.strip()
    assert name == f"{tiny_llama_dir.name.lower()}-pi4"
    q = edge.load(name).manifest.quantization
    assert (q.recipe, q.target) == ("pi4", "pi4")
    assert main(["models", "show", name]) == 0
    assert "recipe pi4 for target pi4; needs avx2 on x86_64, asimd on aarch64" in capsys.readouterr().out


def test_a_schema_2_manifest_without_the_cpu_fields_still_loads(tiny_llama_bundle_int8):
    data = json.loads(Manifest.read(tiny_llama_bundle_int8).to_json())
    for key in ("recipe", "target", "cpu_features"):
        del data["quantization"][key]
    old = Manifest.from_dict({**data, "schema_version": 2}).quantization
    assert (old.recipe, old.target, old.cpu_features) == ("", "", None)


def test_pi4_keeps_encoders_float(tiny_bert_dir, tmp_path):
    export_model(str(tiny_bert_dir), tmp_path / "bert", target="pi4")
    q = Manifest.read(tmp_path / "bert").quantization
    assert (q.scheme, q.recipe, q.target, q.cpu_features) == ("none", "pi4", "pi4", {})

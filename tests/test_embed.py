"""Sentence embeddings on a tiny random BERT: the graph + pooling against transformers (the
oracle), the manifest's pooling, batching, and every bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import edge
from edge.cli import main
from edge.embeddings.model import EmbeddingModel
from edge.errors import ExportError, InputError
from edge.manifest import Manifest
from export.pipeline import export_model
from tokenizer_oracle import LINES

TEXTS = ["a cat sat on the mat", "", "Hello, WORLD!", "naïve café 東京", "word " * 300, *LINES[200:240]]


def _oracle(folder, texts: list[str], max_length: int, mode: str = "mean") -> np.ndarray:
    """transformers' hidden states pooled by hand, as sentence-transformers pools them."""
    from transformers import AutoModel, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    batch = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state  # (B, S, H)
    if mode == "cls":
        return hidden[:, 0].numpy()
    mask = batch["attention_mask"][..., None].float()
    return ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).numpy()


def test_fp32_matches_transformers_after_pooling(tiny_bert_bundle_fp32, tiny_bert_dir):
    model = edge.load(tiny_bert_bundle_fp32)
    assert isinstance(model, EmbeddingModel) and model.dim == 64
    got = model.embed(TEXTS, batch_size=7)
    assert got.shape == (len(TEXTS), 64) and got.dtype == np.float32
    np.testing.assert_allclose(got, _oracle(tiny_bert_dir, TEXTS, model.max_length), atol=1e-4, rtol=0)


def test_int8_stays_close_to_fp32(tiny_bert_bundle_fp32, tiny_bert_bundle_int8):
    ref, quant = edge.load(tiny_bert_bundle_fp32).embed(TEXTS), edge.load(tiny_bert_bundle_int8).embed(TEXTS)
    cosine = (ref * quant).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(quant, axis=1)
    assert cosine.min() > 0.99
    manifest = Manifest.read(tiny_bert_bundle_int8)
    assert manifest.quantization.scheme == "int8"
    assert 0.99 < manifest.quality.cosine_min <= manifest.quality.cosine_mean <= 1.0 + 1e-6


def test_plain_encoder_defaults_to_mean_pooling_and_says_so(tiny_bert_bundle_int8, capsys):
    pooling = Manifest.read(tiny_bert_bundle_int8).pooling
    assert (pooling.mode, pooling.normalize, pooling.max_length, pooling.source) == ("mean", False, 256, "default")
    assert main(["info", str(tiny_bert_bundle_int8)]) == 0
    assert "pooling: mean, max 256 tokens (default: no sentence-transformers files)" in capsys.readouterr().out


def test_batching_and_order_do_not_change_vectors(tiny_bert_bundle_fp32):
    model = edge.load(tiny_bert_bundle_fp32)
    whole = model.embed(TEXTS, batch_size=len(TEXTS))
    one_by_one = np.concatenate([model.embed([t], batch_size=1) for t in TEXTS])
    np.testing.assert_allclose(model.embed(TEXTS, batch_size=3), whole, atol=1e-5)
    np.testing.assert_allclose(one_by_one, whole, atol=1e-5)
    np.testing.assert_allclose(model.embed(TEXTS[::-1])[::-1], whole, atol=1e-5)


def test_long_text_is_truncated_to_max_length(tiny_bert_bundle_fp32):
    model = edge.load(tiny_bert_bundle_fp32)
    encodings = model.tokenize(["word " * 300, "short"])
    assert [len(e.ids) for e in encodings] == [model.max_length, 3]
    assert [e.truncated for e in encodings] == [True, False]
    np.testing.assert_allclose(model.embed(["word " * 300]), model.embed(["word " * 1000]), atol=1e-6)


def test_edge_case_inputs(tiny_bert_bundle_int8):
    model = edge.load(tiny_bert_bundle_int8)
    assert model.embed([]).shape == (0, model.dim)
    assert np.isfinite(model.embed(["", " "])).all()
    with pytest.raises(InputError, match="list of strings, got str. Wrap one text in a list"):
        model.embed("a text")
    with pytest.raises(InputError, match="text 1 is a int, not a string"):
        model.embed(["ok", 3])
    with pytest.raises(InputError, match="text 0 is a NoneType"):
        model.embed([None])
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="batch_size must be a positive integer"):
            model.embed(["ok"], batch_size=bad)


def _with_sentence_transformers_files(folder, tmp_path, pooling: dict, normalize: bool, max_length: int):
    copy = tmp_path / "st"
    shutil.copytree(folder, copy)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (copy / "modules.json").write_text(json.dumps(modules))
    (copy / "1_Pooling").mkdir()
    (copy / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 64, **pooling}))
    (copy / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_length}))
    return copy


def test_cls_pooling_normalised_from_sentence_transformers_files(tiny_bert_dir, tmp_path, no_network):
    folder = _with_sentence_transformers_files(tiny_bert_dir, tmp_path, {"pooling_mode_cls_token": True}, True, 16)
    manifest = export_model(str(folder), tmp_path / "cls", quantize="none")
    assert (manifest.pooling.mode, manifest.pooling.normalize, manifest.pooling.max_length,
            manifest.pooling.source) == ("cls", True, 16, "sentence-transformers")
    got = edge.load(tmp_path / "cls").embed(TEXTS)
    expected = _oracle(folder, TEXTS, 16, mode="cls")
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_unsupported_pooling_is_refused(tiny_bert_dir, tmp_path):
    folder = _with_sentence_transformers_files(tiny_bert_dir, tmp_path, {"pooling_mode_max_tokens": True}, False, 16)
    with pytest.raises(ExportError, match="pooling .* is not supported; edge pools by mean or CLS"):
        export_model(str(folder), tmp_path / "out", quantize="none")
    assert not (tmp_path / "out").exists()


def test_task_is_detected_and_checked(tiny_bert_dir, tmp_path):
    with pytest.raises(ExportError, match="bert models export as --task feature-extraction"):
        export_model(str(tiny_bert_dir), tmp_path / "out", task="text-generation")


def test_hub_source_reads_sentence_transformers_files_from_the_hub(tiny_bert_dir, tmp_path, monkeypatch):
    """For a hub id only those small files are fetched (the weights came through transformers)."""
    import huggingface_hub
    from transformers import AutoConfig

    from export.architectures import model_config
    from export import sentence_transformers
    from export.source import Source

    folder = _with_sentence_transformers_files(tiny_bert_dir, tmp_path, {"pooling_mode_cls_token": True}, True, 16)
    asked = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo, allow_patterns, local_files_only=False:
                        asked.append((repo, allow_patterns)) or str(folder))
    src = Source("someone/tiny-bert", "feature-extraction", AutoConfig.from_pretrained(folder), {}, "", None)
    found = sentence_transformers.folder(src)
    assert asked == [("someone/tiny-bert", sentence_transformers.FILES)] and found == folder
    pooling = sentence_transformers.read_pooling(found, model_config(src.config, src.task))
    assert (pooling.mode, pooling.normalize, pooling.max_length) == ("cls", True, 16)

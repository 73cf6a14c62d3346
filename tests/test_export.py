"""The exporter: what the manifest records, and how it fails (clearly, leaving nothing behind)."""

from __future__ import annotations

import json

import pytest

from edge.cli import main
from edge.errors import ExportError
from edge.manifest import Manifest
from export import quality, writer
from export.pipeline import export_model
from export.source import shareable_name


def test_llama_manifest_records_what_the_runtime_needs(tiny_llama_bundle_int8, tiny_llama_dir):
    from transformers import AutoConfig, AutoTokenizer

    m = Manifest.read(tiny_llama_bundle_int8)
    config = AutoConfig.from_pretrained(tiny_llama_dir)
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    assert (m.model.architecture, m.model.task) == ("llama", "text-generation")
    assert (m.model.num_layers, m.model.num_heads, m.model.num_kv_heads) == (
        config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads)
    assert m.model.head_dim == config.hidden_size // config.num_attention_heads
    assert m.model.positional.kind == "rotary" and m.model.positional.rope_theta == 10000.0
    # int8: the runtime looks the token rows up itself, in the table the inspection graph stores
    assert m.graph.inputs[:2] == ("inputs_embeds", "logits_to_keep")
    assert (m.inspect.embedding.dtype, m.inspect.embedding.shape) == ("int8", (config.vocab_size, config.hidden_size))
    assert "past.1.value" in m.graph.inputs and "present.1.value" in m.graph.outputs
    assert m.tokenizer.eos_token_ids == (tok.eos_token_id,) and m.tokenizer.chat_template == tok.chat_template
    assert m.quantization.scheme == "int8" and m.quantization.block_size == 32
    assert m.quality.perplexity > 0 and m.quality.perplexity_fp32 > 0
    assert 0 <= m.quality.top1_agreement <= 1 and 0 <= m.quality.greedy_agreement <= 1
    # the source by its own name: no path of the exporting machine goes into a shared bundle
    assert m.source == tiny_llama_dir.name
    assert tiny_llama_dir.parent.name not in (tiny_llama_bundle_int8 / "manifest.json").read_text()


def test_max_context_caps_the_window(tiny_gpt2_dir, tmp_path):
    manifest = export_model(str(tiny_gpt2_dir), tmp_path / "b", quantize="none", max_context=64)
    assert manifest.model.context_length == 64


def test_unknown_architecture_names_the_supported_ones(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "architectures": ["T5Model"]}))
    with pytest.raises(ExportError, match=r"architecture 't5' is not supported. edge exports: Llama family"):
        export_model(str(tmp_path), tmp_path / "out")
    assert main(["export", str(tmp_path), "-o", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.count("error: architecture 't5'") == 1
    assert not (tmp_path / "out").exists()


def test_hub_id_offline_is_one_clear_line(tmp_path, offline, capsys, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # nothing cached: it must ask the hub
    assert main(["export", "HuggingFaceTB/SmolLM2-135M-Instruct", "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: could not fetch 'HuggingFaceTB/SmolLM2-135M-Instruct'")
    assert "local folder or a .gguf file" in err[-1] and offline


def test_hub_id_fails_at_once_when_the_hub_does_not_answer(tmp_path, capsys, monkeypatch):
    """A hub that never answers (a stuck name lookup): one line within the probe's bound,
    and the hub client is never asked to download."""
    import socket
    import time

    from export import source

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(source, "HUB_PROBE_SECONDS", 0.5)
    def stuck(*args, **kwargs):
        time.sleep(30)
        raise OSError("no answer")

    for name in ("create_connection", "getaddrinfo"):
        monkeypatch.setattr(socket, name, stuck)
    monkeypatch.setattr(socket.socket, "connect", stuck)
    started = time.monotonic()
    assert main(["export", "HuggingFaceTB/SmolLM2-135M-Instruct", "-o", str(tmp_path / "out")]) == 1
    assert time.monotonic() - started < 5
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: could not fetch 'HuggingFaceTB/SmolLM2-135M-Instruct'")


@pytest.mark.parametrize("args, message", [
    (["--quantize", "int3"], "--quantize must be one of"),
    (["--max-context", "0"], "--max-context must be positive"),
])
def test_bad_options(tiny_gpt2_dir, tmp_path, capsys, args, message):
    assert main(["export", str(tiny_gpt2_dir), "-o", str(tmp_path / "out"), *args]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_existing_output_is_not_overwritten(tiny_gpt2_bundle_fp32):
    with pytest.raises(ExportError, match="already exists"):
        export_model(str(tiny_gpt2_bundle_fp32), tiny_gpt2_bundle_fp32)


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, RuntimeError])
def test_interrupted_export_leaves_nothing(tiny_gpt2_dir, tmp_path, monkeypatch, interrupt):
    def fail(*args, **kwargs):
        raise interrupt("stopped during the quality check")

    monkeypatch.setattr(quality, "measure", fail)
    with pytest.raises(interrupt):
        export_model(str(tiny_gpt2_dir), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_export_racing_another_to_the_same_place_says_so(tiny_gpt2_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    make_readable = writer._make_readable

    def other_export_finishes_first(stage):
        make_readable(stage)
        out.mkdir()
        (out / "manifest.json").write_text("the other export's")

    monkeypatch.setattr(writer, "_make_readable", other_export_finishes_first)
    with pytest.raises(ExportError, match="appeared while exporting"):
        export_model(str(tiny_gpt2_dir), out, quantize="none")
    assert (out / "manifest.json").read_text() == "the other export's"  # the winner's bundle is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # and our staging folder is gone


def test_shareable_name_keeps_no_local_path(tmp_path):
    snapshot = tmp_path / "hub" / "models--HuggingFaceTB--SmolLM2-135M-Instruct" / "snapshots" / "0a1b2c"
    snapshot.mkdir(parents=True)
    blob = tmp_path / "blob-sha256"
    blob.write_text("weights")
    (snapshot / "model.gguf").symlink_to(blob)  # how the hub cache stores files
    assert shareable_name(str(snapshot)) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert shareable_name(str(snapshot / "model.gguf")) == "HuggingFaceTB/SmolLM2-135M-Instruct/model.gguf"
    assert shareable_name(str(tmp_path / "hub" / ".." / "blob-sha256")) == "blob-sha256"
    assert shareable_name("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"  # a hub id


def test_missing_source_paths(tmp_path, capsys):
    assert main(["export", str(tmp_path / "model.gguf"), "-o", str(tmp_path / "o")]) == 1
    assert "GGUF file" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "-o", str(tmp_path / "o")]) == 1
    assert "has no config.json" in capsys.readouterr().err

"""Models by name: -m NAME, EDGE_MODEL=NAME, edge.load(NAME), `edge models` list/show/rm,
`edge pull` into the cache, `edge --version`, `-h`."""

from __future__ import annotations

import json
import shutil
from importlib.metadata import version

import pytest

import edge
from edge.cli import main


@pytest.fixture
def cache(tmp_path, monkeypatch, tiny_llama_bundle_int8, tiny_bert_bundle_int8):
    """An edge cache holding two models by name (copies of the tiny bundles)."""
    monkeypatch.setenv("EDGE_HOME", str(tmp_path))
    monkeypatch.delenv("EDGE_MODEL", raising=False)
    bundles = tmp_path / "bundles"
    shutil.copytree(tiny_llama_bundle_int8, bundles / "tiny-llama")
    shutil.copytree(tiny_bert_bundle_int8, bundles / "tiny-bert")
    return bundles


def test_load_and_generate_by_name(cache, capsys, monkeypatch):
    by_name = edge.load("tiny-llama").generate("Hi there", max_tokens=8)
    assert by_name == edge.load(cache / "tiny-llama").generate("Hi there", max_tokens=8)
    assert main(["generate", "-m", "tiny-llama", "Hi there", "--max-tokens", "8"]) == 0
    assert capsys.readouterr().out == by_name + "\n"
    monkeypatch.setenv("EDGE_MODEL", "tiny-llama")
    assert main(["generate", "Hi there", "--max-tokens", "8"]) == 0
    assert capsys.readouterr().out == by_name + "\n"
    assert edge.load().generate("Hi there", max_tokens=8) == by_name  # no argument: $EDGE_MODEL


def test_unknown_name_is_one_line(cache, capsys):
    assert main(["generate", "-m", "nope", "hi"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no bundle nope" in err[0] and "edge models" in err[0]
    with pytest.raises(edge.EdgeError, match="no bundle nope"):
        edge.load("nope")


def test_models_lists_shows_and_removes(cache, capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert set(rows) == {"tiny-llama", "tiny-bert"}
    assert (rows["tiny-llama"]["kind"], rows["tiny-llama"]["quantization"]) == ("text-generation", "int8")
    assert rows["tiny-bert"]["kind"] == "feature-extraction" and rows["tiny-bert"]["quality"].startswith("cosine")
    assert main(["models"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 2 and table[0].startswith("tiny-bert")
    assert main(["models", "show", "tiny-llama", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["architecture"] == "llama"
    assert main(["models", "rm", "tiny-bert"]) == 0
    assert not (cache / "tiny-bert").exists() and (cache / "tiny-llama").exists()
    assert main(["models", "rm", "tiny-bert"]) == 1
    assert main(["models", "rm", "../bundles"]) == 1  # a name, never a path out of the cache
    assert (cache / "tiny-llama").exists()


def test_pull_exports_into_the_cache_by_name(tmp_path, monkeypatch, tiny_gpt2_dir, capsys, no_network):
    monkeypatch.setenv("EDGE_HOME", str(tmp_path))
    assert main(["pull", str(tiny_gpt2_dir), "--name", "tiny-gpt2", "-q", "none"]) == 0
    assert capsys.readouterr().out.strip() == "tiny-gpt2"
    model = edge.load("tiny-gpt2")
    assert model.manifest.quantization.scheme == "none"
    assert main(["pull", str(tiny_gpt2_dir), "--name", "tiny-gpt2"]) == 1
    assert "exists already" in capsys.readouterr().err


def test_version_and_short_help(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"edge {version('edge-runtime')}"
    assert main(["-h"]) == 0
    assert "Usage: " in (out := capsys.readouterr().out) and "generate" in out
    assert main(["generate", "-h"]) == 0
    assert "--max-tokens" in capsys.readouterr().out


# --- the Python API's shape (issue 16) ---------------------------------------------------


def test_api_keywords_are_explicit_and_typos_list_them(tiny_llama_bundle_int8):
    import inspect

    model = edge.load(tiny_llama_bundle_int8)
    for method in (model.generate, model.stream, model.complete, model.chat, model.chat_session):
        names = inspect.signature(method).parameters
        assert {"max_tokens", "temperature", "top_p", "seed", "stop", "draft"} <= set(names), method.__name__
        assert method.__doc__
    assert inspect.signature(model.generate).parameters["temperature"].default is None  # the bundle's, else greedy
    with pytest.raises(TypeError, match="'temprature'; valid keywords: max_tokens, temperature"):
        model.generate("hi", temprature=0.5)


def test_complete_returns_text_usage_and_finish_reason(tiny_llama_bundle_int8):
    model = edge.load(tiny_llama_bundle_int8)
    done = model.complete("Hi", max_tokens=6, raw=True)
    assert done.text == model.generate("Hi", max_tokens=6, raw=True)
    assert done.finish_reason in ("stop", "length") and 1 <= done.completion_tokens <= 6
    assert done.prompt_tokens == len(model.encode_prompt("Hi", raw=True))


def test_models_are_context_managers(tiny_llama_bundle_int8, tiny_bert_bundle_int8):
    with edge.load(tiny_llama_bundle_int8) as model:
        assert model.generate("Hi", max_tokens=2)
    with pytest.raises(edge.EdgeError, match="closed"):
        model.generate("Hi", max_tokens=2)
    with edge.load(tiny_bert_bundle_int8) as encoder:
        assert encoder.embed(["a cat"]).shape == (1, encoder.dim)
    with pytest.raises(edge.EdgeError, match="closed"):
        encoder.embed(["a cat"])


def test_dir_shows_the_public_api():
    assert dir(edge) == sorted(edge.__all__)
    assert edge.__version__ == version("edge-runtime")
    assert edge.LanguageModel.__name__ == "LanguageModel" and edge.EmbeddingModel.__name__ == "EmbeddingModel"


def test_info_by_name_and_default(cache, capsys, monkeypatch):
    assert main(["info", "tiny-llama"]) == 0
    by_name = capsys.readouterr().out
    assert "llama (text-generation)" in by_name
    monkeypatch.setenv("EDGE_MODEL", "tiny-llama")
    assert main(["info"]) == 0  # no argument: the default model
    assert capsys.readouterr().out == by_name
    monkeypatch.delenv("EDGE_MODEL")
    assert main(["info"]) == 1  # no default model in this cache: one line saying how to make it
    assert "edge pull" in capsys.readouterr().err

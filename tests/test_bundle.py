"""A bundle that is missing, corrupt or inconsistent is refused with one clear line."""

from __future__ import annotations

import json
import shutil

import pytest

import edge
from edge.bundle import open_bundle, sha256
from edge.cli import main
from edge.engine.decoder_runner import DecoderRunner
from edge.errors import BundleError
from edge.manifest import MANIFEST_FILE, SCHEMA_VERSION, Manifest


@pytest.fixture
def bundle(tiny_gpt2_bundle_int8, tmp_path):
    """A private copy each test may damage."""
    return shutil.copytree(tiny_gpt2_bundle_int8, tmp_path / "bundle")


def _edit_manifest(bundle, change):
    path = bundle / MANIFEST_FILE
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _cli_error(capsys, *args) -> str:
    code = main(list(args))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("error: "), (code, err)
    return err[0]


def test_manifest_round_trips(bundle):
    manifest = Manifest.read(bundle)
    assert Manifest.from_dict(json.loads(manifest.to_json())) == manifest
    assert manifest.model.architecture == "gpt2" and manifest.model.positional.kind == "learned"
    # GPT-2's inspection graph shares every layer weight with model.onnx.data; its own data file
    # holds the int8 token table (which the generation graph takes as rows) and the positions
    assert set(manifest.files) == {"model.onnx", "model.onnx.data", "inspect.onnx", "inspect.onnx.data",
                                   "tokenizer.json"}
    assert all(sha256(bundle / name) == digest for name, digest in manifest.files.items())


def test_missing_bundle(tmp_path, capsys):
    with pytest.raises(BundleError, match="not found"):
        open_bundle(tmp_path / "nope")
    assert "not found" in _cli_error(capsys, "info", str(tmp_path / "nope"))


def test_folder_without_manifest(tmp_path, capsys):
    with pytest.raises(BundleError, match="not an edge bundle"):
        open_bundle(tmp_path)
    assert "not an edge bundle" in _cli_error(capsys, "info", str(tmp_path))


def test_corrupt_file_fails_its_checksum(bundle, capsys):
    data = bundle / "model.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="model.onnx.data .* is corrupt"):
        open_bundle(bundle)
    with pytest.raises(BundleError, match="model.onnx.data .* is corrupt"):  # checked while the model opens
        edge.load(bundle)
    assert "corrupt" in _cli_error(capsys, "info", str(bundle))


def test_missing_file(bundle, capsys):
    (bundle / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="missing tokenizer.json"):
        open_bundle(bundle)
    assert "missing tokenizer.json" in _cli_error(capsys, "info", str(bundle))


def test_version_1_bundles_still_load(bundle):
    """Version 2 only added graphs that take token rows; a version 1 manifest reads as before."""
    _edit_manifest(bundle, lambda d: d.update(schema_version=1))
    assert open_bundle(bundle).manifest.schema_version == 1


def test_manifests_with_the_retired_extra_field_still_load(bundle):
    """Earlier exporters wrote an always-empty "extra"; such bundles load as they did."""
    _edit_manifest(bundle, lambda d: d.update(extra={}))
    assert open_bundle(bundle).manifest == Manifest.read(bundle)


@pytest.mark.parametrize("version", [SCHEMA_VERSION + 1, 0, None])
def test_unknown_schema_version(bundle, version, capsys):
    _edit_manifest(bundle, lambda d: d.update(schema_version=version))
    with pytest.raises(BundleError, match="schema version .* is not supported"):
        open_bundle(bundle)
    assert "Re-export" in _cli_error(capsys, "info", str(bundle))


@pytest.mark.parametrize("change", [
    lambda d: d.update(inspect=None),
    lambda d: d["inspect"]["embedding"].update(shape=[7, 3]),
    lambda d: d["inspect"]["embedding_scales"].update(dtype="int8"),
])
def test_rows_graph_without_a_fitting_token_table(bundle, change, capsys):
    _edit_manifest(bundle, change)
    message = _cli_error(capsys, "generate", "Hi", "-m", str(bundle), "-n", "1", "--raw")
    assert "takes embedding rows but names no int8 table" in message and "Re-export" in message


def test_malformed_manifest(bundle, capsys):
    (bundle / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        open_bundle(bundle)
    (bundle / MANIFEST_FILE).write_text(json.dumps({"format": "edge-bundle", "schema_version": SCHEMA_VERSION}))
    with pytest.raises(BundleError, match="malformed"):
        open_bundle(bundle)


def test_graph_io_must_match_the_manifest(bundle):
    _edit_manifest(bundle, lambda d: d["graph"].update(inputs=["input_ids", "attention_mask"]))
    with pytest.raises(BundleError, match="graph's inputs do not match the manifest"):
        DecoderRunner.open(open_bundle(bundle))

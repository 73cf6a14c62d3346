"""`edge inspect` on the command line: tables, JSON, pictures and one-line errors."""

from __future__ import annotations

import importlib.util

import json
import shutil
import warnings

import numpy as np
import pytest

from edge.cli import main
from edge.inspect import plots

CJK = "日本語のテキストと English words"


@pytest.fixture
def bundle(tiny_llama_bundle_int8, monkeypatch):
    """The tiny Llama (int8) as the default bundle ($EDGE_MODEL), so commands need no -m."""
    monkeypatch.setenv("EDGE_MODEL", str(tiny_llama_bundle_int8))
    return tiny_llama_bundle_int8


def _run(capsys, args) -> tuple[int, str, list[str]]:
    """Exit code, standard output and the lines of standard error of one CLI call."""
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


def _error(capsys, args) -> str:
    code, _, err = _run(capsys, args)
    assert code == 1 and len(err) == 1 and err[0].startswith("error: "), (code, err)
    return err[0]


def _json(capsys, args) -> dict:
    code, out, err = _run(capsys, args)
    assert code == 0, err
    return json.loads(out)


def _assert_picture(path) -> None:
    """A valid PNG that is not one flat colour."""
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(path)  # (h, w, channels)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and pixels[..., :3].std() > 0.05


def test_tokens_json_matches_tokenizers_and_bytes_add_up(bundle, capsys, no_network):
    from tokenizers import Tokenizer

    out = _json(capsys, ["inspect", "tokens", CJK, "--json"])
    want = Tokenizer.from_file(str(bundle / "tokenizer.json")).encode(CJK, add_special_tokens=False)
    assert [t["id"] for t in out["tokens"]] == want.ids
    assert [t["token"] for t in out["tokens"]] == want.tokens
    assert [t["position"] for t in out["tokens"]] == list(range(len(want.ids)))
    assert b"".join(bytes.fromhex(t["bytes"]) for t in out["tokens"]) == CJK.encode("utf-8")


def test_neighbors_and_analogy_print_tables(bundle, capsys):
    assert main(["inspect", "neighbors", "king", "-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "'king'" in lines[0] and len(lines) == 4
    out = _json(capsys, ["inspect", "analogy", "king", "man", "woman", "-k", "4", "--json"])
    assert len(out["results"]) == 4
    assert not {r["id"] for r in out["results"]} & {i for w in "abc" for i in out[w]["ids"]}


def test_attention_png_and_top_three(bundle, capsys, tmp_path):
    png = tmp_path / "one.png"
    assert main(["inspect", "attention", "The cat sat on the mat", "--layer", "1", "--head", "2", "--png", str(png)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "layer 1, head 2" in lines[0] and "only itself" in lines[1]
    assert lines[-1].count("'") == 8  # the last token lists three earlier tokens (plus its own)
    _assert_picture(png)
    grid = tmp_path / "grid.png"
    out = _json(capsys, ["inspect", "attention", "The cat sat", "--json", "--png", str(grid)])
    assert len(out["panels"]) == 2
    _assert_picture(grid)


def test_cjk_labels_render_with_a_cjk_font(bundle, capsys, tmp_path):
    assert plots.cjk_font() is not None, "no CJK font: install one (Debian: fonts-noto-cjk), see README"
    png = tmp_path / "cjk.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font(s)"
        assert main(["inspect", "attention", CJK, "--layer", "0", "--png", str(png)]) == 0
    _assert_picture(png)


@pytest.mark.parametrize("name", ["tiny_llama_bundle_int8", "tiny_gpt2_bundle_int8"])
def test_positions_png_and_json(name, request, capsys, tmp_path):
    path = request.getfixturevalue(name)
    png = tmp_path / "positions.png"
    out = _json(capsys, ["inspect", "positions", "-m", str(path), "-n", "32", "--json", "--png", str(png)])
    assert out["kind"] in ("rotary", "learned") and len(out["similarity_by_distance"]) == 32
    assert out["similarity_by_distance"][0] == pytest.approx(1.0, abs=1e-5)
    _assert_picture(png)


def test_without_matplotlib_png_is_the_missing_extra_error(bundle, capsys, tmp_path, monkeypatch):
    """The same one-line MissingExtraError as `edge serve` and `edge export` give, before any work."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    png = tmp_path / "none.png"
    assert main(["inspect", "positions", "-n", "16", "--png", str(png)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and not png.exists()
    assert captured.err.strip().splitlines() == [
        "error: edge inspect --png needs the `viz` extra (matplotlib is not installed). "
        "Install it with: pip install 'edge-runtime[viz]'."]


@pytest.mark.parametrize("args, message", [
    (["inspect", "attention", "hi there", "--layer", "2"], "--layer 2 is out of range"),
    (["inspect", "attention", "hi there", "--layer", "0", "--head", "4"], "--head 4 is out of range"),
    (["inspect", "attention", "  "], "the text is empty"),
    (["inspect", "tokens", ""], "the text is empty"),
    (["inspect", "neighbors", " "], "the word is empty"),
    (["inspect", "neighbors", "king", "-k", "0"], "-k must be at least 1"),
    (["inspect", "positions", "-n", "1"], "-n must be between 2"),
])
def test_bad_input_is_one_line(bundle, capsys, args, message):
    assert message in _error(capsys, args)


def test_unknown_word_is_one_line(tiny_bert_bundle_int8, capsys):
    message = _error(capsys, ["inspect", "neighbors", "\U00013000", "-m", str(tiny_bert_bundle_int8)])
    assert "not in this model's vocabulary" in message


def test_old_bundle_without_inspection_asks_for_a_re_export(bundle, capsys, tmp_path):
    old = shutil.copytree(bundle, tmp_path / "old")
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["inspect"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert "Re-export it" in _error(capsys, ["inspect", "attention", "hi", "-m", str(old)])
    assert "Re-export it" in _error(capsys, ["inspect", "neighbors", "hi", "-m", str(old)])
    assert main(["inspect", "positions", "-m", str(old), "-n", "8"]) == 0  # rotary needs no table


def test_encoder_attention_is_bidirectional(tiny_bert_bundle_int8, capsys):
    out = _json(capsys, ["inspect", "attention", "the cat sat on the mat", "-m", str(tiny_bert_bundle_int8),
                         "--layer", "1", "--json"])
    tokens = [t["token"] for t in out["tokens"]]
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    for i, sources in enumerate(out["top"]):  # every token lists three others, later ones allowed
        assert len(sources) == 3 and i not in {s["position"] for s in sources}
    assert any(s["position"] > i for i, sources in enumerate(out["top"]) for s in sources)


INSPECT_PROBE = """
import json, sys
from edge.cli import main

for args in (["tokens", "hi"], ["neighbors", "king"], ["positions"], ["attention", "hi there", "--layer", "0"]):
    assert main(["inspect", *args, "-m", sys.argv[1]]) == 0
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules} & set(json.loads(sys.argv[2])))))
"""


def test_inspect_imports_no_exporter_package(tiny_llama_bundle_int8, tmp_path):
    import subprocess
    import sys

    from test_runtime_imports import EXPORTER_ONLY

    result = subprocess.run([sys.executable, "-c", INSPECT_PROBE, str(tiny_llama_bundle_int8), json.dumps(EXPORTER_ONLY)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []

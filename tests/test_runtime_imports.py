"""The runtime path never imports the exporter or its heavy dependencies, nor Ray (the
`scale` extra's: `edge index` imports it only with --ray) nor usearch (only for an index with
an ANN graph).

A fresh interpreter loads a bundle, uses it (generates; or embeds, indexes and searches),
prints `edge --help`, then reports which
exporter-only packages `sys.modules` holds. The same probe with `import onnx` added is the
control: it shows the check sees an import when there is one.

A runtime-only install (no `export` extra, as on a Raspberry Pi) runs the tests that need no
exporter; conftest decides which. Here: it ignores the modules that import the exporter at
their top only when onnx is missing, never in a complete environment.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

EXPORTER_ONLY = ("torch", "transformers", "tokenizers", "export", "onnx", "sentence_transformers", "huggingface_hub",
                 "ray", "pyarrow", "pandas", "usearch")

PROBE = """
import json, sys
import edge
from edge.cli import main

model = edge.load(sys.argv[1])
{use}
main(["--help"])
{extra}
exporter_only = set(json.loads(sys.argv[2]))
print(json.dumps(sorted({{name.split(".")[0] for name in sys.modules}} & exporter_only)))
"""


USES = {
    "generation": 'model.generate("Hello there", max_tokens=4)',
    "embeddings": """
import pathlib, tempfile
from edge.embeddings.index import SearchIndex, build_index
from edge.embeddings.search import search
folder = pathlib.Path(tempfile.mkdtemp())
(folder / "a.txt").write_text("hello world")
build_index(folder / "index", [folder / "a.txt"], model)
search(SearchIndex.open(folder / "index"), model, "hello")
main(["embed", "-m", sys.argv[1], "hi"])
main(["index", str(folder / "a.txt"), "-o", str(folder / "index2"), "-m", sys.argv[1]])
main(["search", str(folder / "index2"), "hello"])
""",
}


def heavy_modules(bundle, extra: str, cwd, use: str = "generation") -> list[str]:
    """Run the probe in a fresh interpreter (outside the repository, so only the installed edge
    is importable) and return the exporter-only packages it ended with."""
    code = PROBE.format(extra=extra, use=USES[use])
    result = subprocess.run([sys.executable, "-c", code, str(bundle), json.dumps(EXPORTER_ONLY)],
                            capture_output=True, text=True, cwd=cwd, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "Usage" in result.stdout  # the help was printed
    return json.loads(lines[-1])


@pytest.mark.parametrize("extra, expected", [("", []), ("import onnx", ["onnx"])])
def test_runtime_path_imports_no_exporter_package(tiny_llama_bundle_int8, tmp_path, extra, expected):
    assert heavy_modules(tiny_llama_bundle_int8, extra, tmp_path) == expected


def test_embedding_path_imports_no_exporter_package(tiny_bert_bundle_int8, tmp_path):
    assert heavy_modules(tiny_bert_bundle_int8, "", tmp_path, use="embeddings") == []


@pytest.mark.parametrize("extra, expected", [("", False), ("import onnxruntime", True)])
def test_the_command_line_loads_onnxruntime_only_with_a_model(tmp_path, extra, expected):
    """`edge --help` and the commands' definitions need no onnxruntime (~30 MB and ~0.1 s of
    start-up): it comes with the first model (or ANN graph) a command opens."""
    code = f"import sys\nfrom edge.cli import main\nmain(['--help'])\n{extra}\nprint('onnxruntime' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0 and "Usage" in result.stdout, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(expected)


# Read off the modules' top-level imports by hand (modules added later are left out).
NEEDS_EXPORTER_AT_IMPORT = {"test_decoder_runner.py", "test_export.py", "test_quantize.py", "test_smollm2.py",
                            "test_stream_detokenizer.py", "test_tokenizer_bpe.py", "test_tokenizer_wordpiece.py"}
RUNTIME_AT_IMPORT = {"test_bundle.py", "test_chat_template.py", "test_cli.py", "test_doctor.py", "test_generate.py",
                     "test_runtime_imports.py", "test_sampler.py"}


@pytest.mark.parametrize("onnx_installed", [True, False])
def test_conftest_ignores_exporter_modules_only_without_onnx(request, monkeypatch, onnx_installed):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, package=None):
        if name == "onnx":
            return real_find_spec("json") if onnx_installed else None  # any spec stands for "installed"
        return real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    folder = Path(__file__).parent
    ignored = {name for name in NEEDS_EXPORTER_AT_IMPORT | RUNTIME_AT_IMPORT
               if request.config.hook.pytest_ignore_collect(collection_path=folder / name, config=request.config)}
    assert ignored == (set() if onnx_installed else NEEDS_EXPORTER_AT_IMPORT)

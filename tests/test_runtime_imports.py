"""The runtime path never imports the exporter or its heavy dependencies.

A fresh interpreter loads a bundle, uses it (generates; or embeds, indexes and searches),
prints `edge --help`, then reports which
exporter-only packages `sys.modules` holds. The same probe with `import onnx` added is the
control: it shows the check sees an import when there is one.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

EXPORTER_ONLY = ("torch", "transformers", "tokenizers", "export", "onnx", "sentence_transformers", "huggingface_hub")

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
from edge.index import SearchIndex, build_index
from edge.search import search
folder = pathlib.Path(tempfile.mkdtemp())
(folder / "a.txt").write_text("hello world")
build_index(folder / "index", [folder / "a.txt"], model)
search(SearchIndex.open(folder / "index"), model, "hello")
main(["embed", "-m", sys.argv[1], "hi"])
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

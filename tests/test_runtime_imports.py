"""The runtime path never imports the exporter or its heavy dependencies.

A fresh interpreter loads a bundle, generates and prints `edge --help`, then reports which
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
model.generate("Hello there", max_tokens=4)
main(["--help"])
{extra}
exporter_only = set(json.loads(sys.argv[2]))
print(json.dumps(sorted({{name.split(".")[0] for name in sys.modules}} & exporter_only)))
"""


def heavy_modules(bundle, extra: str, cwd) -> list[str]:
    """Run the probe in a fresh interpreter (outside the repository, so only the installed edge
    is importable) and return the exporter-only packages it ended with."""
    result = subprocess.run([sys.executable, "-c", PROBE.format(extra=extra), str(bundle), json.dumps(EXPORTER_ONLY)],
                            capture_output=True, text=True, cwd=cwd, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "Usage" in result.stdout  # the help was printed
    return json.loads(lines[-1])


@pytest.mark.parametrize("extra, expected", [("", []), ("import onnx", ["onnx"])])
def test_runtime_path_imports_no_exporter_package(tiny_llama_bundle_int8, tmp_path, extra, expected):
    assert heavy_modules(tiny_llama_bundle_int8, extra, tmp_path) == expected

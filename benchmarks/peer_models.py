"""Build a peer's model from the same SmolLM2 GGUF edge exports; run in the peers' venv.

    python peer_models.py KIND GGUF OUT

KIND: `hf` (a Hugging Face folder of the dequantized weights: what transformers, optimum
and onnxruntime-genai's builder read), `q8_0` (llama.cpp's 8-bit GGUF), `genai-int8` /
`genai-int4` (onnxruntime-genai's model builder), `optimum` (optimum's ONNX export); those
three read the `hf` folder that OUT's sibling `hf` must already hold. benchmarks/compare.py
calls it when a model is missing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def hf_folder(gguf: Path, out: Path) -> None:
    """Dequantize through transformers' GGUF loader, then save a plain fp32 checkpoint: the
    loaded config carries a GGUF quantization_config that other loaders refuse."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config.eos_token_id = 2  # <|im_end|>: the GGUF conversion gets it wrong
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)


def q8_0(gguf: Path, out: Path) -> None:
    import llama_cpp as L

    params = L.llama_model_quantize_default_params()
    params.ftype = L.LLAMA_FTYPE_MOSTLY_Q8_0
    params.allow_requantize = True  # the source blocks are Q4_1: dequantized, then Q8_0
    if L.llama_model_quantize(str(gguf).encode(), str(out).encode(), params) != 0:
        raise SystemExit(f"llama_model_quantize failed for {gguf}")


def genai(hf: Path, out: Path, precision: str) -> None:
    """onnxruntime-genai's own builder, CPU defaults (accuracy_level 4: int8 activations, as edge)."""
    cache = out.parent / "builder-cache"
    subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(out),
                    "-p", precision, "-e", "cpu", "-c", str(cache)],
                   check=True)


def optimum(hf: Path, out: Path) -> None:
    """optimum's ONNX export with a KV cache (its own venv: it pins an older transformers)."""
    subprocess.run([sys.executable, "-m", "optimum.commands.optimum_cli", "export", "onnx", "--model", str(hf),
                    "--task", "text-generation-with-past", str(out)], check=True)


def main() -> None:
    kind, gguf, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    if kind == "hf":
        hf_folder(gguf, out)
    elif kind == "q8_0":
        q8_0(gguf, out)
    elif kind.startswith("genai-"):
        genai(out.parent / "hf", out, kind.removeprefix("genai-"))
    elif kind == "optimum":
        optimum(out.parent / "hf", out)
    else:
        raise SystemExit(f"unknown kind {kind!r}: use hf, q8_0, genai-int8, genai-int4 or optimum")


if __name__ == "__main__":
    main()

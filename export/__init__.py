"""The exporter: Hugging Face / GGUF models -> self-contained int8 ONNX bundles (the `export` extra)."""

__version__ = "0.1.0"

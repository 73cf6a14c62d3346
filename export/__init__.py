"""The exporter (the `export` extra): source -> graph -> quantize -> quality -> writer.

In: a Hugging Face id or folder, or a .gguf file, and a recipe (recipes.py: int8, int4, none).
Out: a self-contained ONNX bundle the runtime loads, its quality measured (pipeline.export_model).
"""

__version__ = "0.1.0"

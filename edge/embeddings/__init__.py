"""The encoder in use: texts and files in, unit vectors, an on-disk index and ranked hits out.
Pooling, `EmbeddingModel`, chunking, the corpus walk, the index and search."""

"""The onnxruntime side, knowing no text: a graph session, the KV cache, token rows and the
decoder and encoder runners. In: token ids (or rows). Out: logits or token vectors."""

"""The server's default slots and KV budget, apart from the scheduler so that `edge`'s
command line can show them without importing onnxruntime."""

# Sequences decoded together (edge serve --parallel): one step for 8 costs ~2x one for 1 on
# a 2-core CPU (SmolLM2-135M int8: 17.4 against 8.3 ms), and 8 clients find a slot at once.
DEFAULT_SLOTS = 8
# KV budget shared by the slots: 8 x 512 tokens, 189 MB for SmolLM2-135M (46,080 bytes a
# token), so its server stays under ~500 MB RSS (~310 MB without any cache).
DEFAULT_KV_TOKENS = 4096

"""A tour of what the model sees: tokens, embedding geometry, positions, attention.

    python examples/inspect_demo.py [BUNDLE] [OUT_DIR] [ENCODER_BUNDLE]

BUNDLE defaults to the bundle `make demo` exports (SmolLM2-135M-Instruct, int8), and
ENCODER_BUNDLE to the default embedding bundle (all-MiniLM-L6-v2) when it exists. The
pictures go to OUT_DIR (default: inspect-pictures/) and need the `viz` extra (matplotlib).
"""

import sys
from pathlib import Path

from edge.inspect import Inspector, plots
from edge.inspect.attention import select, top_sources
from edge.paths import default_bundle, default_embedding_bundle

bundle = sys.argv[1] if len(sys.argv) > 1 else default_bundle()
out = Path(sys.argv[2] if len(sys.argv) > 2 else "inspect-pictures")
encoder_bundle = Path(sys.argv[3] if len(sys.argv) > 3 else default_embedding_bundle())
inspector = Inspector(bundle)

# 1. Text becomes tokens: ids and the bytes each one stands for (CJK splits into bytes).
for token in inspector.tokens("Tokyo 東京 is big"):
    print(f"{token.position:>3} {token.id:>6} {token.text!r:<10} {token.bytes.hex(' ')}")

# 2. Tokens become vectors: neighbours and the king - man + woman analogy, by cosine.
word, hits = inspector.neighbors("king", k=5)
print("near 'king':", ", ".join(f"{h.text!r} {h.score:.2f}" for h in hits))
words, hits = inspector.analogy("king", "man", "woman", k=3)
print("king - man + woman:", ", ".join(f"{h.text!r} {h.score:.2f}" for h in hits))

# 3. Order: the positional encoding of the first 64 positions, as a picture.
positions = inspector.positions(64)
print(f"positions: {positions.kind}, similarity at distance 1 / 32: "
      f"{positions.similarity[1]:.2f} / {positions.similarity[32]:.2f}")
plots.positions_png(positions, out / "positions.png")

# 4. Attention: which earlier tokens each token draws on, one layer and every layer.
tokens, weights = inspector.attention("The capital of France is Paris. The capital of Japan is")
labels = [t.label for t in tokens]
view = select(weights, layer=weights.shape[0] // 2, head=None)
for token, sources in zip(tokens, top_sources(view.summary, inspector.causal)):
    print(f"{token.text!r:>12} <- " + ", ".join(f"{tokens[j].text!r} {w:.2f}" for j, w in sources))
plots.attention_png(view, labels, out / "attention-layer.png")
plots.attention_png(select(weights, layer=None, head=None), labels, out / "attention-grid.png")

# 5. An encoder (BERT) attends both ways; WordPiece keeps CJK characters whole, and the
#    labels fall back to a CJK font (e.g. fonts-noto-cjk) glyph by glyph.
if encoder_bundle.exists():
    encoder = Inspector(encoder_bundle)
    tokens, weights = encoder.attention("猫が窓の外を見ている。 The cat looks outside.")
    plots.attention_png(select(weights, layer=2, head=None), [t.label for t in tokens], out / "attention-cjk.png")
    word, hits = encoder.neighbors("paris", k=5)
    print("encoder, near 'paris':", ", ".join(f"{h.text!r} {h.score:.2f}" for h in hits))
print(f"pictures in {out}/")

"""Generate text with an edge bundle: one call, then streaming with timings.

    python examples/generate.py [BUNDLE]

BUNDLE defaults to the bundle `make demo` exports (SmolLM2-135M-Instruct, int8).
"""

import sys

import edge
from edge.paths import default_bundle

# 1. Load the bundle: checksums verified, graph opened, tokenizer read. No network, ever.
bundle = sys.argv[1] if len(sys.argv) > 1 else default_bundle()
model = edge.load(bundle)

# 2. One call, greedy (temperature 0): the prompt goes through the bundle's chat template.
answer = model.generate("Why is the sky blue? Answer in one sentence.", max_tokens=48)
print("greedy:", answer)

# 3. Sampling: same seed, same text; stop strings end the reply and are not included.
story = model.generate(
    "Write one sentence about a lighthouse.",
    max_tokens=60,
    temperature=0.7,
    top_p=0.9,
    seed=42,
    stop=["\n\n"],
)
print("sampled:", story)

# 4. Raw continuation: no chat template, the text is continued as it is.
print("raw:", model.generate("The three primary colours are", raw=True, max_tokens=20))

# 5. Streaming: chunks arrive as tokens are sampled; the last one carries the timings.
for chunk in model.stream("Give three tips for sleeping well.", max_tokens=64):
    print(chunk.text, end="", flush=True)
    if chunk.finish_reason:
        t = chunk.timings
        print(f"\n[{chunk.finish_reason}: {t.completion_tokens} tokens, first after {t.ttft_s:.2f}s, "
              f"{t.decode_tok_s:.0f} tok/s]")

# 6. Perplexity of a text under the model (lower means less surprised).
print("perplexity:", round(model.perplexity("The sun rises in the east and sets in the west."), 2))

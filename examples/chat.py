"""A multi-turn conversation with an edge bundle, reusing the KV cache across turns.

    python examples/chat.py [BUNDLE]
"""

import sys

import edge
from edge.paths import default_bundle

# 1. Load the bundle (default: the one `make demo` exports).
model = edge.load(sys.argv[1] if len(sys.argv) > 1 else default_bundle())

# 2. One-shot chat: a list of messages in, the assistant's reply out.
messages = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "Name a planet with rings."},
]
print("one-shot:", model.chat(messages, max_tokens=40))

# 3. A session keeps the history; each turn prefills only the new tokens.
session = model.chat_session(system="You are a concise assistant.", max_tokens=60)
for question in ["What is a haiku?", "Write one about the sea.", "Now make it about mountains."]:
    print(f"\n>>> {question}")
    for chunk in session.send(question):
        print(chunk.text, end="", flush=True)
    print()

# 4. The history the next turn builds on.
print("\nturns so far:", [m["role"] for m in session.messages])

# 5. Stopping a reply early (as Ctrl-C does in `edge chat`) keeps what was shown.
reply = session.send("Tell me a long story about a fox.")
shown = "".join(next(reply).text for _ in range(5))
reply.close()
print(f"\nstopped after: {shown!r}; the session goes on:")
print("".join(c.text for c in session.send("Summarise it in one line.")))

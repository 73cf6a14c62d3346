"""Use `edge serve` from the official `openai` Python client.

    edge serve -m BUNDLE [-m EMBEDDING_BUNDLE]          # in another terminal
    python examples/openai_client.py [CHAT_MODEL [EMBEDDING_MODEL]]

Model ids are the bundle folders' names; without arguments the first served model chats.
"""

import os
import sys

from openai import OpenAI

# 1. Point the client at the local server; the key matters only if it runs with --api-key.
client = OpenAI(base_url="http://127.0.0.1:8080/v1", api_key=os.environ.get("EDGE_API_KEY", "none"))

# 2. The models it serves.
served = [model.id for model in client.models.list()]
print("served:", served)
chat_model = sys.argv[1] if len(sys.argv) > 1 else served[0]

# 3. A chat completion, greedy (temperature 0), with its token usage.
messages = [{"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Name a planet with rings."}]
reply = client.chat.completions.create(model=chat_model, messages=messages, max_tokens=40, temperature=0)
print(reply.choices[0].message.content, f"[{reply.choices[0].finish_reason}, {reply.usage.total_tokens} tokens]")

# 4. The same, streamed as it is generated; sampling with a seed is reproducible.
stream = client.chat.completions.create(model=chat_model, messages=messages, max_tokens=60, temperature=0.7,
                                        top_p=0.9, seed=1, stream=True)
for chunk in stream:
    print(chunk.choices[0].delta.content or "", end="", flush=True)
print()

# 5. A plain-text completion (no chat template), stopped at the first newline.
completion = client.completions.create(model=chat_model, prompt="The three primary colours are", max_tokens=30,
                                       temperature=0, stop=["\n"])
print(completion.choices[0].text)

# 6. Embeddings, if an encoder bundle is served too: one vector per input.
if len(sys.argv) > 2:
    vectors = client.embeddings.create(model=sys.argv[2], input=["a cat", "a kitten", "a car"])
    print([len(item.embedding) for item in vectors.data], "dimensions each")

"""`edge serve`: an OpenAI-compatible HTTP server over edge bundles (the `serve` extra).

app.py (routes) -> http.py (body size, API key, error responses) -> schemas.py (request
validation) -> worker.py (one thread per model, bounded queue) -> openai_format.py
(response shapes). Needs starlette; the CLI runs it
with uvicorn.
"""

"""`edge serve`: an OpenAI-compatible HTTP server over edge bundles (the `serve` extra),
which also answers Ollama's API.

ollama.py (Ollama's routes, appended to app.py's) -> app.py (OpenAI's routes, job
submission) -> http.py (body size, API key, error responses) -> schemas.py (request
validation) -> worker.py (one thread per model, bounded queue) -> openai_format.py
(response shapes); request_log.py (one line per request). Needs starlette; the CLI runs
it with uvicorn.
"""

from edge.server import ollama  # noqa: F401,E402  (adds Ollama's routes to app.ROUTES)

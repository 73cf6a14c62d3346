"""Around the routes: request bodies in (size-limited JSON), the API key check, and every
error out as OpenAI's error object `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import hmac
import json

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from edge.server import openai_format
from edge.server.schemas import ApiError

MAX_BODY_BYTES = 1 << 20  # far more than any context window's worth of text


async def read_json(request: Request) -> object:
    """The body parsed as JSON; 413 past the size limit, 400 if it is not JSON."""
    limit = request.app.state.max_body
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise _too_large(limit)
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"the request body is not valid JSON ({str(exc).splitlines()[0]}). "
                            "Send a JSON object.") from None


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is larger than {limit} bytes. Send a shorter prompt.",
                    code="request_too_large")


class RequireKey:
    """ASGI middleware: every HTTP request needs `Authorization: Bearer <key>`, else 401.
    The scheme is case-insensitive (RFC 9110: "bearer" is as good as "Bearer"); the key is not."""

    def __init__(self, app, key: str):
        self.app, self.expected = app, key.encode()

    async def __call__(self, scope, receive, send) -> None:
        given = Headers(scope=scope).get("authorization", "") if scope["type"] == "http" else None
        if given is not None and not self._accepts(given):
            response = _error_response(ApiError(401, "missing or wrong API key. Send the header "
                                                     "`Authorization: Bearer <key>` with the server's --api-key.",
                                                code="invalid_api_key"))
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _accepts(self, header: str) -> bool:
        scheme, _, key = header.strip().partition(" ")
        given = key.strip().encode("latin-1", "replace")  # HTTP headers are latin-1
        return scheme.lower() == "bearer" and hmac.compare_digest(given, self.expected)


async def api_error(request: Request, exc: ApiError) -> JSONResponse:
    return _error_response(exc)


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Unknown routes (404) and wrong methods (405), in OpenAI's error shape."""
    message = {404: f"no route {request.url.path}. See GET /v1/models and the README's list of routes.",
               405: f"{request.method} is not allowed on {request.url.path}."}.get(exc.status_code, str(exc.detail))
    return _error_response(ApiError(exc.status_code, message), exc.headers)


async def server_error(request: Request, exc: Exception) -> JSONResponse:
    return _error_response(ApiError(500, f"internal error: {type(exc).__name__}: {exc}. The server goes on; "
                                         "please report this with EDGE_DEBUG=1 output.", type="server_error"))


def _error_response(exc: ApiError, headers: dict | None = None) -> JSONResponse:
    extra = {"Retry-After": "1"} if exc.status == 429 else {}
    return JSONResponse(openai_format.error(exc.message, exc.type, exc.param, exc.code), exc.status,
                        headers={**(headers or {}), **extra})

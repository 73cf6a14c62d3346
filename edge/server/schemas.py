"""OpenAI request bodies (parsed JSON) in; validated requests with edge's keyword names out.

Every problem becomes an `ApiError` naming the field, in one line. Unknown fields are
ignored, as OpenAI clients send optional extras; fields edge cannot honour (n > 1,
logprobs, token-id input) are refused rather than silently dropped. `response_format`
(JSON mode, a JSON schema) and `tools` become constraints on the reply (tools.py). Sampling values are
checked by edge's own `SamplingParams`, so the server and the CLI accept the same ranges.
Sampling options left out take the bundle's recommendation (the source's
generation_config.json), else greedy: unlike OpenAI's API, temperature does not default to 1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from edge.errors import ContextWindowError, EdgeError, SamplingError, check_positive_int, check_text
from edge.generation.sampler import SamplingParams
from edge.server.tools import NAME, Tools

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
KINDS = {  # what a field must be, as said in an error message
    str: "a string", int: "an integer", float: "a number", bool: "a boolean", dict: "an object", list: "an array",
}


class ApiError(Exception):
    """A request the server refuses: HTTP status + OpenAI's error object fields."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code


@dataclass(frozen=True)
class GenerationRequest:
    model: str
    prompt: str | list[dict]  # text for /v1/completions, messages for /v1/chat/completions
    options: dict  # LanguageModel.stream_ids keywords; max_tokens None = as many as fit, up to the default
    stream: bool
    include_usage: bool
    tools: Tools | None = None  # function calling (chat only)

    @property
    def chat(self) -> bool:
        return isinstance(self.prompt, list)


@dataclass(frozen=True)
class EmbeddingRequest:
    model: str
    texts: list[str]
    base64: bool  # encoding_format "base64" (the openai client's default) rather than "float"
    dimensions: int | None  # must equal the model's size if given: edge does not shorten vectors


def parse_chat(body: object) -> GenerationRequest:
    body = _object(body)
    messages = [_message(m, i) for i, m in enumerate(_field(body, "messages", list, required=True))]
    if not messages:
        raise ApiError(400, "`messages` is empty: send at least one message.", param="messages")
    return _generation(body, messages, max_tokens=_first(body, "max_completion_tokens", "max_tokens"),
                       tools=_tools(body))


def parse_completion(body: object) -> GenerationRequest:
    body = _object(body)
    prompt = _field(body, "prompt", (str, list), required=True)
    if isinstance(prompt, list):  # OpenAI allows a batch of prompts; edge serves one
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise ApiError(400, "`prompt` must be a string (or a list of exactly one string).", param="prompt")
        prompt = prompt[0]
    return _generation(body, _text(prompt, "prompt"), max_tokens=_first(body, "max_tokens"))


def parse_embedding(body: object) -> EmbeddingRequest:
    body = _object(body)
    texts = _field(body, "input", (str, list), required=True)
    texts = [texts] if isinstance(texts, str) else texts
    if not texts or not all(isinstance(t, str) and t for t in texts):
        raise ApiError(400, "`input` must be a non-empty string or a non-empty array of non-empty strings "
                            "(token-id input is not supported).", param="input")
    for text in texts:
        _text(text, "input")
    encoding = _field(body, "encoding_format", str, default="float")
    if encoding not in ("float", "base64"):
        raise ApiError(400, f"`encoding_format` must be \"float\" or \"base64\", got {encoding!r}.",
                       param="encoding_format")
    return EmbeddingRequest(_model(body), texts, encoding == "base64", _field(body, "dimensions", int))


def _generation(body: dict, prompt: str | list[dict], max_tokens: tuple[str, object],
                tools: Tools | None = None) -> GenerationRequest:
    _refuse_unsupported(body)
    name, value = max_tokens
    if value is not None:
        try:
            check_positive_int(value, name)
        except EdgeError as exc:
            raise ApiError(400, exc.render(f"`{name}`"), param=name) from None
    options = dict(
        max_tokens=value,
        temperature=_field(body, "temperature", float),  # None: the bundle's recommendation, else greedy
        top_p=_field(body, "top_p", float),
        top_k=_field(body, "top_k", int),  # edge extensions (extra_body in the openai client)
        min_p=_field(body, "min_p", float),
        repetition_penalty=_field(body, "repetition_penalty", float),
        seed=_field(body, "seed", int),
        stop=_stop(body),
        ignore_eos=_field(body, "ignore_eos", bool, default=False),  # as llama-server and vLLM: max_tokens long
        **_response_format(body),
    )
    if tools is not None and "json_schema" in options:
        raise ApiError(400, "give `tools` or a JSON `response_format`, not both.", param="response_format")
    check_sampling(options)
    stream = _field(body, "stream", bool, default=False)
    usage = _field(body, "stream_options", dict, default={}).get("include_usage", False)
    if not isinstance(usage, bool):
        raise ApiError(400, "`stream_options.include_usage` must be a boolean.", param="stream_options")
    return GenerationRequest(_model(body), prompt, options, stream, stream and usage, tools)


def _response_format(body: dict) -> dict:
    """OpenAI's response_format as edge's json_schema option: {} for text."""
    form = _field(body, "response_format", dict)
    if form is None or form.get("type") == "text":
        return {}
    if form.get("type") == "json_object":
        return {"json_schema": {"type": "object"}}
    if form.get("type") == "json_schema" and isinstance(form.get("json_schema"), dict):
        schema = form["json_schema"].get("schema", {})
        if not isinstance(schema, dict):
            raise ApiError(400, "`response_format.json_schema.schema` must be an object.", param="response_format")
        return {"json_schema": schema}
    raise ApiError(400, "`response_format` must be {\"type\": \"text\"}, {\"type\": \"json_object\"} or "
                        "{\"type\": \"json_schema\", \"json_schema\": {\"name\": ..., \"schema\": {...}}}.",
                   param="response_format")


def _tools(body: dict) -> Tools | None:
    """OpenAI's tools and tool_choice: function definitions checked, the choice resolved."""
    tools = _field(body, "tools", list)
    if not tools:
        if body.get("tool_choice") not in (None, "none", "auto"):
            raise ApiError(400, "`tool_choice` needs `tools`.", param="tool_choice")
        return None
    functions = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not NAME.match(fn["name"]):
            raise ApiError(400, f"`tools[{i}]` must be {{\"type\": \"function\", \"function\": {{\"name\": "
                                "<letters, digits, _ or ->, \"parameters\": <a JSON schema>}}}.", param=f"tools[{i}]")
        parameters = fn.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(parameters, dict):
            raise ApiError(400, f"`tools[{i}].function.parameters` must be a JSON schema object.", param=f"tools[{i}]")
        functions.append({"name": fn["name"], "description": fn.get("description") or "", "parameters": parameters})
    names = [f["name"] for f in functions]
    if len(set(names)) != len(names):
        raise ApiError(400, "two `tools` share a function name.", param="tools")
    choice = body.get("tool_choice", "auto")
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        choice = choice["function"].get("name")
    if choice not in ("auto", "required", "none", *names):
        raise ApiError(400, f"`tool_choice` must be auto, required, none or one of the tools' names, got {choice!r}.",
                       param="tool_choice")
    return Tools(tuple(functions), choice)


def check_sampling(options: dict) -> None:
    """Edge's own range checks, before the request takes a place in the queue."""
    keys = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "seed")
    try:
        SamplingParams(**{k: options[k] for k in keys if options.get(k) is not None})
    except SamplingError as exc:
        raise from_edge_error(exc) from None


# edge keywords the API spells otherwise: structured output comes from these request fields
API_PARAMS = {"json_schema": "response_format", "grammar": "tools"}


def from_edge_error(exc: EdgeError) -> ApiError:
    """Edge's one-line message with its parameter named as the API names it, in `param`."""
    code = "context_length_exceeded" if isinstance(exc, ContextWindowError) else None
    param = API_PARAMS.get(exc.param, exc.param)
    return ApiError(400, exc.render(param), param=param, code=code)


def _object(body: object) -> dict:
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {_kind(body)}.")
    return body


def _model(body: dict) -> str:
    return _field(body, "model", str, required=True)


def _field(body: dict, name: str, kinds: type | tuple[type, ...], required: bool = False, default=None):
    value = body.get(name)
    if value is None:
        if required:
            raise ApiError(400, f"`{name}` is required.", param=name, code="missing_required_parameter")
        return default
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    allowed = (*kinds, int) if float in kinds else kinds  # JSON numbers: 1 is as good as 1.0
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in kinds):
        wanted = " or ".join(KINDS[k] for k in kinds)
        raise ApiError(400, f"`{name}` must be {wanted}, got {_kind(value)}.", param=name)
    return value


def _first(body: dict, *names: str) -> tuple[str, int | None]:
    """The first of `names` that is set, type-checked as an integer."""
    for name in names:
        if body.get(name) is not None:
            return name, _field(body, name, int)
    return names[0], None


def _message(message: object, index: int) -> dict:
    param = f"messages[{index}]"
    if not isinstance(message, dict):
        raise ApiError(400, f"`{param}` must be an object with `role` and `content`.", param=param)
    role = message.get("role")
    if role not in ROLES:
        raise ApiError(400, f"`{param}.role` must be one of {', '.join(ROLES)}, got {role!r}.", param=param)
    if role == "assistant" and message.get("tool_calls"):  # an earlier call, sent back with its result
        calls = message["tool_calls"]
        try:
            parsed = [{"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}
                      for c in calls]
        except (TypeError, KeyError, ValueError):
            raise ApiError(400, f"`{param}.tool_calls` must be OpenAI tool calls with JSON arguments.",
                           param=param) from None
        content = message.get("content")
        return {"role": "assistant", "content": _content(content, param) if content else "", "tool_calls": parsed}
    if role == "tool":
        return {"role": "tool", "content": _content(message.get("content"), param),
                "tool_call_id": str(message.get("tool_call_id", ""))}
    return {"role": ROLES[role], "content": _content(message.get("content"), param)}


def _content(content: object, param: str) -> str:
    """A string, or a list of text parts (joined by newlines); images and audio are refused."""
    if isinstance(content, str):
        return _text(content, param)
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return _text("\n".join(p["text"] for p in content), param)
    raise ApiError(400, f"`{param}.content` must be a string or a list of text parts.", param=param)


def _stop(body: dict) -> list[str] | None:
    stop = _field(body, "stop", (str, list))
    stops = [stop] if isinstance(stop, str) else stop
    if stops is not None and not all(isinstance(s, str) and s for s in stops):
        raise ApiError(400, "`stop` must be a non-empty string or an array of non-empty strings.", param="stop")
    for text in stops or ():
        _text(text, "stop")
    return stops or None


def _text(text: str, param: str) -> str:
    """`text` unless it holds a lone surrogate (JSON allows "\\ud800"; UTF-8 has no form for it)."""
    try:
        return check_text(text, param)
    except EdgeError as exc:
        raise ApiError(400, exc.render(f"`{param}`"), param=param) from None


def _refuse_unsupported(body: dict) -> None:
    n = body.get("n")
    if n is not None and (type(n) is not int or n != 1):  # type(): True == 1 in Python
        raise ApiError(400, f"`n` must be 1: edge returns one choice per request, got {n!r}.", param="n")
    for name in ("functions", "logprobs", "top_logprobs", "frequency_penalty", "presence_penalty"):
        if body.get(name):  # absent, null, false, 0 and [] all mean "off"
            raise ApiError(400, f"`{name}` is not supported by edge serve. Leave it out.", param=name)


def _kind(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)

"""Structured output over HTTP with the real `openai` client: response_format (JSON mode, a
JSON schema, `beta.chat.completions.parse` with a pydantic model) and tools with every
tool_choice, streamed and not; the oracle is the model asked directly with the same
constraint, and jsonschema for every call's arguments."""

from __future__ import annotations

import json
import shutil

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

import edge
from edge.server.app import create_app
from edge.server.tools import Tools, parse_calls
from server_thread import running

MODEL = "tiny"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 6},
                                                   "unit": {"enum": ["C", "F"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 4}},
                                       "required": ["zone"], "additionalProperties": False}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def _direct(lm, messages, **options) -> str:
    """The model asked directly: the whole text, complete or cut (as the server returns it)."""
    return "".join(c.text for c in lm.stream_chat(messages, **options))


class Person(BaseModel):
    name: str = Field(max_length=10)
    age: int = Field(ge=0, le=120)


pytestmark = pytest.mark.usefixtures("only_loopback")  # conftest: sockets reach loopback only


@pytest.fixture(scope="module")
def lm(tiny_llama_bundle_fp32):
    return edge.load(tiny_llama_bundle_fp32)


@pytest.fixture(scope="module")
def client(lm):
    with running(create_app({MODEL: lm})) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_json_schema_response_format(client, lm):
    schema = Person.model_json_schema()
    reply = client.chat.completions.create(
        model=MODEL, messages=ASK, temperature=0, max_tokens=60,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}})
    text = reply.choices[0].message.content
    assert text == _direct(lm, ASK, max_tokens=60, json_schema=schema)
    if reply.choices[0].finish_reason == "stop":
        jsonschema.validate(json.loads(text), schema)


def test_json_object_mode(client, lm):
    reply = client.chat.completions.create(model=MODEL, messages=ASK, temperature=0, max_tokens=40,
                                           response_format={"type": "json_object"})
    assert reply.choices[0].message.content == _direct(lm, ASK, max_tokens=40, json_schema={"type": "object"})


def test_beta_parse_with_a_pydantic_model(client):
    completion = client.beta.chat.completions.parse(model=MODEL, messages=ASK, temperature=0, max_tokens=60,
                                                    response_format=Person)
    message = completion.choices[0].message
    if completion.choices[0].finish_reason == "stop":
        assert isinstance(message.parsed, Person)


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_time"}}])
@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_fit_their_schemas(client, lm, choice, stream):
    kwargs = dict(model=MODEL, messages=ASK, temperature=0, max_tokens=50, tools=[WEATHER, TIME], tool_choice=choice)
    if stream:
        calls: dict[int, dict] = {}
        finish = None
        for chunk in client.chat.completions.create(stream=True, **kwargs):
            delta = chunk.choices[0].delta if chunk.choices else None
            for call in (delta.tool_calls or []) if delta else []:
                entry = calls.setdefault(call.index, {"name": "", "arguments": ""})
                entry["name"] += call.function.name or ""
                entry["arguments"] += call.function.arguments or ""
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        got = [(c["name"], json.loads(c["arguments"])) for c in calls.values()]
    else:
        reply = client.chat.completions.create(**kwargs)
        finish = reply.choices[0].finish_reason
        assert reply.choices[0].message.content is None or finish != "tool_calls"
        got = [(c.function.name, json.loads(c.function.arguments)) for c in reply.choices[0].message.tool_calls or []]
    assert finish == "tool_calls" and got  # bounded strings and no free whitespace: a call ends within 50
    tools = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}
    for name, arguments in got:
        assert name in tools and (choice == "required" or name == "get_time")
        jsonschema.validate(arguments, tools[name])
    # the same reply the model gives when asked directly with the same grammar and prompt
    spec = Tools(tuple({"name": t["function"]["name"], "description": t["function"].get("description", ""),
                        "parameters": t["function"]["parameters"]} for t in (WEATHER, TIME)),
                 choice if isinstance(choice, str) else "get_time")
    direct = _direct(lm, spec.messages(ASK), max_tokens=50,
                     grammar=spec.grammar())
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in parse_calls(direct, spec.active)] == got


def test_tool_choice_none_and_auto_allow_text(client, lm):
    none = client.chat.completions.create(model=MODEL, messages=ASK, temperature=0, max_tokens=20,
                                          tools=[WEATHER], tool_choice="none")
    assert none.choices[0].message.tool_calls is None
    assert none.choices[0].message.content == lm.chat(ASK, max_tokens=20)
    auto = client.chat.completions.create(model=MODEL, messages=ASK, temperature=0, max_tokens=20, tools=[WEATHER])
    message = auto.choices[0].message
    assert (message.tool_calls is None) != (message.content is None)


def test_tool_results_go_back_to_the_model(client):
    """A history with an assistant's call and the tool's result is accepted and answered."""
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                          "arguments": '{"city": "Paris", "unit": "C"}'}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"}]
    reply = client.chat.completions.create(model=MODEL, messages=history, temperature=0, max_tokens=10,
                                           tools=[WEATHER], tool_choice="none")
    assert isinstance(reply.choices[0].message.content, str)


@pytest.mark.parametrize("kwargs, param", [
    (dict(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}),
     "response_format"),
    (dict(response_format={"type": "yaml"}), "response_format"),
    (dict(tools=[{"type": "function", "function": {"name": "bad name!"}}]), "tools[0]"),
    (dict(tools=[WEATHER], tool_choice="get_time"), "tool_choice"),
    (dict(tool_choice="required"), "tool_choice"),
    (dict(tools=[WEATHER], response_format={"type": "json_object"}), "response_format"),
])
def test_bad_structured_requests_are_400_with_param(client, kwargs, param):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=5, **kwargs)
    assert info.value.status_code == 400 and info.value.body["param"] == param


@pytest.fixture(scope="module")
def tools_template_lm(tiny_llama_bundle_fp32, tmp_path_factory):
    """The tiny bundle with a chat template that shows tools itself (test_chat_template's)."""
    from test_chat_template import TOOLS_TEMPLATE

    folder = tmp_path_factory.mktemp("tools-template") / "bundle"
    shutil.copytree(tiny_llama_bundle_fp32, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["tokenizer"]["chat_template"] = TOOLS_TEMPLATE
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return edge.load(folder)


def test_a_template_that_renders_tools_gets_them(tools_template_lm):
    """The tools go to the template (no default tools prompt), and the reply is the model's
    own under the call grammar with that prompt."""
    lm = tools_template_lm
    spec = Tools(({**WEATHER["function"]},), "required")
    prompt = lm.tokenizer.decode(lm.encode_chat(spec.messages(ASK, True), tools=spec.definitions()))
    assert "<tools>" in prompt and '"get_weather"' in prompt and "You can call these functions" not in prompt
    with running(create_app({MODEL: lm})) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        reply = client.chat.completions.create(model=MODEL, messages=ASK, temperature=0, max_tokens=50,
                                               tools=[WEATHER], tool_choice="required")
    calls = reply.choices[0].message.tool_calls
    assert reply.choices[0].finish_reason == "tool_calls" and calls
    jsonschema.validate(json.loads(calls[0].function.arguments), WEATHER["function"]["parameters"])
    ids = lm.encode_chat(spec.messages(ASK, True), tools=spec.definitions())
    direct = "".join(c.text for c in lm.stream_ids(ids, max_tokens=50, grammar=spec.grammar()))
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in parse_calls(direct, spec.active)] \
        == [(c.function.name, json.loads(c.function.arguments)) for c in calls]

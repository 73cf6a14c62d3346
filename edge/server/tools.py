"""OpenAI function calling over a chat model: tools and tool_choice in, a constrained reply and
`tool_calls` out.

Where the bundle's chat template renders tools itself (it reads a `tools` variable, as Qwen2's
and Llama 3.1's do), the tools go to the template in OpenAI's format, and the model sees them
as it was trained to. Otherwise (SmolLM2's template does not) a default tools prompt is added
to the system message, telling the model to reply
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, the Hermes/Qwen format.
Either way the reply is constrained (constraints.py) so that a call is always one of the
tools with arguments valid against that tool's `parameters` schema:
- "required" / a named function: the reply must be a call (to that function);
- "auto": a call, or plain text that does not start with `<`;
- "none": no constraint, the tools are not shown.
Earlier turns go back to the model in the same format: an assistant's tool calls as
`<tool_call>` lines, a tool's result as a user message naming the call it answers.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass

from edge.generation.constraints import JSON_LAYOUT

OPEN, CLOSE = "<tool_call>", "</tool_call>"
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PROMPT = ("You can call these functions:\n{tools}\nTo call one, reply with only "
          '<tool_call>{{"name": "<function name>", "arguments": {{<arguments as JSON>}}}}</tool_call> '
          "and nothing else. Otherwise answer normally.")


@dataclass(frozen=True)
class Tools:
    functions: tuple[dict, ...]  # {"name", "description", "parameters"}
    choice: str  # "auto", "required", "none", or a function's name

    @property
    def active(self) -> list[dict]:
        """The functions the reply may call."""
        if self.choice == "none":
            return []
        if self.choice in ("auto", "required"):
            return list(self.functions)
        return [f for f in self.functions if f["name"] == self.choice]

    def grammar(self) -> str | None:
        """A Lark grammar (llguidance's, with %json for the arguments) for the reply, or None."""
        calls = self.active
        if not calls:
            return None
        schema = {"x-guidance": JSON_LAYOUT,
                  "anyOf": [{"type": "object", "additionalProperties": False, "required": ["name", "arguments"],
                             "properties": {"name": {"const": f["name"]}, "arguments": f["parameters"]}}
                            for f in calls]}
        # a newline may open and close the JSON, as Hermes/Qwen-trained models write it
        call = f'call: "{OPEN}" "\\n"? %json {json.dumps(schema)} "\\n"? "{CLOSE}"'
        if self.choice == "auto":
            return f"start: call | text\n{call}\ntext: /[^<](.|\\n)*/"
        return f"start: call\n{call}"

    def definitions(self) -> list[dict]:
        """The offered functions in OpenAI's format: what a tools-aware chat template reads."""
        return [{"type": "function", "function": dict(f)} for f in self.active]

    def messages(self, messages: list[dict], template_renders_tools: bool = False) -> list[dict]:
        """The conversation as the model reads it: tool turns in the prompt's format, and,
        unless the template shows the tools itself, the tools described in the system message."""
        out = [as_text(m) for m in messages]
        if not self.active or template_renders_tools:
            return out
        described = json.dumps([{k: f[k] for k in ("name", "description", "parameters") if f.get(k)}
                                for f in self.active], ensure_ascii=False)
        note = PROMPT.format(tools=described)
        if out and out[0]["role"] == "system":
            return [{"role": "system", "content": out[0]["content"] + "\n\n" + note}, *out[1:]]
        return [{"role": "system", "content": note}, *out]


def as_text(message: dict) -> dict:
    """A tool turn rendered as text any chat template takes; other turns unchanged."""
    if message["role"] == "tool":
        return {"role": "user", "content": f"Result of call {message.get('tool_call_id', '')}: {message['content']}"}
    if message["role"] == "assistant" and message.get("tool_calls"):
        calls = "".join(f'{OPEN}{json.dumps({"name": c["name"], "arguments": c["arguments"]})}{CLOSE}'
                        for c in message["tool_calls"])
        return {"role": "assistant", "content": (message.get("content") or "") + calls}
    return {"role": message["role"], "content": message["content"]}


def parse_calls(text: str, offered: list[dict]) -> list[dict] | None:
    """OpenAI `tool_calls` from a reply that is a call to one of the `offered` functions,
    else None (a plain-text answer: with tool_choice "auto" or "none" any text may be one).
    Example: '<tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call>', [f] ->
    [{"id": "call_...", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}]"""
    names = {f["name"] for f in offered}
    if not text.startswith(OPEN) or not names:  # the grammar's call starts right there
        return None
    calls = []
    for body in re.findall(re.escape(OPEN) + r"(.*?)" + re.escape(CLOSE), text, flags=re.S):
        try:
            call = json.loads(body)
            name, arguments = call["name"], call["arguments"]
        except (ValueError, TypeError, KeyError):
            return None  # not a call after all (the model wrote the marker as text)
        if name not in names:
            return None
        calls.append({"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                      "function": {"name": name, "arguments": json.dumps(arguments)}})
    return calls or None

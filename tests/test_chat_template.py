"""Chat templates: the same text as transformers' apply_chat_template; errors and the sandbox."""

from __future__ import annotations

import pytest

from edge.generation.chat_template import render, renders_tools
from edge.errors import ChatTemplateError, InputError
from edge.manifest import TokenizerSpec

QWEN2 = (
    "{%- for message in messages %}\n"
    "    {%- if loop.first and messages[0]['role'] != 'system' %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. "
    "You are a helpful assistant.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "    {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)

ZEPHYR = """{% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>\n' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>\n' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>\n'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %}"""

# the helpers transformers provides: tojson (no HTML escaping), namespace, loop controls
HELPERS = (
    "{% set ns = namespace(n=0) %}{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}"
    "{% set ns.n = ns.n + 1 %}{{ ns.n }}:{{ m | tojson }}\n{% endfor %}"
    "{{ messages | tojson(indent=2) }}{% if add_generation_prompt %}<go>{% endif %}"
)

CONVERSATIONS = {
    "one user": [{"role": "user", "content": "Hi!"}],
    "system": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
    "multi-turn": [
        {"role": "system", "content": "You answer in French."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "  Bonjour !  "},
        {"role": "user", "content": "<b>Ça va?</b> \"quotes\" & 😀 中文\n\n  spaces "},
    ],
}


@pytest.fixture(scope="session")
def smollm2_template(smollm2_gguf) -> str:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name).chat_template


def hf_render(tokenizer_json, template, messages, add_generation_prompt, bos, eos) -> str:
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_json), chat_template=template, bos_token=bos,
                                  eos_token=eos)
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("name", ["smollm2", "qwen2", "llama2", "zephyr", "helpers"])
def test_matches_transformers(name, conversation, add_generation_prompt, smollm2_template, smollm2_tokenizer_json):
    template = {"smollm2": smollm2_template, "qwen2": QWEN2, "llama2": LLAMA2, "zephyr": ZEPHYR,
                "helpers": HELPERS}[name]
    bos, eos = ("<s>", "</s>") if name in ("llama2", "zephyr") else ("<|im_start|>", "<|im_end|>")
    messages = CONVERSATIONS[conversation]
    expected = hf_render(smollm2_tokenizer_json, template, messages, add_generation_prompt, bos, eos)
    spec = TokenizerSpec(bos_token=bos, eos_token=eos, chat_template=template)
    assert render(messages, spec, add_generation_prompt) == expected


def test_smollm2_default_system_prompt(smollm2_template):
    text = render([{"role": "user", "content": "Hi"}], TokenizerSpec(chat_template=smollm2_template))
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_raise_exception_becomes_chat_template_error():
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(ChatTemplateError, match="Conversation roles must alternate"):
        render(messages, TokenizerSpec(bos_token="<s>", eos_token="</s>", chat_template=LLAMA2))


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ raise_exception.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ messages.append({'role': 'x', 'content': 'y'}) }}",  # the sandbox is immutable
        "{% set ns = namespace() %}{% set ns._secret = 1 %}",
        "{{ messages[0].role.format.__globals__ }}",
    ],
)
def test_sandbox_escapes_are_template_errors(template):
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(ChatTemplateError, match="^the chat template failed"):
        render(messages, TokenizerSpec(chat_template=template))
    assert messages == [{"role": "user", "content": "hi"}]


def test_missing_template_points_to_raw():
    with pytest.raises(ChatTemplateError, match="plain text") as info:
        render([{"role": "user", "content": "hi"}], TokenizerSpec())
    assert info.value.param == "raw" and "(--raw)" in info.value.render("--raw")


def test_syntax_error_is_template_error():
    with pytest.raises(ChatTemplateError, match="not valid Jinja"):
        render([{"role": "user", "content": "hi"}], TokenizerSpec(chat_template="{% for m in messages %}"))


@pytest.mark.parametrize(
    "messages",
    [
        [],
        "hi",
        None,
        ["hi"],
        [{"role": "user"}],
        [{"content": "hi"}],
        [{"role": "user", "content": 3}],
        [{"role": "", "content": "hi"}],
    ],
)
def test_bad_messages_are_input_errors(messages):
    with pytest.raises(InputError) as info:
        render(messages, TokenizerSpec(chat_template=QWEN2))
    assert "\n" not in str(info.value)


# A template that shows tools itself, in the layout of Qwen2.5's (Hermes-style <tools> block);
# written for this test.
TOOLS_TEMPLATE = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}\n"
    "    {{- 'You may call functions. Their signatures, in <tools></tools>:\\n<tools>' }}\n"
    "    {%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}\n"
    "    {{- '\\n</tools>\\nCall one as <tool_call>\\n{\"name\": ..., \"arguments\": ...}\\n</tool_call><|im_end|>\\n' }}\n"
    "{%- elif messages[0].role == 'system' %}\n"
    "    {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}{%- if message.role != 'system' %}\n"
    "    {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}\n"
    "{%- endif %}{%- endfor %}\n"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}\n"
)
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city, \"now\" <live>",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.mark.parametrize("conversation", ["one user", "system", "multi-turn"])
def test_tools_render_as_transformers(conversation, smollm2_tokenizer_json):
    messages = CONVERSATIONS[conversation]
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(smollm2_tokenizer_json), chat_template=TOOLS_TEMPLATE)
    expected = tok.apply_chat_template(messages, tools=[WEATHER_TOOL], tokenize=False, add_generation_prompt=True)
    spec = TokenizerSpec(chat_template=TOOLS_TEMPLATE)
    got = render(messages, spec, tools=[WEATHER_TOOL])
    assert got == expected and '"name": "get_weather"' in got
    assert render(messages, spec) == tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def test_renders_tools_reads_the_template(smollm2_template):
    assert renders_tools(TokenizerSpec(chat_template=TOOLS_TEMPLATE))
    assert not renders_tools(TokenizerSpec(chat_template=smollm2_template))  # SmolLM2's shows no tools
    assert not renders_tools(TokenizerSpec(chat_template=QWEN2)) and not renders_tools(TokenizerSpec())
    # a template that sets its own `tools` does not read the request's
    assert not renders_tools(TokenizerSpec(chat_template="{% set tools = 1 %}{{ tools }}"))

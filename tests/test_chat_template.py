"""Chat templates: the same text as transformers' apply_chat_template; errors and the sandbox."""

from __future__ import annotations

import pytest

from edge.generation.chat_template import render
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

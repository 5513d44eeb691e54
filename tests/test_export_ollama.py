"""Ollama export: the Modelfile's Go template renders every conversation exactly as the
chat template the model was trained with (Studio's own template classes, or the official
Hugging Face Jinja templates rendered the way `apply_chat_template` renders them).

The Go side runs in tests/gotemplate.py, a strict renderer for the subset of text/template
the templates use, fed the way Ollama feeds it (and its Modelfile parser, ported), so a
Modelfile is checked as Ollama would read it. With Go installed, one test also runs the
templates through the real text/template.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from studio.core.data.templates import Alpaca, ChatML, Llama2
from studio.core.errors import StudioError
from studio.core.export import jinja as studio_jinja
from studio.core.export.ollama import (
    FAMILIES,
    detect_family,
    fits_triple_quotes,
    modelfile,
    ollama_template,
)
from tests.gotemplate import GoTemplateError, ollama_prompt, parse_modelfile, render

# ---- reference Jinja templates (official, from each model's tokenizer_config.json) ----------

# Meta-Llama-3-8B-Instruct.
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# Llama-2-7b-chat-hf (Meta's own: system folded into the first user turn, content stripped).
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)

# gemma-2-2b-it (and Gemma 1): no system role.
GEMMA2 = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}"
    "{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)

# gemma-3-1b-it: the system text opens the first user turn.
GEMMA3 = r"""{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""

# Phi-3-mini-4k-instruct (system messages in place).
PHI3_MINI = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}"
    "{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

# Phi-3.5-mini-instruct (an empty system message is skipped).
PHI3_5 = PHI3_MINI.replace(
    "message['role'] == 'system' %}", "message['role'] == 'system' and message['content'] %}"
)

# Phi-3-medium-4k-instruct (no system role; the user turn opens the reply).
PHI3_MEDIUM = (
    "{% for message in messages %}{% if (message['role'] == 'user') %}"
    "{{'<|user|>' + '\n' + message['content'] + '<|end|>' + '\n' + '<|assistant|>' + '\n'}}"
    "{% elif (message['role'] == 'assistant') %}{{message['content'] + '<|end|>' + '\n'}}"
    "{% endif %}{% endfor %}"
)

# Meta-Llama-3.1-8B-Instruct's tokenizer_config.json chat_template, verbatim.
LLAMA3_1 = r"""{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\n\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

# Qwen2.5-Instruct's chat_template, verbatim (adds a default system turn).
QWEN2_5 = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{{\"name\": <function-name>, \"arguments\": <args-json-object>}}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""


def jinja_render(template: str, messages, *, bos="", eos="", prefill=False) -> str:
    """apply_chat_template(tokenize=False): the generation prompt, or with `prefill` the text
    up to the end of the final assistant message (continue_final_message)."""
    from transformers.utils.chat_template_utils import render_jinja_template

    out, _ = render_jinja_template(
        conversations=[messages],
        chat_template=template,
        add_generation_prompt=not prefill,
        continue_final_message=prefill,
        bos_token=bos,
        eos_token=eos,
    )
    return out[0]


class Case:
    """One chat template to match: what Ollama export is given, and the text to expect."""

    def __init__(
        self,
        id,
        jinja,
        name="auto",
        *,
        family,
        bos="",
        eos="",
        studio=None,
        system=True,
        empty_system=True,
        trims=False,
        empty_user=True,
        stops=(),
    ):
        self.id, self.jinja, self.name, self.family = id, jinja, name, family
        self.bos, self.eos, self.studio = bos, eos, studio
        self.system, self.empty_system, self.trims, self.stops = system, empty_system, trims, stops
        self.empty_user = empty_user

    def expected(self, messages, prefill=False) -> str:
        if self.studio is not None:  # what Studio trained on and prompts with
            if prefill:
                return self.studio.prompt(messages[:-1]) + messages[-1]["content"]
            return self.studio.prompt(messages)
        return jinja_render(self.jinja, messages, bos=self.bos, eos=self.eos, prefill=prefill)


CASES = [
    Case(
        "studio-chatml",
        studio_jinja.CHATML,
        "chatml",
        family="chatml",
        studio=ChatML(),
        stops=["<|im_end|>"],
    ),
    Case(
        "studio-alpaca",
        studio_jinja.alpaca("</s>"),
        "alpaca",
        family="alpaca",
        studio=Alpaca("</s>"),
        stops=["</s>", "### Instruction:"],
    ),
    Case(
        "studio-alpaca-odd-eos",
        studio_jinja.alpaca('<"e\\nd">'),
        "alpaca",
        family="alpaca",
        studio=Alpaca('<"e\\nd">'),
        stops=['<"e\\nd">', "### Instruction:"],
    ),
    Case(
        "studio-llama2",
        studio_jinja.llama2("<s>", "</s>"),
        "llama2",
        family="llama2",
        bos="<s>",
        studio=Llama2("<s>", "</s>"),
        stops=["</s>"],
    ),
    Case(
        "studio-llama2-no-bos",
        studio_jinja.llama2("", "<|endoftext|>"),
        "llama2",
        family="llama2",
        studio=Llama2("", "<|endoftext|>"),
        stops=["<|endoftext|>"],
    ),
    Case("qwen2.5", QWEN2_5, family="chatml", stops=["<|im_end|>"]),
    Case(
        "llama3", LLAMA3, family="llama3", bos="<|begin_of_text|>", trims=True, stops=["<|eot_id|>"]
    ),
    Case(
        "llama3.1",
        LLAMA3_1,
        "",
        family="llama3",
        bos="<|begin_of_text|>",
        trims=True,
        stops=["<|eot_id|>"],
    ),
    # Meta's .strip() covers the <<SYS>> block and the user text together, so an empty user
    # message would also strip the block's trailing blank line, which Go cannot do.
    Case(
        "llama2-meta",
        LLAMA2,
        family="llama2",
        bos="<s>",
        eos="</s>",
        trims=True,
        empty_user=False,
        stops=["</s>"],
    ),
    Case(
        "gemma2",
        GEMMA2,
        family="gemma",
        bos="<bos>",
        system=False,
        trims=True,
        stops=["<end_of_turn>"],
    ),
    Case("gemma3", GEMMA3, family="gemma", bos="<bos>", trims=True, stops=["<end_of_turn>"]),
    Case(
        "phi3-mini",
        PHI3_MINI,
        family="phi3",
        eos="<|endoftext|>",
        empty_system=False,
        stops=["<|end|>"],
    ),
    Case("phi3.5", PHI3_5, family="phi3", eos="<|endoftext|>", stops=["<|end|>"]),
    Case("phi3-medium", PHI3_MEDIUM, family="phi3", system=False, stops=["<|end|>"]),
]
BY_ID = {c.id: c for c in CASES}

# Text that breaks naive templating: quotes (and the Modelfile's """), braces of both template
# languages, escapes, line breaks, other markers, and characters Ollama's parser would drop.
TRICKY = [
    '"',
    '"""',
    "'",
    "\\",
    "\\n",
    "{{ .Content }}",
    "{%",
    "}}",
    "{",
    "\n",
    "\r\n",
    "\t",
    " ",
    "é",
    "日本語",
    "😀",
    "👩\u200d💻",
    "\u00a0",
    "<|im_end|>",
    "[INST]",
    "<s>",
    "###",
]
TEXT = st.lists(st.one_of(st.sampled_from(TRICKY), st.text(max_size=6)), max_size=5).map("".join)
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


def texts(case: Case, nonempty=False):
    t = TEXT.map(str.strip) if case.trims else TEXT  # Go templates cannot trim
    return t.filter(bool) if nonempty else t


@st.composite
def conversations(draw, case: Case, system=None, prefill=False):
    msgs = []
    with_system = draw(st.booleans()) if system is None else system
    if with_system and case.system:
        content = draw(texts(case, nonempty=not case.empty_system))
        msgs.append({"role": "system", "content": content})
    for _ in range(draw(st.integers(0, 2))):
        msgs.append({"role": "user", "content": draw(texts(case, nonempty=not case.empty_user))})
        msgs.append({"role": "assistant", "content": draw(texts(case))})
    msgs.append({"role": "user", "content": draw(texts(case, nonempty=not case.empty_user))})
    if prefill:  # Ollama continues a final assistant message
        msgs.append({"role": "assistant", "content": draw(texts(case, nonempty=True))})
    return msgs


def ollama_of(case: Case):
    return ollama_template(case.jinja, case.name)


# ---- the acceptance test: Go render == Jinja / Studio render ------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_template_renders_like_the_trained_template(case):
    tmpl = ollama_of(case)
    assert tmpl.family == case.family
    assert tmpl.bos == case.bos  # left to the tokenizer, which adds it

    @SETTINGS
    @given(conversations(case))
    def check(messages):
        assert tmpl.bos + ollama_prompt(tmpl.template, messages) == case.expected(messages)

    check()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_a_final_assistant_message_is_continued(case):
    tmpl = ollama_of(case)

    @SETTINGS
    @given(conversations(case, prefill=True))
    def check(messages):
        got = tmpl.bos + ollama_prompt(tmpl.template, messages)
        assert got == case.expected(messages, prefill=True)

    check()


@pytest.mark.parametrize("case", [c for c in CASES if c.system], ids=lambda c: c.id)
def test_the_modelfile_system_prompt_renders_like_a_system_message(case):
    """Through the Modelfile as Ollama parses it: SYSTEM when it can hold the text, else the
    template's built-in default (a line ending in \"\"\", or characters the parser drops)."""
    tmpl = ollama_of(case)

    @SETTINGS
    @given(conversations(case, system=False), texts(case, nonempty=True))
    def check(messages, system):
        commands = parse_modelfile(modelfile("model.gguf", tmpl, system=system))
        args = dict(commands)
        assert ("system" in args) == fits_triple_quotes(system)
        assert args.get("system", system) == system
        got = tmpl.bos + ollama_prompt(args["template"], messages, system=args.get("system", ""))
        assert got == case.expected([{"role": "system", "content": system}, *messages])

    check()


# ---- the Modelfile ------------------------------------------------------------------------


def test_modelfile_lines_as_ollama_reads_them():
    tmpl = ollama_of(BY_ID["llama3"])
    text = modelfile(
        "run-q4_k_m.gguf",
        tmpl,
        system='Say "hi".',
        adapter_name="lora.gguf",
        parameters={"temperature": 0.2, "num_ctx": 4096, "stop": ["<|end_of_text|>"]},
    )
    assert text.startswith('FROM ./run-q4_k_m.gguf\nADAPTER ./lora.gguf\nTEMPLATE """')
    assert parse_modelfile(text) == [
        ("model", "./run-q4_k_m.gguf"),
        ("adapter", "./lora.gguf"),
        ("template", tmpl.template),
        ("system", 'Say "hi".'),
        ("stop", "<|eot_id|>"),
        ("stop", "<|end_of_text|>"),
        ("temperature", "0.2"),
        ("num_ctx", "4096"),
    ]


def test_system_with_triple_quotes():
    tmpl = ollama_of(BY_ID["studio-chatml"])
    inline = 'Use """docstrings""" always.\nEnds with a quote "'
    assert fits_triple_quotes(inline)
    assert dict(parse_modelfile(modelfile("m.gguf", tmpl, system=inline)))["system"] == inline
    # A line ending in """ would end the SYSTEM value early: it goes into the template.
    ending = 'First line """\nsecond'
    assert not fits_triple_quotes(ending)
    text = modelfile("m.gguf", tmpl, system=ending)
    assert "SYSTEM" not in text
    got = ollama_prompt(dict(parse_modelfile(text))["template"], [{"role": "user", "content": "q"}])
    assert got == ChatML().prompt(
        [{"role": "system", "content": ending}, {"role": "user", "content": "q"}]
    )


@SETTINGS
@given(TEXT)
@example('a """\nb')
@example('a """ \t\r\nb')
@example('ends """')
@example('"""\n')
@example("zero\u200dwidth")
@example("no\u00a0break")
def test_fits_triple_quotes_says_what_ollama_reads_back(text):
    try:
        read = dict(parse_modelfile(f'FROM ./m.gguf\nSYSTEM """{text}"""\n')).get("system")
    except GoTemplateError:  # the value ended early and the rest is not a command
        read = None
    assert (read == text) == fits_triple_quotes(text)


def test_no_system_or_adapter_lines_unless_asked_and_names_with_spaces():
    text = modelfile("my model.gguf", ollama_of(BY_ID["gemma3"]))
    assert "SYSTEM" not in text and "ADAPTER" not in text
    assert dict(parse_modelfile(text))["model"] == "./my model.gguf"
    with pytest.raises(StudioError):
        modelfile("../x.gguf", ollama_of(BY_ID["gemma3"]))
    with pytest.raises(StudioError):
        modelfile("x.gguf", ollama_of(BY_ID["gemma3"]), parameters={"stop": "a\nb"})


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_stops(case):
    assert ollama_of(case).stops == list(case.stops)


def test_families():
    assert set(FAMILIES) == {c.family for c in CASES}


# ---- recognising the family ---------------------------------------------------------------


def test_studio_template_names_win_and_auto_reads_the_jinja():
    assert detect_family(None, "alpaca") == "alpaca"
    assert detect_family(LLAMA3, "chatml") == "chatml"
    assert detect_family(QWEN2_5, "auto") == "chatml"
    assert detect_family(GEMMA2, "") == "gemma"


@pytest.mark.parametrize(
    "jinja, name",
    [
        (None, ""),
        ("", "auto"),
        ("{% for m in messages %}{{ m.content }}{% endfor %}", "auto"),
        # Mistral: [INST] without <<SYS>>, with its own spacing
        ("{{ bos_token }}{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}", ""),
        # Phi-4: ChatML markers joined by <|im_sep|>
        ("{{'<|im_start|>' + m['role'] + '<|im_sep|>' + m['content'] + '<|im_end|>'}}", ""),
        (studio_jinja.CHATML, "vicuna"),
    ],
)
def test_unrecognised_templates_are_a_clear_error(jinja, name):
    with pytest.raises(StudioError) as err:
        ollama_template(jinja, name)
    message = str(err.value)
    assert message.startswith("Ollama export:") and message.endswith(".")
    if name != "vicuna":
        assert all(f in message for f in FAMILIES)


# ---- the renderer refuses what it does not understand -------------------------------------


@pytest.mark.parametrize(
    "src",
    [
        '{{ printf "%s" .System }}',
        "{{ .System | len }}",
        "{{ with .System }}{{ . }}{{ end }}",
        "{{ index .Messages 0 }}",
        "{{ .Missing }}",
        "{{ $undefined }}",
        "{{ if .System }}open",
        "{{ `raw` }}",
        "{{/* comment */}}",
        "{{ eq .System 1 }}",
        "{{ .Messages }}",
        '{{ "\\q" }}',
    ],
)
def test_renderer_rejects_unsupported_templates(src):
    with pytest.raises(GoTemplateError):
        render(src, {"System": "s", "Messages": []})


def test_renderer_semantics():
    data = {
        "System": "",
        "Messages": [{"Role": "user", "Content": "a"}, {"Role": "x", "Content": "b"}],
    }
    src = (
        "{{- $n := 0 }}{{ range $i, $m := .Messages }}{{ $n = $i }}"
        '{{ if eq $m.Role "user" }}U{{ else if or (eq $m.Role "y") (eq .Role "x") }}X{{ else }}?'
        "{{ end }}{{ end }}  \n {{- $n }} {{ len (slice $.Messages 1) }}"
        ' {{ and .System "no" }}|{{ or .System "yes" }}|{{ not .System }} {{ "\\u00e9\\"\\n" -}}  !'
    )
    assert render(src, data) == 'UX1 1 |yes|true é"\n!'


@pytest.mark.skipif(shutil.which("go") is None, reason="Go is not installed")
def test_real_go_text_template_agrees(tmp_path):
    """The same renders through Go's own text/template (Ollama's missingkey=zero)."""
    program = tmp_path / "main.go"
    program.write_text(GO_PROGRAM)
    jobs, expected = [], []
    convo = [
        {"role": "system", "content": 'a "b" {{ c }}'},
        {"role": "user", "content": "é\n"},
        {"role": "assistant", "content": " x "},
        {"role": "user", "content": "y"},
    ]
    for case in CASES:
        for msgs in (convo[1:], convo if case.system else convo[1:], convo[:3]):
            tmpl = ollama_of(case)
            data = {
                "Messages": [{"Role": m["role"], "Content": m["content"]} for m in msgs],
                "System": "",
                "Tools": None,
                "Response": "",
            }
            jobs.append({"Template": tmpl.template, "Data": data})
            expected.append(ollama_prompt(tmpl.template, msgs))
    out = subprocess.run(
        ["go", "run", str(program)],
        input=json.dumps(jobs),
        text=True,
        capture_output=True,
        check=True,
        timeout=300,
    )
    assert json.loads(out.stdout) == expected


GO_PROGRAM = """package main

import (
	"encoding/json"
	"os"
	"strings"
	"text/template"
)

func main() {
	var jobs []struct {
		Template string
		Data     map[string]any
	}
	if err := json.NewDecoder(os.Stdin).Decode(&jobs); err != nil {
		panic(err)
	}
	var out []string
	for _, job := range jobs {
		t := template.Must(template.New("").Option("missingkey=zero").Parse(job.Template))
		var b strings.Builder
		if err := t.Execute(&b, job.Data); err != nil {
			panic(err)
		}
		out = append(out, b.String())
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
"""

"""The chat template Studio trained with, as a Jinja template for the exported tokenizer.

An exported model must be prompted exactly as it was trained. A run that used the tokenizer's
own template ("auto") keeps it; a run that used one of Studio's built-in templates (chatml,
alpaca, llama2) gets a Jinja template that renders the very text `ChatTemplate.segments` and
`prompt` produce (a test renders both), so stock transformers, llama.cpp and Ollama see the
same prompt that training and Studio's chat did.
"""

from __future__ import annotations

import json

from studio.core.data.templates import ALPACA_SYSTEM, Alpaca, ChatML, ChatTemplate, Llama2


def _lit(text: str) -> str:
    """A Jinja string literal (JSON's escapes are ones Jinja reads)."""
    return json.dumps(text)


CHATML = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def alpaca(eos: str) -> str:
    return (
        "{%- set ns = namespace(system=" + _lit(ALPACA_SYSTEM) + ") -%}"
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'system' -%}{%- set ns.system = message['content'] -%}{%- endif -%}"
        "{%- endfor -%}"
        "{{- ns.system + '\\n\\n' -}}"
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'user' -%}"
        "{{- '### Instruction:\\n' + message['content'] + '\\n\\n### Response:\\n' -}}"
        "{%- elif message['role'] != 'system' -%}"
        "{{- message['content'] + " + _lit(eos) + " + '\\n\\n' -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
    )


def llama2(bos: str, eos: str) -> str:
    return (
        "{%- set ns = namespace(system='') -%}"
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'system' -%}"
        "{%- set ns.system = '<<SYS>>\\n' + message['content'] + '\\n<</SYS>>\\n\\n' -%}"
        "{%- elif message['role'] == 'user' -%}"
        "{{- " + _lit(bos) + " + '[INST] ' + ns.system + message['content'] + ' [/INST] ' -}}"
        "{%- set ns.system = '' -%}"
        "{%- else -%}"
        "{{- message['content'] + ' ' + " + _lit(eos) + " -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
    )


def jinja_template(template: ChatTemplate, tokenizer) -> str:
    """The Jinja text of the template a run trained with."""
    if isinstance(template, ChatML):
        return CHATML
    if isinstance(template, Alpaca):
        return alpaca(template.eos)
    if isinstance(template, Llama2):
        return llama2(template.bos, template.eos)
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, dict):  # several named templates: the default is the chat one
        own = own.get("default") or next(iter(own.values()), None)
    if not own:
        return CHATML
    return own

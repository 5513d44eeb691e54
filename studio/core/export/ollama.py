"""An Ollama Modelfile whose TEMPLATE prompts the model exactly as it was trained.

Ollama renders prompts with a Go text/template, not Jinja, so the run's chat template is
recognised as one of a few families and written out as a Go template that renders the same
text (a test renders both on random conversations). The templates follow Ollama's rules:
`.Messages` holds every message with system messages in place (the Modelfile's SYSTEM is
prepended as one when a request has none), a trailing assistant message is a prefill to
continue, and the tokenizer adds the leading BOS itself, so the template leaves it out.

Go templates cannot strip whitespace: for templates whose Jinja trims message content
(Llama 3, Gemma, Llama 2's `.strip()`) the text matches when the content has no leading or
trailing whitespace, which is how chat messages arrive.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field

from studio.core.data.templates import ALPACA_SYSTEM
from studio.core.errors import StudioError

FAMILIES = ("chatml", "llama3", "llama2", "gemma", "phi3", "alpaca")
BUILT_IN = ("chatml", "alpaca", "llama2")  # Studio's own templates, by data.template name

# Markers that identify a family in a Jinja template, checked in this order.
_MARKERS = (
    ("chatml", ("<|im_start|>",)),
    ("llama3", ("<|start_header_id|>", "<|eot_id|>")),
    ("gemma", ("<start_of_turn>",)),
    ("phi3", ("<|user|>", "<|assistant|>", "<|end|>")),
    ("llama2", ("[INST]", "<<SYS>>")),
    ("alpaca", ("### Instruction:", "### Response:")),
)
_JSON_STR = r'"(?:[^"\\]|\\.)*"'


@dataclass
class OllamaTemplate:
    family: str
    template: str
    """The Go template text for TEMPLATE."""
    stops: list[str]
    """End-of-turn strings for PARAMETER stop."""
    bos: str = ""
    """The BOS the trained text starts with, which the template leaves to Ollama's tokenizer
    (it adds one when the GGUF says tokenizer.ggml.add_bos_token; a second would be wrong)."""
    options: dict = field(default_factory=dict, repr=False)
    """What the template was built from (eos, bos, default system...), to rebuild it."""


def detect_family(jinja_template: str | None, template_name: str = "") -> str:
    """The family of Studio's template `template_name`, or else of the Jinja template text."""
    name = (template_name or "").strip().lower()
    if name in BUILT_IN:
        return name
    if name not in ("", "auto"):
        raise StudioError(
            f"Ollama export: unknown template {template_name!r}; Studio's templates are "
            "auto, chatml, alpaca and llama2."
        )
    text = jinja_template or ""
    if "<|im_sep|>" in text:  # Phi-4: ChatML markers but no newline after the role
        raise StudioError(_unknown("a Phi-4 style (<|im_sep|>) chat template"))
    for family, markers in _MARKERS:
        if all(m in text for m in markers):
            return family
    if "[INST]" in text:  # Mistral: [INST] without <<SYS>>; its variants differ in spacing
        raise StudioError(_unknown("a Mistral style [INST] chat template"))
    raise StudioError(
        _unknown("this model's chat template" if text.strip() else "no chat template")
    )


def _unknown(what: str) -> str:
    return (
        f"Ollama export: Studio cannot write an Ollama template for {what}; it knows "
        f"{', '.join(FAMILIES)} (train with --template chatml to export this model to Ollama)."
    )


def ollama_template(jinja_template: str | None, template_name: str = "") -> OllamaTemplate:
    """The Go template, stops and BOS for the run's chat template."""
    family = detect_family(jinja_template, template_name)
    text = jinja_template or ""
    has_bos = "bos_token" in text
    if family == "chatml":
        # Qwen's templates add a default system turn when the conversation has none.
        found = re.search(r"<\|im_start\|>system(?:\\n|\n)([^'\"{}\\\n]+?)<\|im_end\|>", text)
        opts = {"system": found.group(1) if found else None}
    elif family == "llama3":
        opts = {"bos": "<|begin_of_text|>", "preamble": _llama31_preamble(text)}
    elif family == "gemma":
        opts = {"bos": "<bos>"}
    elif family == "phi3":
        opts = {"bos": "<s>" if has_bos else ""}
    elif family == "alpaca":
        # Studio's Jinja (export/jinja.py) writes the EOS as a JSON string after the reply.
        found = re.search(r"message\['content'\] \+ (" + _JSON_STR + r") \+ '\\n\\n'", text)
        if text and not found:
            raise StudioError(_unknown("an Alpaca template not written by Studio"))
        opts = {"eos": json.loads(found.group(1)) if found else "", "system": ALPACA_SYSTEM}
    else:  # llama2: Studio's (JSON-string BOS/EOS, a space after [/INST]) or Meta's own
        bos = re.search(r"\{\{- (" + _JSON_STR + r") \+ '\[INST\] '", text)
        eos = re.search(r"' ' \+ (" + _JSON_STR + r") -\}\}", text)
        if bos and eos:
            opts = {
                "bos": json.loads(bos.group(1)),
                "eos": json.loads(eos.group(1)),
                "studio": True,
            }
        else:
            opts = {"bos": "<s>", "eos": "</s>", "studio": not text}
    return _template(family, opts)


def _llama31_preamble(text: str) -> str:
    """Llama 3.1+ always opens with a system turn stating its knowledge cut-off and a date.

    The date is the template's fallback; Llama 3.2's template uses the day it renders on.
    """
    if "Cutting Knowledge Date" not in text:
        return ""
    known = re.search(r"Cutting Knowledge Date: ([^\"'\\\n]+)", text)
    date = re.search(r"date_string = \"([^\"]+)\"", text)
    known_text = known.group(1) if known else "December 2023"
    date_text = date.group(1) if date else "26 Jul 2024"
    return f"Cutting Knowledge Date: {known_text}\nToday Date: {date_text}\n\n"


def _template(family: str, opts: dict) -> OllamaTemplate:
    eos = opts.get("eos", "")
    stops = {
        "chatml": ["<|im_end|>"],
        "llama3": ["<|eot_id|>"],
        "llama2": [eos],
        "gemma": ["<end_of_turn>"],
        "phi3": ["<|end|>"],
        "alpaca": [eos, "### Instruction:"],  # Studio's chat stops on both
    }[family]
    lines = _BUILDERS[family](opts)
    for line in lines:  # layout newlines are trimmed by {{- ; meaningful ones are literals
        assert line.startswith("{{-") and line == line.rstrip(), line
    return OllamaTemplate(
        family, "\n".join(lines), [s for s in stops if s], opts.get("bos", ""), opts
    )


# ---- Go template pieces -------------------------------------------------------------------


def _printable(ch: str) -> bool:
    """Go's strconv.IsPrint: Ollama's Modelfile parser drops every other character."""
    return ch == " " or unicodedata.category(ch)[0] in "LMNPS"


def _go_str(text: str) -> str:
    """A Go string literal; its escapes keep Ollama's Modelfile parser off the text."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\n\t\r":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}[ch])
        elif _printable(ch):
            out.append(ch)
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def _go(text: str) -> str:
    return "{{ " + _go_str(text) + " }}"


def _out(text: str) -> str:
    """Plain template text when it is safe as-is, else a Go string literal."""
    if not text:
        return ""
    if re.fullmatch(r"[!-~](?:[ -~]*[!-~])?", text) and not re.search("[{}]", text):
        return text
    return _go(text)


def _fill(opts: dict, text: str, **pieces: str) -> list[str]:
    """Template lines with @NAME@ replaced (in one pass, so no piece is read as a name)."""
    common = {"NL": _out("\n"), "NL2": _out("\n\n"), "LOOP": LOOP, "GEN": GEN}
    pieces = {**common, "VARS": _vars(opts), **pieces}
    return re.sub(r"@(\w+)@", lambda m: pieces[m.group(1)], text).strip("\n").split("\n")


LOOP = """{{- range $i, $m := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}"""
GEN = '{{- if and $last (ne $m.Role "assistant") }}'  # the generation prompt after the last turn


def _vars(opts: dict) -> str:
    """$sys (the default system prompt) and $has (whether there is one) for the builders."""
    has = "true" if opts.get("system") is not None else "false"
    return "{{- $sys := " + _go_str(opts.get("system") or "") + " }}\n{{- $has := " + has + " }}"


def _turns(opts: dict, head, end: str, keep: str = "") -> list[str]:
    """Formats where each message is head(role) + content + end, system messages in place."""
    default = ""
    if opts.get("system") is not None:
        default = '\n{{- if and (eq $i 0) (ne $m.Role "system") }}' + head("system")
        default += _out(opts["system"]) + _out(end) + "{{ end }}"
    return _fill(
        opts,
        """@LOOP@@DEFAULT@
{{- if eq $m.Role "assistant" }}@HA@{{ $m.Content }}{{ if not $last }}@END@{{ end }}
{{- else@KEEP@ }}@HR@{{ $m.Content }}@END@
{{- end }}
@GEN@@HA@{{ end }}
{{- end }}""",
        HA=head("assistant"),
        HR=head("{{ $m.Role }}"),
        END=_out(end),
        KEEP=f" if {keep}" if keep else "",
        DEFAULT=default,
    )


def _chatml(opts):
    return _turns(opts, lambda role: f"<|im_start|>{role}" + _out("\n"), "<|im_end|>\n")


def _phi3(opts):
    # Phi-3.5 skips an empty system message and ignores roles other than these three.
    keep = '(or (eq $m.Role "user") (and (eq $m.Role "system") $m.Content))'
    return _turns(opts, lambda role: f"<|{role}|>" + _out("\n"), "<|end|>\n", keep)


def _llama3_head(role):
    return f"<|start_header_id|>{role}<|end_header_id|>" + _out("\n\n")


def _llama3(opts):
    if not opts.get("preamble"):
        return _turns(opts, _llama3_head, "<|eot_id|>")
    # Llama 3.1+: the first system message goes inside an always-present system turn.
    return _fill(
        opts,
        """@VARS@
{{- range $i, $m := .Messages }}{{ if and (eq $i 0) (eq $m.Role "system") }}{{ $sys = $m.Content }}{{ end }}{{ end }}@HS@@PRE@{{ $sys }}<|eot_id|>
@LOOP@
{{- if and (eq $i 0) (eq $m.Role "system") }}
{{- else if eq $m.Role "assistant" }}@HA@{{ $m.Content }}{{ if not $last }}<|eot_id|>{{ end }}
{{- else }}@HR@{{ $m.Content }}<|eot_id|>
{{- end }}
@GEN@@HA@{{ end }}
{{- end }}""",
        HS=_llama3_head("system"),
        HA=_llama3_head("assistant"),
        HR=_llama3_head("{{ $m.Role }}"),
        PRE=_out(opts["preamble"]),
    )


def _gemma(opts):
    # Gemma 3 puts the first (system) message's text at the top of the first user turn.
    return _fill(
        opts,
        """@VARS@
{{- $started := false }}
@LOOP@
{{- if and (eq $i 0) (eq $m.Role "system") }}{{ $sys = $m.Content }}{{ $has = true }}
{{- else if ne $m.Role "system" }}<start_of_turn>{{ if eq $m.Role "assistant" }}model{{ else }}{{ $m.Role }}{{ end }}@NL@
{{- if and $has (not $started) }}{{ $sys }}@NL2@{{ end }}
{{- $started = true }}{{ $m.Content }}
{{- if or (ne $m.Role "assistant") (not $last) }}<end_of_turn>@NL@{{ end }}
{{- end }}
@GEN@<start_of_turn>model@NL@{{ end }}
{{- end }}""",
    )


def _llama2(opts):
    # A system message applies to the next user turn. Every user turn opens with BOS except
    # the first, whose BOS the tokenizer adds. Studio's prompt ends "[/INST] " and the reply
    # follows; Meta's ends "[/INST]" and the reply starts with a space.
    studio = opts["studio"]
    return _fill(
        opts,
        """@VARS@
{{- $first := true }}
@LOOP@
{{- if eq $m.Role "system" }}{{ $sys = $m.Content }}{{ $has = true }}
{{- else if eq $m.Role "user" }}{{ if not $first }}@BOS@{{ end }}[INST] {{ if $has }}<<SYS>>@NL@{{ $sys }}@NL@<</SYS>>@NL2@{{ end }}{{ $m.Content }} [/INST]@AFTER@
{{- $first = false }}{{ $has = false }}
{{- else if eq $m.Role "assistant" }}@BEFORE@{{ $m.Content }}{{ if not $last }}@EOS@{{ end }}
{{- end }}
{{- end }}""",
        BOS=_out(opts["bos"]),
        EOS=_out(" " + opts["eos"]),
        AFTER=_out(" ") if studio else "",
        BEFORE="" if studio else _out(" "),
    )


def _alpaca(opts):
    # Studio's Alpaca: the last system message (else the default) heads the prompt.
    return _fill(
        opts,
        """@VARS@
{{- range $i, $m := .Messages }}{{ if eq $m.Role "system" }}{{ $sys = $m.Content }}{{ end }}{{ end }}{{ $sys }}@NL2@
@LOOP@
{{- if eq $m.Role "user" }}@INSTRUCTION@{{ $m.Content }}@RESPONSE@
{{- else if ne $m.Role "system" }}{{ $m.Content }}{{ if not $last }}@EOS@{{ end }}
{{- end }}
{{- end }}""",
        INSTRUCTION=_out("### Instruction:\n"),
        RESPONSE=_out("\n\n### Response:\n"),
        EOS=_out(opts["eos"] + "\n\n"),
    )


_BUILDERS = {
    "chatml": _chatml,
    "llama3": _llama3,
    "llama2": _llama2,
    "gemma": _gemma,
    "phi3": _phi3,
    "alpaca": _alpaca,
}


# ---- the Modelfile ------------------------------------------------------------------------


def fits_triple_quotes(text: str) -> bool:
    """Whether Ollama's Modelfile parser reads `\"\"\"text\"\"\"` back as exactly `text`.

    It has no escapes: it drops unprintable characters and ends the value at the first
    newline where the text so far (right-stripped) ends with three quotes.
    """
    if not all(_printable(ch) or ch in "\t\n\r" for ch in text):
        return False
    return not any(
        ch in "\r\n" and text[:k].rstrip(" \t\r\n").endswith('"""') for k, ch in enumerate(text)
    )


def _file(name: str, what: str) -> str:
    if not name or name != name.strip() or re.search(r"[/\\\n\r\"]", name):
        raise StudioError(f"Ollama export: {what} {name!r} must be a plain file name.")
    return f'"./{name}"' if " " in name else f"./{name}"


def _param(name: str, value) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise StudioError(f"Ollama export: {name!r} is not an Ollama parameter name.")
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float)):
        text = str(value)
    elif isinstance(value, str) and value and all(_printable(c) for c in value):
        text = f'"{value}"'
    else:
        raise StudioError(f"Ollama export: PARAMETER {name} cannot hold {value!r}.")
    return f"PARAMETER {name} {text}"


def modelfile(
    gguf_name: str,
    tmpl: OllamaTemplate,
    *,
    system: str = "",
    adapter_name: str = "",
    parameters: dict | None = None,
) -> str:
    """The Modelfile text. gguf_name/adapter_name are file names beside the Modelfile."""
    lines = [f"FROM {_file(gguf_name, 'the GGUF')}"]
    if adapter_name:
        lines.append(f"ADAPTER {_file(adapter_name, 'the adapter')}")
    template = tmpl.template
    if system and not fits_triple_quotes(system):
        # SYSTEM cannot hold this text, so the template carries it as the default system
        # prompt (as Go string escapes), which renders the same as a SYSTEM line would.
        template = _template(tmpl.family, {**tmpl.options, "system": system}).template
        system = ""
    if not fits_triple_quotes(template):
        raise StudioError("Ollama export: the template cannot be written into a Modelfile.")
    lines.append(f'TEMPLATE """{template}"""')
    if system:
        lines.append(f'SYSTEM """{system}"""')
    params = dict(parameters or {})
    extra = params.pop("stop", [])
    stops = list(dict.fromkeys(tmpl.stops + ([extra] if isinstance(extra, str) else list(extra))))
    lines += [_param("stop", s) for s in stops]
    for name, value in params.items():
        lines += [_param(name, v) for v in (value if isinstance(value, list) else [value])]
    return "\n".join(lines) + "\n"

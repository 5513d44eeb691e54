"""Chat templates: turn a conversation into text segments, each marked trainable or not.

A template's `segments(messages)` returns `[(text, trained), ...]` whose concatenation is
the full rendered text. `trained` is True exactly for each assistant turn's content plus
its end-of-turn marker, which is what the loss mask keys on. `prompt(messages)` renders the
text a model continues at inference time, so chat uses the same template as training.

The tokenizer's own Jinja template is used when it has one ("auto"); built-in fallbacks
(chatml, alpaca, llama2) can be chosen by name.
"""

from __future__ import annotations

from studio.core.errors import ConfigError

Segments = list[tuple[str, bool]]

ALPACA_SYSTEM = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)


class ChatTemplate:
    name = "base"

    def segments(self, messages: list[dict]) -> Segments:
        raise NotImplementedError

    def prompt(self, messages: list[dict]) -> str:
        """The text before the next assistant reply (generation prompt included)."""
        raise NotImplementedError

    @property
    def stop_strings(self) -> list[str]:
        return []


class ChatML(ChatTemplate):
    name = "chatml"
    eot = "<|im_end|>"

    def segments(self, messages):
        out: Segments = []
        for m in messages:
            head = f"<|im_start|>{m['role']}\n"
            if m["role"] == "assistant":
                out += [(head, False), (m["content"] + self.eot, True), ("\n", False)]
            else:
                out.append((head + m["content"] + self.eot + "\n", False))
        return out

    def prompt(self, messages):
        return "".join(t for t, _ in self.segments(messages)) + "<|im_start|>assistant\n"

    @property
    def stop_strings(self):
        return [self.eot]


class Alpaca(ChatTemplate):
    name = "alpaca"

    def __init__(self, eos: str):
        self.eos = eos

    def segments(self, messages):
        system = ALPACA_SYSTEM
        out: Segments = []
        for m in messages:
            if m["role"] == "system":
                system = m["content"]
            elif m["role"] == "user":
                out.append((f"### Instruction:\n{m['content']}\n\n### Response:\n", False))
            else:
                out += [(m["content"] + self.eos, True), ("\n\n", False)]
        return [(system + "\n\n", False)] + out

    def prompt(self, messages):
        return "".join(t for t, _ in self.segments(messages))

    @property
    def stop_strings(self):
        return [self.eos, "### Instruction:"]


class Llama2(ChatTemplate):
    name = "llama2"

    def __init__(self, bos: str, eos: str):
        self.bos, self.eos = bos, eos

    def segments(self, messages):
        system = ""
        out: Segments = []
        for m in messages:
            if m["role"] == "system":
                system = f"<<SYS>>\n{m['content']}\n<</SYS>>\n\n"
            elif m["role"] == "user":
                out.append((f"{self.bos}[INST] {system}{m['content']} [/INST] ", False))
                system = ""
            else:
                out.append((m["content"] + " " + self.eos, True))
        return out

    def prompt(self, messages):
        return "".join(t for t, _ in self.segments(messages))

    @property
    def stop_strings(self):
        return [self.eos]


class TokenizerTemplate(ChatTemplate):
    """The model's own Jinja template, split into segments by rendering growing prefixes.

    For assistant turn i, the text between render(messages[:i], generation prompt) and
    render(messages[:i+1]) is that turn: its content is trained, and so is the end-of-turn
    marker after it (trailing whitespace excepted, which the next turn's header owns).
    """

    name = "tokenizer"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def _render(self, messages, generation_prompt: bool) -> str:
        if not messages:
            return ""
        try:
            text = self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=generation_prompt
            )
        except Exception as e:
            # A template from a stranger's tokenizer_config.json can fail in any way (a
            # TypeError, endless recursion, a syntax error): each caller reports a TemplateError
            # for the one conversation (the data import skips the record, chat says why).
            from jinja2 import TemplateError

            if isinstance(e, TemplateError):
                raise
            raise TemplateError(f"the template fails: {type(e).__name__}: {e}") from None
        if not isinstance(text, str):
            from jinja2 import TemplateError

            raise TemplateError(f"the template renders {type(text).__name__}, not text")
        return text

    def segments(self, messages):
        out: Segments = []
        done = ""
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            prefix = self._render(messages[:i], True)
            full = self._render(messages[: i + 1], False)
            if not prefix.startswith(done) or not full.startswith(prefix):
                raise ConfigError(
                    "data.template: the model's chat template rewrites earlier turns, so the "
                    "assistant turns cannot be located; choose a built-in template "
                    "(chatml, alpaca or llama2).",
                    field="data.template",
                )
            if prefix != done:
                out.append((prefix[len(done) :], False))
            turn = full[len(prefix) :]
            trained = turn.rstrip()
            if m["content"] and m["content"] not in trained:
                # The template altered the content (e.g. stripped it); train the whole turn.
                trained = turn
            out.append((trained, True))
            if turn[len(trained) :]:
                out.append((turn[len(trained) :], False))
            done = full
        rest = self._render(messages, False)[len(done) :]
        if rest:
            out.append((rest, False))
        return out

    def prompt(self, messages):
        return self._render(messages, True)

    @property
    def stop_strings(self):
        eos = self.tokenizer.eos_token
        return [eos] if eos else []


def resolve_template(tokenizer, name: str = "auto") -> ChatTemplate:
    """Pick the template: the tokenizer's own for "auto", else a built-in by name."""
    if name in (None, "", "auto"):
        if getattr(tokenizer, "chat_template", None):
            return TokenizerTemplate(tokenizer)
        raise ConfigError(
            "data.template: this model's tokenizer has no chat template; choose one of "
            "chatml, alpaca or llama2 (for example --template chatml).",
            field="data.template",
        )
    eos = tokenizer.eos_token or ""
    if name == "chatml":
        return ChatML()
    if name == "alpaca":
        return Alpaca(eos)
    if name == "llama2":
        return Llama2(tokenizer.bos_token or "", eos or "</s>")
    raise ConfigError(
        f"data.template: unknown template {name!r}; choose auto, chatml, alpaca or llama2.",
        field="data.template",
    )

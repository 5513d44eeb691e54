"""Text generation: our own token loop with a KV cache, streamed as text pieces.

Why not `model.generate` with a `TextIteratorStreamer`: a loop of our own stops within one
token of a cancel request (no thread to abandon), counts exact tokens and times the first
one, and holds back text that may be the start of a stop string, so a stop string never
leaks into the output. The benchmark (tests/benchmarks/bench_generate.py) checks that it
keeps up with `model.generate`.

Pieces are decoded incrementally so multi-byte characters (emoji, Chinese) split across
tokens come out whole: a piece is emitted only once its bytes decode without U+FFFD.
torch is imported inside functions so the GUI can import this module for free.
"""

from __future__ import annotations

import inspect
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from studio.core.errors import ConfigError, StudioError
from studio.core.train import CancelToken

__all__ = ["CancelToken", "Generation", "GenerationSettings", "PromptTooLong", "generate"]


SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1
"""The seeds torch.Generator.manual_seed accepts."""


class PromptTooLong(StudioError):
    """The prompt does not fit in the model's context window."""


def _check(cond: bool, name: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"generation.{name}: {message}", field=f"generation.{name}")


@dataclass
class GenerationSettings:
    temperature: float = 0.7
    """0 picks the most likely token every time (greedy, deterministic)."""
    top_p: float = 0.9
    """Sample only from the smallest set of tokens whose probabilities add up to this."""
    top_k: int = 50
    """Sample only from the k most likely tokens (0: no limit)."""
    max_new_tokens: int = 256
    """Longest answer, in tokens."""
    repetition_penalty: float = 1.0
    """Above 1 makes tokens already in the conversation less likely (1: off)."""
    seed: int | None = None
    """Fixes the sampling so the same prompt gives the same answer (None: random)."""
    stop: list[str] = field(default_factory=list)
    """Extra stop strings, on top of the chat template's own."""

    def __post_init__(self):
        _check(
            0 <= self.temperature < math.inf,
            "temperature",
            f"must be a finite number, 0 or more; got {self.temperature!r}",
        )
        _check(0 < self.top_p <= 1, "top_p", f"must be in (0, 1]; got {self.top_p!r}")
        _check(self.top_k >= 0, "top_k", f"must be 0 or more; got {self.top_k!r}")
        _check(
            self.max_new_tokens >= 1,
            "max_new_tokens",
            f"must be at least 1; got {self.max_new_tokens!r}",
        )
        _check(
            0 < self.repetition_penalty < math.inf,
            "repetition_penalty",
            f"must be a finite positive number; got {self.repetition_penalty!r}",
        )
        # torch.Generator.manual_seed takes any value that fits 64 bits, signed or not.
        _check(
            self.seed is None
            or (
                isinstance(self.seed, int)
                and not isinstance(self.seed, bool)
                and SEED_MIN <= self.seed <= SEED_MAX
            ),
            "seed",
            f"must be a whole number from {SEED_MIN} to {SEED_MAX}; got {self.seed!r}",
        )
        self.stop = [s for s in (self.stop or []) if s]


class IncrementalDecoder:
    """Turns token ids into text pieces without splitting a character across pieces.

    Decodes a short window of recent tokens and emits only what is new (the same approach as
    text-generation-inference), so tokenizers that add spaces between tokens stay right.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0
        self.read = 0

    def _decode(self, ids) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        before = self._decode(self.ids[self.prefix : self.read])
        after = self._decode(self.ids[self.prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        """What is left at the end (an incomplete character comes out as U+FFFD)."""
        before = self._decode(self.ids[self.prefix : self.read])
        after = self._decode(self.ids[self.prefix :])
        self.prefix = self.read = len(self.ids)
        return after[len(before) :]


class StopMatcher:
    """Cuts the text at the first stop string, holding back any tail that could start one."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.text = ""
        self.emitted = 0
        self.stopped = False

    def feed(self, piece: str) -> str:
        self.text += piece
        # A stop string can only begin in the held-back tail or the new piece.
        start = max(0, self.emitted - max((len(s) for s in self.stops), default=0))
        cut = min((i for i in (self.text.find(s, start) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self.text = self.text[:cut]
            return self._emit(cut)
        safe = len(self.text)
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.text)), 0, -1):
                if self.text.endswith(s[:k]):
                    safe = min(safe, len(self.text) - k)
                    break
        return self._emit(max(safe, self.emitted))

    def flush(self) -> str:
        return self._emit(len(self.text))

    def _emit(self, upto: int) -> str:
        out = self.text[self.emitted : upto]
        self.emitted = max(self.emitted, upto)
        return out


def pick_token(logits, settings: GenerationSettings, history, generator) -> int:
    """Choose the next token from the last position's logits (1-D float tensor)."""
    import torch

    if settings.repetition_penalty != 1.0 and history.numel():
        # As in transformers: shrink the logit of every token already seen, whatever its sign.
        seen = logits.gather(0, history)
        p = settings.repetition_penalty
        logits = logits.scatter(0, history, torch.where(seen < 0, seen * p, seen / p))
        # A penalty near 0 or a huge one overflows to inf (then NaN below): stay finite.
        big = torch.finfo(logits.dtype).max
        logits = logits.clamp(-big, big)
    if settings.temperature == 0:
        return int(logits.argmax())
    # A temperature near 0 (1e-309 is a valid float) is 0 in float32, and the probabilities
    # would be NaN. At 1e-30 or below, every token but the likeliest (and its exact ties)
    # already has probability 0 in float32, so dividing by 1e-30 changes nothing; shifting
    # the largest logit to 0 first keeps it finite and changes no probability either.
    logits = (logits - logits.max()) / max(settings.temperature, 1e-30)
    if 0 < settings.top_k < logits.numel():
        kth = torch.topk(logits, settings.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if settings.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the ones before it already reach top_p (the first always stays).
        drop = (torch.cumsum(probs, dim=-1) - probs) > settings.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(0, order, sorted_logits)
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def _forward_names(model) -> tuple[str, bool]:
    """The cache keyword of this transformers version, and whether logits_to_keep works."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(base.forward).parameters
    cache_name = "cache" if "cache" in params else "past_key_values"
    return cache_name, "logits_to_keep" in params


class Generation:
    """One answer being generated. Iterate it for text pieces; read the numbers afterwards.

    `finish_reason` is "stop" (end of turn, EOS or a stop string), "length" (max_new_tokens
    or the context was full) or "cancelled".
    """

    def __init__(
        self,
        model,
        tokenizer,
        prompt_ids: list[int],
        settings: GenerationSettings,
        *,
        stop_ids=(),
        stop_strings=(),
        context_length: int | None = None,
        cancel: CancelToken | None = None,
    ):
        self.model, self.tokenizer = model, tokenizer
        self.prompt_ids = list(prompt_ids)
        self.settings = settings
        self.stop_ids = {int(i) for i in stop_ids if i is not None}
        self.stop_strings = list(stop_strings) + list(settings.stop)
        self.cancel = cancel or CancelToken()
        self.max_new_tokens = settings.max_new_tokens
        if context_length:
            room = context_length - len(self.prompt_ids)
            if room < 1:
                raise PromptTooLong(
                    f"the prompt is {len(self.prompt_ids)} tokens; this model's context holds "
                    f"{context_length}. Shorten the conversation or start a new one.",
                    field="prompt",
                )
            self.max_new_tokens = min(self.max_new_tokens, room)
        self.text = ""
        self.completion_ids: list[int] = []
        self.finish_reason = ""
        self.ttft_s = 0.0
        self.elapsed_s = 0.0

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def completion_tokens(self) -> int:
        return len(self.completion_ids)

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens over the whole time, first token (prompt reading) included."""
        return self.completion_tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def stop(self) -> None:
        self.cancel.cancel()

    def __iter__(self) -> Iterator[str]:
        for piece in self._run():
            self.text += piece
            yield piece

    def _run(self) -> Iterator[str]:
        import torch

        if not self.prompt_ids:
            raise StudioError("the prompt is empty", field="prompt")
        model = self.model
        device = next(model.parameters()).device
        cache_name, keep = _forward_names(model)
        from transformers import DynamicCache

        config = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
        kwargs = {cache_name: DynamicCache(config=config), "use_cache": True}
        if keep:
            kwargs["logits_to_keep"] = 1  # the prompt's other positions are never sampled
        seed = self.settings.seed
        generator = torch.Generator(device=device)
        generator.manual_seed(seed if seed is not None else int.from_bytes(os.urandom(4), "little"))
        history = torch.tensor(self.prompt_ids, device=device, dtype=torch.long)
        decoder = IncrementalDecoder(self.tokenizer)
        matcher = StopMatcher(self.stop_strings)
        step_input = history.unsqueeze(0)
        start = time.perf_counter()
        self.finish_reason = "length"
        try:
            for _ in range(self.max_new_tokens):
                if self.cancel.cancelled:
                    self.finish_reason = "cancelled"
                    break
                with torch.inference_mode():
                    logits = model(input_ids=step_input, **kwargs).logits[0, -1].float()
                    token = pick_token(logits, self.settings, history, generator)
                if not self.completion_ids:
                    self.ttft_s = time.perf_counter() - start
                if token in self.stop_ids:
                    self.finish_reason = "stop"
                    break
                self.completion_ids.append(token)
                if self.settings.repetition_penalty != 1.0:
                    history = torch.cat([history, history.new_tensor([token])])
                piece = matcher.feed(decoder.add(token))
                if piece:
                    yield piece
                if matcher.stopped:
                    self.finish_reason = "stop"
                    break
                step_input = torch.tensor([[token]], device=device)
            if not matcher.stopped:
                rest = matcher.feed(decoder.flush())
                rest += "" if matcher.stopped else matcher.flush()
                if matcher.stopped:
                    self.finish_reason = "stop"
                if rest:
                    yield rest
        finally:
            self.elapsed_s = time.perf_counter() - start


def generate(
    model, tokenizer, prompt_ids, settings: GenerationSettings | None = None, **kwargs
) -> Generation:
    """A Generation for `prompt_ids` (see Generation for the keyword arguments)."""
    return Generation(model, tokenizer, prompt_ids, settings or GenerationSettings(), **kwargs)

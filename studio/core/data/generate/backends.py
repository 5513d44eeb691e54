"""Where the text comes from: a local model (batched) or an OpenAI-compatible endpoint.

Both take a list of `Request`s and return one text each ("" when nothing usable came back),
so the modes never ask which one they talk to.

The local model generates a batch in one left-padded `model.generate` call: the prompts share
every forward pass, which is where the speed-up over one prompt at a time comes from (see
tests/benchmarks/bench_generate_data.py). Sampling is seeded per batch from the first item's
key, so the same run twice writes the same rows. An endpoint gets the batch as parallel
requests, each with its own seed (servers that honour `seed` then repeat themselves too).
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from studio.core.data.generate.options import GenerateOptions
from studio.core.errors import ModelError, StudioError


@dataclass
class Request:
    messages: list[dict]
    """The conversation to answer, ending with the user's turn."""
    seed: int
    line: int = 0
    """The source line it comes from (named in an error about it)."""


def mix_seed(seed: int, key: str) -> int:
    """A 63-bit seed from the run's seed and an item's key: stable across runs and machines."""
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class EndpointUnreachable(StudioError):
    """The endpoint cannot be reached or refuses us (bad URL, key or model name)."""


def open_backend(opts: GenerateOptions, cancelled=lambda: False):
    return EndpointBackend(opts) if opts.endpoint else LocalBackend(opts, cancelled)


class LocalBackend:
    def __init__(self, opts: GenerateOptions, cancelled=lambda: False):
        from studio.core.infer import load_chat_model

        self.opts, self.cancelled = opts, cancelled
        self.chat = load_chat_model(
            opts.model,
            opts.adapter or None,
            quant=opts.quant,
            device=opts.device,
            trust_remote_code=opts.trust_remote_code,
            allow_pickle=opts.allow_pickle,
        )
        tok = self.chat.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def generate(self, requests: list[Request]) -> list[str]:
        import torch

        chat, opts = self.chat, self.opts
        ids = [chat.prompt_ids(r.messages) for r in requests]
        longest = max(len(i) for i in ids)
        max_new = opts.max_new_tokens
        if chat.context_length:
            room = chat.context_length - longest
            if room < 1:
                line = requests[max(range(len(ids)), key=lambda j: len(ids[j]))].line
                raise StudioError(
                    f"input line {line}: the prompt is {longest} tokens and this model's context "
                    f"holds {chat.context_length}; shorten it or remove it from the input"
                )
            max_new = min(max_new, room)
        device = next(chat.model.parameters()).device
        # Left padding: every prompt ends at the same position, so the new tokens line up.
        batch = torch.full((len(ids), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), longest), dtype=torch.long)
        for j, seq in enumerate(ids):
            batch[j, longest - len(seq) :] = torch.tensor(seq)
            mask[j, longest - len(seq) :] = 1
        torch.manual_seed(requests[0].seed)
        with chat.lock, torch.inference_mode():
            chat.shared.activate(chat.adapter_name)
            out = chat.model.generate(
                input_ids=batch.to(device),
                attention_mask=mask.to(device),
                **self._generate_kwargs(max_new),
            )
        return [self._text(row[longest:]) for row in out]

    def _generate_kwargs(self, max_new: int) -> dict:
        from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

        opts, cancelled = self.opts, self.cancelled

        class Cancel(StoppingCriteria):  # a cancel ends the batch within one token
            def __call__(self, input_ids, scores, **kwargs):
                import torch

                return torch.full((input_ids.shape[0],), cancelled(), device=input_ids.device)

        sample = opts.temperature > 0
        config = GenerationConfig(
            max_new_tokens=max_new,
            min_new_tokens=1,  # an immediate end of turn would be an empty answer
            do_sample=sample,
            pad_token_id=self.pad_id,
            eos_token_id=sorted(self.chat.stop_ids) or None,
            **(
                dict(temperature=opts.temperature, top_p=opts.top_p, top_k=opts.top_k)
                if sample
                else {}
            ),
        )
        return {"generation_config": config, "stopping_criteria": StoppingCriteriaList([Cancel()])}

    def _text(self, new_ids) -> str:
        text = self.chat.tokenizer.decode(new_ids, skip_special_tokens=True)
        for stop in self.chat.template.stop_strings:  # stop strings that are not single tokens
            if stop and stop in text:
                text = text[: text.index(stop)]
        return text.strip()

    def describe(self) -> str:
        return self.opts.model + (f" + {self.opts.adapter}" if self.opts.adapter else "")

    def close(self) -> None:
        self.chat.close()


class EndpointBackend:
    def __init__(self, opts: GenerateOptions):
        from studio.core.openai_client import ChatClient

        self.opts = opts
        self.client = ChatClient(opts.endpoint, opts.endpoint_model, opts.api_key)

    def generate(self, requests: list[Request]) -> list[str]:
        from studio.core.openai_client import Unreachable

        try:
            with ThreadPoolExecutor(max_workers=min(len(requests), self.opts.batch_size)) as pool:
                return list(pool.map(self._one, requests))
        except Unreachable as e:
            raise EndpointUnreachable(
                f"endpoint: {e}; check --endpoint, --endpoint-model and --api-key"
            ) from None

    def _one(self, request: Request) -> str:
        opts = self.opts
        params = {"max_tokens": opts.max_new_tokens, "temperature": opts.temperature}
        if opts.temperature > 0:
            params.update(top_p=opts.top_p, seed=request.seed)
        text = self.client.reply(request.messages, **params)
        return (text or "").strip()

    def describe(self) -> str:
        return f"{self.opts.endpoint_model} at {self.opts.endpoint}"

    def close(self) -> None:
        pass


def load_error(e: Exception) -> ModelError:
    """A model that would not load, as one sentence."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return ModelError(f"model: could not load the model ({first})", field="model")

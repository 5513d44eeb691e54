"""Tiny models for the GGUF tests, built on the spot (no network): Qwen2 (attention biases),
Qwen3 (q/k norms, a head_dim that is not hidden/heads) with a Qwen2-style byte-level tokenizer,
and a Llama with a SentencePiece-style (Metaspace, "▁" words, BOS added) tokenizer."""

from __future__ import annotations

from pathlib import Path

from studio.core.export.gguf_vocab import QWEN2_REGEX
from studio.core.tiny import CHATML_TEMPLATE, DEFAULT_CORPUS, SPECIAL_TOKENS


def qwen_tokenizer():
    """Byte-level BPE behind Qwen2's split regex, as Qwen2/2.5/3 ship it."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(DEFAULT_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<pad>",
        additional_special_tokens=["<|im_start|>", "<|endoftext|>"],
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def spm_tokenizer():
    """A Llama-2-style tokenizer: ▁ marks word starts, one is prepended, <s> starts each text,
    and characters outside the vocabulary fall back to the <0x00>..<0xFF> byte tokens."""
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    metaspace = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    trained = Tokenizer(models.BPE(unk_token="<unk>"))
    trained.pre_tokenizer = metaspace
    trained.train_from_iterator(
        [t for t in DEFAULT_CORPUS if "你" not in t] * 4,  # the Chinese line goes by bytes
        trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>"], show_progress=False),
    )
    learned = json.loads(trained.to_str())["model"]
    # Llama 2's layout: <unk> <s> </s>, the 256 byte tokens, then the learned pieces.
    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    pieces += [t for t, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]) if t != "<unk>"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]
    core = Tokenizer(
        models.BPE(
            vocab={t: i for i, t in enumerate(pieces)},
            merges=merges,
            unk_token="<unk>",
            byte_fallback=True,
        )
    )
    core.pre_tokenizer = metaspace
    core.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    core.add_special_tokens(["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"])
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>", "</s>"],
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def _save(out, tokenizer, config_cls, model_cls, seed: int, **config) -> Path:
    import torch

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = config_cls(
        vocab_size=len(tokenizer),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        **config,
    )
    torch.manual_seed(seed)
    model = model_cls(cfg)
    with torch.no_grad():  # non-zero biases and norms, so a lost or swapped one shows
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(torch.randn(p.shape) * 0.1 + (1.0 if "norm" in name else 0.0))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_qwen2(out, *, tie: bool = False, intermediate_size: int = 72, seed: int = 0) -> Path:
    """Qwen2 with q/k/v biases; intermediate 72 makes down_proj rows that are not whole blocks."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return _save(
        out,
        qwen_tokenizer(),
        Qwen2Config,
        Qwen2ForCausalLM,
        seed,
        hidden_size=64,
        intermediate_size=intermediate_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=tie,
    )


def build_qwen3(out, *, seed: int = 0) -> Path:
    """Qwen3 with q/k norms and head_dim 32 (hidden 64 / 4 heads would be 16)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    return _save(
        out,
        qwen_tokenizer(),
        Qwen3Config,
        Qwen3ForCausalLM,
        seed,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )


def build_spm_llama(out, *, seed: int = 0) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    return _save(
        out,
        spm_tokenizer(),
        LlamaConfig,
        LlamaForCausalLM,
        seed,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )

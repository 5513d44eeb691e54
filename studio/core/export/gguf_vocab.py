"""The tokenizer half of a GGUF: what llama.cpp needs to split text into the ids transformers uses.

Everything is read from tokenizer.json (every fast tokenizer saves one), not by loading the
tokenizer class, so a fine-tune of any supported base converts the same way:
- byte-level BPE (GPT-2, Llama 3, Qwen2/3, SmolLM) -> tokenizer.ggml.model "gpt2" with merges and
  the llama.cpp pre-tokenizer recognised from the pre_tokenizer's regex;
- SentencePiece-style BPE (Llama 2, Mistral: Metaspace / "▁" words, byte fallback) -> "llama"
  with scores and token types.
Special ids, the add-BOS/EOS flags and the chat template come from gguf's SpecialVocab (the same
code llama.cpp's converter uses), checked against what the tokenizer really does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# The split regexes llama.cpp implements natively, as they appear in tokenizer.json.
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_REGEX = LLAMA3_REGEX.replace(r"\p{N}{1,3}", r"\p{N}")

KNOWN_PRE_TOKENIZERS = ("gpt-2", "llama-bpe", "qwen2", "smollm")
"""What Studio recognises by itself (llama.cpp's names)."""
PRE_ALIASES = {"gpt2": "gpt-2", "llama3": "llama-bpe", "llama-3": "llama-bpe"}
"""Names people type -> the name llama.cpp accepts (it refuses "gpt2" as unknown)."""

EOT_TOKENS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>")
"""End-of-turn markers of the common chat formats: llama.cpp stops generation on them."""

_SPACE = "\u2581"  # SentencePiece's word-start marker "▁"
_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


class VocabError(Exception):
    """Raised with one sentence for the person; gguf_file turns it into an ExportError."""


@dataclass
class Vocab:
    model: str  # "gpt2" or "llama"
    pre: str  # llama.cpp's pre-tokenizer name
    tokens: list[str]
    token_types: list[int]
    scores: list[float] | None
    special: object  # gguf.SpecialVocab: merges, special ids, add flags, chat template
    add_space_prefix: bool | None = None

    def add_to(self, writer) -> None:
        writer.add_tokenizer_model(self.model)
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.token_types)
        if self.scores is not None:
            writer.add_token_scores(self.scores)
        if self.add_space_prefix is not None:
            writer.add_add_space_prefix(self.add_space_prefix)
        self.special.add_to_gguf(writer, quiet=True)


def _flatten(node: dict | None, key: str) -> list[dict]:
    """A Sequence pre-tokenizer/normalizer as its list of parts (a single one as a list of one)."""
    if not node:
        return []
    if node.get("type") == "Sequence":
        return [p for part in node.get(key) or [] for p in _flatten(part, key)]
    return [node]


def recognise_pre_tokenizer(tok: dict) -> str | None:
    """llama.cpp's name for a byte-level pre-tokenizer, or None when it is not one we know.

    llama.cpp's converter hashes the token ids of a test string, which only works for the exact
    vocabularies it lists; the pre-tokenizer's own definition works for every fine-tune of them.
    """
    parts = _flatten(tok.get("pre_tokenizer"), "pretokenizers")
    types = [p.get("type") for p in parts]
    if any(p.get("type") == "ByteLevel" and p.get("add_prefix_space") for p in parts):
        return None  # a space added before the text: no llama.cpp pre-tokenizer does that
    if types == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"
    if types == ["Digits", "ByteLevel"] and parts[0].get("individual_digits"):
        return "smollm" if parts[1].get("use_regex", True) else None
    if types == ["Split", "ByteLevel"] and not parts[1].get("use_regex", True):
        split = parts[0]
        if split.get("behavior") != "Isolated" or split.get("invert"):
            return None
        regex = (split.get("pattern") or {}).get("Regex")
        return {LLAMA3_REGEX: "llama-bpe", QWEN2_REGEX: "qwen2"}.get(regex)
    return None


def _describe(node: dict | None) -> str:
    parts = _flatten(node, "pretokenizers")
    return " + ".join(p.get("type", "?") for p in parts) or "none"


def _style(tok: dict) -> str:
    """'bpe' (byte-level) or 'spm' (SentencePiece-style words with the ▁ marker)."""
    model = tok.get("model") or {}
    if model.get("type") != "BPE":
        raise VocabError(
            f"the tokenizer is a {model.get('type', 'unknown')} model; GGUF export supports "
            "BPE tokenizers (byte-level like Llama 3 / Qwen, or SentencePiece-style like Llama 2)"
        )
    pre = _flatten(tok.get("pre_tokenizer"), "pretokenizers")
    norm = _flatten(tok.get("normalizer"), "normalizers")
    if any(p.get("type") == "ByteLevel" for p in pre):
        return "bpe"
    spm_norm = any(
        n.get("type") in ("Prepend", "Replace") and _SPACE in json.dumps(n, ensure_ascii=False)
        for n in norm
    )
    if any(p.get("type") == "Metaspace" for p in pre) or spm_norm or model.get("byte_fallback"):
        return "spm"
    raise VocabError(
        f"the tokenizer's pre-tokenizer ({_describe(tok.get('pre_tokenizer'))}) is neither "
        "byte-level nor SentencePiece-style, so llama.cpp could not reproduce it"
    )


def _looks_special(text: str) -> bool:
    # Some tokenizers leave control tokens unmarked; llama.cpp's converter treats these as control.
    return text in ("<pad>", "<mask>") or (text.startswith("<|") and text.endswith("|>"))


def _token_table(tok: dict, n_vocab: int, style: str) -> tuple[list[str], list[int]]:
    from gguf import TokenType

    model = tok["model"]
    by_id = {i: t for t, i in model["vocab"].items()}
    added = {a["id"]: a for a in tok.get("added_tokens") or []}
    for i, a in added.items():
        by_id[i] = a["content"]
    if by_id and max(by_id) >= n_vocab:
        raise VocabError(
            f"the tokenizer has token id {max(by_id)} but the model's embedding has only "
            f"{n_vocab} rows; save the tokenizer that belongs to this model"
        )
    unk = model.get("unk_token")
    tokens, types = [], []
    for i in range(n_vocab):
        text = by_id.get(i)
        if text is None:  # embedding rows past the tokenizer (padded vocab): never produced
            tokens.append(f"[PAD{i}]")
            types.append(int(TokenType.UNUSED))
            continue
        if style == "spm" and text == unk:
            kind = TokenType.UNKNOWN
        elif style == "spm" and _BYTE_TOKEN.fullmatch(text):
            kind = TokenType.BYTE
        elif i in added and (added[i].get("special") or _looks_special(text)):
            kind = TokenType.CONTROL
        elif i in added:
            # llama.cpp matches user-defined tokens in the raw text, where spaces are spaces.
            text = text.replace(_SPACE, " ")
            kind = TokenType.USER_DEFINED
        else:
            kind = TokenType.NORMAL
        tokens.append(text)
        types.append(int(kind))
    return tokens, types


def _spm_scores(tok: dict, tokens: list[str]) -> list[float]:
    """SentencePiece scores for llama.cpp's SPM tokenizer, from the BPE merge order.

    llama.cpp merges the adjacent pair whose joined piece has the highest score; transformers
    merges by merge rank. Scoring each piece by minus the rank of the first merge that makes it
    gives the same order (this is how transformers built these merges from the original scores).
    Pieces no merge makes (single characters, bytes, specials) are never a merge result, so their
    score does not matter; they get a value below every merge.
    """
    rank: dict[str, int] = {}
    for r, merge in enumerate(tok["model"].get("merges") or []):
        left, right = merge if isinstance(merge, list) else merge.split(" ", 1)
        rank.setdefault(left + right, r)
    floor = -float(len(rank) + 1)
    return [-float(rank[t]) if t in rank else floor for t in tokens]


def _add_space_prefix(tok: dict) -> bool:
    """llama.cpp's add_space_prefix: a ▁ before the text and after every special token.

    That is exactly what Llama 2's legacy normalizer (Prepend ▁) and Metaspace "always" do.
    Metaspace "first" puts one only at the very start of the input, which llama.cpp cannot say;
    chat prompts start with a special token, where "first" adds none, so False matches them.
    """
    for p in _flatten(tok.get("pre_tokenizer"), "pretokenizers"):
        if p.get("type") == "Metaspace":
            scheme = p.get("prepend_scheme") or ("always" if p.get("add_prefix_space") else "never")
            return scheme == "always"
    for n in _flatten(tok.get("normalizer"), "normalizers"):
        if n.get("type") == "Prepend" and n.get("prepend") == _SPACE:
            return True
    return False


def _first_int(value) -> int | None:
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, int) and value >= 0 else None


def _special_vocab(
    folder: Path, tok: dict, tokens: list[str], config: dict, chat_template, style: str
):
    """gguf's SpecialVocab, completed from config.json's ids and corrected by really encoding."""
    from gguf import SpecialVocab
    from tokenizers import Tokenizer

    special = SpecialVocab(folder, load_merges=style == "bpe", n_vocab=len(tokens))
    ids = special.special_token_ids
    for kind in ("bos", "eos", "pad"):
        value = _first_int(config.get(f"{kind}_token_id"))
        if kind not in ids and value is not None and value < len(tokens):
            ids[kind] = value
    if "eot" not in ids:
        for text in EOT_TOKENS:
            if text in tokens:
                ids["eot"] = tokens.index(text)
                break
    # What the tokenizer adds around a text decides llama.cpp's add_bos/add_eos; tokenizer_config's
    # flags are missing or stale in many saved tokenizers, the post-processor is what runs.
    hf = Tokenizer.from_str(json.dumps(tok))
    bare = hf.encode("Hello world", add_special_tokens=False).ids
    full = hf.encode("Hello world", add_special_tokens=True).ids
    extra = len(full) > len(bare)
    special.add_special_token = {
        "bos": bool(extra and "bos" in ids and full[0] == ids["bos"]),
        "eos": bool(extra and "eos" in ids and full[-1] == ids["eos"]),
    }
    if chat_template is not None:
        special.chat_template = chat_template
    return special


def read_vocab(
    tokenizer_dir,
    n_vocab: int,
    config: dict,
    *,
    chat_template: str | None = None,
    pre_tokenizer: str = "",
    log: Callable[[str], None] | None = None,
) -> Vocab:
    """The tokenizer in `tokenizer_dir` as llama.cpp's vocabulary of `n_vocab` tokens.

    `pre_tokenizer` forces llama.cpp's pre-tokenizer name for a byte-level tokenizer Studio does
    not recognise (logged); `chat_template` replaces the tokenizer's own template.
    """
    from gguf import TokenType

    note = log or (lambda message: None)
    folder = Path(tokenizer_dir)
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise VocabError(
            f"{folder} has no tokenizer.json; GGUF export reads the fast tokenizer's file "
            "(save the tokenizer with transformers' save_pretrained to create it)"
        )
    tok = json.loads(path.read_text(encoding="utf-8"))
    style = _style(tok)
    tokens, types = _token_table(tok, n_vocab, style)
    forced = PRE_ALIASES.get(pre_tokenizer.strip().lower(), pre_tokenizer.strip())
    if style == "spm":
        if types.count(int(TokenType.BYTE)) < 256:
            # llama.cpp's SPM tokenizer spells every character outside the vocabulary in byte
            # tokens and aborts when they are missing; transformers would emit <unk> instead.
            raise VocabError(
                "the SentencePiece-style tokenizer has no <0x00>..<0xFF> byte tokens, which "
                "llama.cpp needs for characters outside the vocabulary"
            )
        if forced:
            note(f"pre-tokenizer {forced!r} ignored: SentencePiece-style tokenizers have none")
        special = _special_vocab(folder, tok, tokens, config, chat_template, style)
        note("tokenizer: SentencePiece-style BPE (llama.cpp 'llama' vocabulary with scores)")
        return Vocab(
            "llama",
            "default",
            tokens,
            types,
            _spm_scores(tok, tokens),
            special,
            _add_space_prefix(tok),
        )
    found = recognise_pre_tokenizer(tok)
    if forced:
        pre = forced
        seen = f"recognised {found!r}" if found else "not recognised"
        note(f"pre-tokenizer: {pre!r}, as chosen (Studio's own detection: {seen})")
    elif found:
        pre = found
        note(f"pre-tokenizer: {pre!r} (recognised from tokenizer.json)")
    else:
        raise VocabError(
            f"the tokenizer's pre-tokenizer ({_describe(tok.get('pre_tokenizer'))}) is not one "
            f"Studio recognises ({', '.join(KNOWN_PRE_TOKENIZERS)}), so llama.cpp could split "
            "text differently; set the pre-tokenizer option to llama.cpp's name for it"
        )
    special = _special_vocab(folder, tok, tokens, config, chat_template, style)
    if not special.merges:
        raise VocabError("the byte-level tokenizer has no merges in tokenizer.json")
    return Vocab("gpt2", pre, tokens, types, None, special)

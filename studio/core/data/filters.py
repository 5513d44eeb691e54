"""Length and language filters for a data clean-up.

The length is the answer's: the assistant turns of a conversation, the text of a text record,
and both answers of a preference pair (each must pass). It is counted in characters, or by
any `count(text) -> int` given (a tokenizer's, for tokens).

The language detector is deliberately small and has no dependency. It reads the first 2,000
characters of the record's content (the turns' text, not their role names) and decides by
script: Han characters alone are "zh", with kana "ja", Hangul "ko", and Greek, Arabic,
Hebrew, Devanagari ("hi") and Thai are named by their script. Cyrillic is "uk" when the
letters only Ukrainian uses appear, otherwise "ru" (so Bulgarian or Serbian read as "ru").
Latin script is told apart by counting common function words of en, fr, de, es, it, pt and
nl; Latin text with too few of them (code, lists of names, other languages) is "und", as is
anything else. It is right on ordinary sentences and wrong on short or mixed-language text;
a record it cannot place is "und", which a filter keeps only when "und" is asked for.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from studio.core.data.records import Record

SAMPLE = 2000
"""Characters of a record read to guess its language."""

LANGUAGES = ("en", "fr", "de", "es", "it", "pt", "nl", "ru", "uk", "el", "ar", "he", "hi", "th", "ko", "ja", "zh", "und")  # fmt: skip

_STOPWORDS = {
    "en": "the and of to is in that it you for was with on are this be have not what",
    "fr": "le la les et des est une un du que pour dans pas qui sur vous nous avec au",
    "de": "der die und das ist nicht ein eine zu den mit sich von auf für ich dem des",
    "es": "el la los las y que de es en un una por para con no se del lo como",
    "it": "il la che di e è un una per non gli le del della con sono come anche",
    "pt": "o a os as que de é um uma para com não em do da no na se por",
    "nl": "de het een en van is dat niet op te zijn met voor er die ik je",
}
_WORDS = {lang: set(words.split()) for lang, words in _STOPWORDS.items()}
_UKRAINIAN = set("іїєґІЇЄҐ")

# (first code point, last code point, script)
_SCRIPTS = [
    (0x0041, 0x024F, "latin"),
    (0x0370, 0x03FF, "el"),
    (0x0400, 0x04FF, "cyrillic"),
    (0x0590, 0x05FF, "he"),
    (0x0600, 0x06FF, "ar"),
    (0x0900, 0x097F, "hi"),
    (0x0E00, 0x0E7F, "th"),
    (0x1100, 0x11FF, "ko"),
    (0x3040, 0x30FF, "kana"),
    (0x4E00, 0x9FFF, "han"),
    (0xAC00, 0xD7AF, "ko"),
]


def _script(ch: str) -> str | None:
    cp = ord(ch)
    for lo, hi, name in _SCRIPTS:
        if lo <= cp <= hi:
            return name if name != "latin" or ch.isalpha() else None
    return None


def detect_language(text: str) -> str:
    """A language code from LANGUAGES for `text` ("und" when it cannot tell); see the module."""
    sample = text[:SAMPLE]
    scripts = Counter(s for s in map(_script, sample) if s is not None)
    if not scripts:
        return "und"
    script = scripts.most_common(1)[0][0]
    if script in ("han", "kana"):
        return "ja" if scripts["kana"] else "zh"
    if script == "cyrillic":
        return "uk" if any(c in _UKRAINIAN for c in sample) else "ru"
    if script != "latin":
        return script
    words = [w.strip(".,;:!?¿¡\"'()") for w in sample.lower().split()]
    votes = {lang: sum(w in stop for w in words) for lang, stop in _WORDS.items()}
    best = max(votes, key=votes.get)
    # Too few function words: a list, code or a language not listed here.
    return best if votes[best] >= max(2, len(words) // 20) else "und"


def answers(record: Record) -> list[str]:
    """What the record teaches the model to say."""
    if record.text is not None:
        return [record.text]
    if record.chosen is not None:
        return [record.chosen, record.rejected or ""]
    return ["\n".join(m["content"] for m in record.messages or () if m["role"] == "assistant")]


def content(record: Record) -> str:
    """Every turn's text without role names (they would all vote for English)."""
    if record.text is not None:
        return record.text
    parts = [m["content"] for m in record.messages or ()]
    if record.chosen is not None:
        parts += [record.chosen, record.rejected or ""]
    return "\n".join(parts)


@dataclass
class FilterOptions:
    min_chars: int = 0
    """The shortest answer kept (0: no minimum)."""
    max_chars: int = 0
    """The longest answer kept (0: no maximum)."""
    languages: tuple[str, ...] = ()
    """Keep only records detected as one of these (empty: any language)."""
    unit: str = "characters"
    """What `count` counts, for the reasons given ("characters", "tokens")."""

    def __post_init__(self):
        if self.min_chars < 0 or self.max_chars < 0:
            raise ValueError("length limits must be 0 (none) or more.")
        if self.max_chars and self.min_chars > self.max_chars:
            raise ValueError(
                f"the minimum length ({self.min_chars}) is above the maximum ({self.max_chars})."
            )
        unknown = [lang for lang in self.languages if lang not in LANGUAGES]
        if unknown:
            raise ValueError(
                f"unknown language code {unknown[0]!r}; expected some of {', '.join(LANGUAGES)}."
            )

    @property
    def active(self) -> bool:
        return bool(self.min_chars or self.max_chars or self.languages)


def why_dropped(
    record: Record, opts: FilterOptions, count: Callable[[str], int] = len
) -> str | None:
    """The reason `record` fails a filter ("too short: ..."), or None when it passes."""
    if opts.min_chars or opts.max_chars:
        sizes = [count(a) for a in answers(record)]
        if opts.min_chars and min(sizes) < opts.min_chars:
            return f"answer too short ({min(sizes)} {opts.unit} < {opts.min_chars})"
        if opts.max_chars and max(sizes) > opts.max_chars:
            return f"answer too long ({max(sizes)} {opts.unit} > {opts.max_chars})"
    if opts.languages:
        lang = detect_language(content(record))
        if lang not in opts.languages:
            return f"language {lang} (not {', '.join(opts.languages)})"
    return None

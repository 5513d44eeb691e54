"""Answer metrics against a reference: exact match, contains, ROUGE-L; perplexity from loss.

Plain Python, no torch: the report, the app and the tests use these on saved answers.
Normalisation follows SQuAD's: lower case, no punctuation, no English articles, single spaces,
so "The answer is 4." and "the answer is 4" match, and a trailing full stop never decides.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata

_PUNCT = set(string.punctuation) | {"。", "，", "！", "？", "；", "：", "、"}
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    """Lower case, punctuation and articles dropped, whitespace collapsed (NFKC first, so a
    full-width digit equals an ASCII one)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if ch in _PUNCT else ch for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(answer: str, reference: str) -> bool:
    """The answer equals the reference once both are normalised."""
    return normalize(answer) == normalize(reference)


def contains(answer: str, reference: str) -> bool:
    """The normalised reference appears in the normalised answer, on word boundaries ("4" is
    not in "14"). An empty reference is contained in nothing: it says nothing."""
    ref = normalize(reference)
    if not ref:
        return False
    return f" {ref} " in f" {normalize(answer)} "


def _lcs(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence (one row of the table at a time)."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(answer: str, reference: str) -> float:
    """ROUGE-L F1 over normalised words: 2PR/(P+R) with P = LCS/len(answer) and
    R = LCS/len(reference). 0 when either is empty."""
    a, r = normalize(answer).split(), normalize(reference).split()
    if not a or not r:
        return 0.0
    lcs = _lcs(a, r)
    if lcs == 0:
        return 0.0
    p, rec = lcs / len(a), lcs / len(r)
    return 2 * p * rec / (p + rec)


def perplexity(mean_loss: float) -> float:
    """exp(mean token loss); inf where that overflows (a model that is hopeless here)."""
    try:
        return math.exp(mean_loss)
    except OverflowError:
        return math.inf


def score_answer(answer: str, reference: str) -> dict[str, float | bool | None]:
    """The three reference metrics of one answer (None each when there is no reference)."""
    if not reference.strip():
        return {"exact_match": None, "contains": None, "rouge_l": None}
    return {
        "exact_match": exact_match(answer, reference),
        "contains": contains(answer, reference),
        "rouge_l": round(rouge_l(answer, reference), 4),
    }


def mean(values) -> float | None:
    """The mean of the values that are not None (True counts 1), or None if there are none."""
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None

"""Clean-up of datasets: exact and near duplicates on a planted set, filters, the new file."""

from __future__ import annotations

import json
import random
import threading

import numpy as np
import pytest

from studio.core.data import minhash
from studio.core.data.clean import CleanOptions, clean_events, write_clean
from studio.core.data.dedupe import Cancelled, DedupeOptions, duplicate_events, find_duplicates
from studio.core.data.filters import FilterOptions, detect_language, why_dropped
from studio.core.data.formats import load_dataset
from studio.core.data.records import Record
from studio.core.errors import DataError

PRECISION_MIN = 0.98
RECALL_MIN = 0.85


def _lexicon(rng: random.Random, n: int = 3000) -> list[str]:
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    words = {"".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(n)}
    return sorted(words)


def _sentence(rng: random.Random, lexicon: list[str], n: int) -> str:
    # Zipf's law (weight 1/rank): a few words are very common, as in real text.
    cum = _zipf(len(lexicon))
    return " ".join(rng.choices(lexicon, cum_weights=cum, k=n)).capitalize() + "."


def _zipf(n: int, cache: dict = {}) -> list[float]:  # noqa: B006 - a deliberate cache
    if n not in cache:
        acc, cache[n] = 0.0, []
        for rank in range(1, n + 1):
            acc += 1.0 / rank
            cache[n].append(acc)
    return cache[n]


def _near_copy(rng: random.Random, text: str, lexicon: list[str]) -> str:
    """A few words changed or two swapped, and a punctuation or case change."""
    words = text.split()
    for _ in range(rng.randint(1, 2)):
        i = rng.randrange(len(words))
        if rng.random() < 0.5:
            words[i] = rng.choice(lexicon)
        elif i + 1 < len(words):
            words[i], words[i + 1] = words[i + 1], words[i]
    out = " ".join(words)
    return rng.choice([out.rstrip(".") + "!", out.replace(" ", ", ", 1), out.upper(), out])


def _exact_copy(rng: random.Random, text: str) -> str:
    return rng.choice([text.upper(), "  " + text.replace(" ", "   "), text.lower() + "\n"])


def planted(seed: int = 0, distinct: int = 600, copies: int = 60, near: int = 60):
    """Records (all three kinds) with planted copies; returns (records, {copy line: source line})."""
    rng = random.Random(seed)
    lexicon = _lexicon(rng)
    sources = []
    for i in range(distinct):
        prompt = _sentence(rng, lexicon, rng.randint(6, 16))
        answer = _sentence(rng, lexicon, rng.randint(25, 70))
        sources.append((i % 3, prompt, answer))
    rows = [(i, None) for i in range(distinct)]  # (source index, planted text or None)
    for k in range(copies + near):
        src = rng.randrange(distinct)
        answer = sources[src][2]
        copy = _exact_copy(rng, answer) if k < copies else _near_copy(rng, answer, lexicon)
        after = rows.index((src, None))
        rows.insert(rng.randint(after + 1, len(rows)), (src, copy))  # the source comes first
    records, line_of, origin = [], {}, {}
    for line, (src, copy) in enumerate(rows, 1):
        kind, prompt, answer = sources[src]
        records.append(_record(line, kind, prompt, answer if copy is None else copy))
        if copy is None:
            line_of[src] = line
        else:
            origin[line] = src
    return records, {line: line_of[src] for line, src in origin.items()}


def _record(line: int, kind: int, prompt: str, answer: str) -> Record:
    if kind == 0:
        return Record(line, [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}])  # fmt: skip
    if kind == 1:
        return Record(line, text=f"{prompt}\n{answer}")
    return Record(line, [{"role": "user", "content": prompt}], chosen=answer, rejected=prompt)


def test_planted_duplicates_are_found_with_high_precision_and_recall():
    records, origin = planted()
    clusters = find_duplicates(records)
    dropped = {line for c in clusters for line in c.drop}
    planted_lines = set(origin)
    hits = dropped & planted_lines
    precision = len(hits) / max(1, len(dropped))
    recall = len(hits) / len(planted_lines)
    print(f"dedupe on {len(records)} records, {len(planted_lines)} planted copies: "
          f"precision {precision:.3f}, recall {recall:.3f}")  # fmt: skip
    assert precision >= PRECISION_MIN and recall >= RECALL_MIN, (precision, recall)
    # Each copy found sits in its source's cluster, and the source (first by line) is kept.
    cluster_of = {line: c for c in clusters for line in c.lines}
    for copy in hits:
        assert origin[copy] in cluster_of[copy].lines
        assert cluster_of[copy].keep == min(cluster_of[copy].lines)
    kinds = {c.kind for c in clusters}
    assert kinds == {"exact", "near"}
    assert all(0.8 <= c.similarity <= 1.0 for c in clusters)


def test_exact_only_finds_the_normalised_copies_and_no_near_ones():
    records, origin = planted(seed=1)
    clusters = find_duplicates(records, exact_only=True)
    assert clusters and all(c.kind == "exact" and c.similarity == 1.0 for c in clusters)
    dropped = {line for c in clusters for line in c.drop}
    assert dropped <= set(origin)
    # All 60 exact copies differ from their source by case and spacing only.
    assert len(dropped) >= 60


def test_a_shared_system_prompt_does_not_make_distinct_records_near_copies():
    rng = random.Random(3)
    lexicon = _lexicon(rng)
    system = {"role": "system", "content": _sentence(rng, lexicon, 120)}
    records = [
        Record(
            i + 1,
            [
                system,
                {"role": "user", "content": _sentence(rng, lexicon, 8)},
                {"role": "assistant", "content": _sentence(rng, lexicon, 20)},
            ],
        )  # fmt: skip
        for i in range(200)
    ]
    assert find_duplicates(records) == []
    records.append(Record(201, [dict(m) for m in records[5].messages]))
    assert [c.lines for c in find_duplicates(records)] == [[6, 201]]


def test_minhash_estimates_jaccard_without_bias():
    rng = random.Random(5)
    lexicon = _lexicon(rng)
    errors = []
    for _ in range(200):
        a = _sentence(rng, lexicon, 60).lower().split()
        b = list(a)
        for _ in range(rng.randint(0, 8)):
            b[rng.randrange(len(b))] = rng.choice(lexicon)
        grams = [{tuple(w[i : i + 2]) for i in range(len(w) - 1)} for w in (a, b)]
        true = len(grams[0] & grams[1]) / len(grams[0] | grams[1])
        *_, (_, sig) = minhash.signatures([" ".join(a), " ".join(b)], 128, 2)
        errors.append(float(minhash.similarity(sig, np.array([[0, 1]]))[0]) - true)
    assert abs(np.mean(errors)) < 0.02 and np.std(errors) < 0.07, (np.mean(errors), np.std(errors))


def test_lsh_params_separate_at_the_threshold():
    bands, rows = minhash.lsh_params(0.8, 128)
    assert bands * rows <= 128
    hit = lambda s: 1 - (1 - s**rows) ** bands  # noqa: E731
    assert hit(0.85) > 0.95 and hit(0.9) > 0.99 and hit(0.4) < 0.01


def test_cancel_stops_the_search():
    records, _ = planted(distinct=100, copies=5, near=5)
    token = threading.Event()
    token.set()
    with pytest.raises(Cancelled):
        list(duplicate_events(records, DedupeOptions(), token))


def test_options_are_checked():
    with pytest.raises(ValueError, match="threshold"):
        DedupeOptions(threshold=1.5)
    with pytest.raises(ValueError, match="unknown language"):
        FilterOptions(languages=("english",))
    with pytest.raises(ValueError, match="above the maximum"):
        FilterOptions(min_chars=10, max_chars=5)


@pytest.mark.parametrize(
    "text, lang",
    [
        ("The cat sat on the mat and it was happy with the food that you gave it.", "en"),
        ("Le chat est sur la table et il mange les croquettes que nous avons achetées.", "fr"),
        ("Der Hund ist nicht mit den Kindern in die Schule gegangen, und das ist gut.", "de"),
        ("El perro está en la casa y no quiere salir con los niños para el parque.", "es"),
        ("Кошка сидит на окне и смотрит на улицу.", "ru"),
        ("Кішка сидить на вікні і дивиться на вулицю.", "uk"),
        ("我们今天去公园散步。", "zh"),
        ("今日は公園を散歩しました。", "ja"),
        ("오늘 공원에서 산책했습니다.", "ko"),
        ("def f(x): return x * 2", "und"),
    ],
)
def test_detect_language(text, lang):
    assert detect_language(text) == lang


def test_filters_give_their_reasons():
    short = Record(1, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}])  # fmt: skip
    pair = Record(2, [{"role": "user", "content": "Say it"}], chosen="a" * 50, rejected="b" * 5)
    opts = FilterOptions(min_chars=10)
    assert why_dropped(short, opts) == "answer too short (6 characters < 10)"
    assert why_dropped(pair, opts).startswith("answer too short (5 ")  # both answers count
    assert why_dropped(pair, FilterOptions(max_chars=40)).startswith("answer too long (50 ")
    fr = Record(3, text="Le chat est sur la table et il mange les croquettes que nous avons.")
    assert why_dropped(fr, FilterOptions(languages=("en",))) == "language fr (not en)"
    assert why_dropped(fr, FilterOptions(languages=("en", "fr"))) is None


def _jsonl(path, rows, newline="\n"):
    path.write_bytes("".join(json.dumps(r) + newline for r in rows).encode())


def _conv(q: str, a: str, **extra) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], **extra}  # fmt: skip


def test_clean_writes_kept_lines_byte_identical_and_keeps_the_original(tmp_path):
    src = tmp_path / "data.jsonl"
    rows = [
        _conv("What is two plus two?", "Two plus two is four.", id=1),
        _conv("Name a colour.", "Blue is a colour that many people like.", id=2),
        _conv("what is two  plus two?", "two plus two is four.", id=3),
        {"messages": "broken"},
        _conv("Name a planet.", "Mars is the fourth planet from the sun.", id=5),
    ]
    _jsonl(src, rows, newline="\r\n")
    before = src.read_bytes()
    events = list(clean_events(CleanOptions(str(src))))
    done = events[-1]
    assert done.type == "done" and done.status == "completed" and done.step == 3
    out = tmp_path / "data.clean.jsonl"
    assert done.adapter == str(out)
    assert src.read_bytes() == before
    lines = before.split(b"\n")
    assert out.read_bytes() == lines[0] + b"\n" + lines[1] + b"\n" + lines[4] + b"\n"
    assert [r.line for r in load_dataset(out).records] == [1, 2, 3]
    # A second run refuses to replace the output, unless asked.
    again = list(clean_events(CleanOptions(str(src))))
    assert again[-1].type == "error" and "already exists" in again[-1].message
    assert list(clean_events(CleanOptions(str(src), overwrite=True)))[-1].type == "done"
    # Never the input, even with overwrite.
    same = list(clean_events(CleanOptions(str(src), output=str(src), overwrite=True)))
    assert same[-1].type == "error" and "is the input file" in same[-1].message
    assert src.read_bytes() == before


def test_clean_converts_other_sources_to_jsonl_that_reads_back_the_same(tmp_path):
    src = tmp_path / "pairs.json"
    pairs = [
        {"prompt": "Pick one.", "chosen": "The first, because it is clear.", "rejected": "No."},
        {"prompt": "Pick one.", "chosen": "The first, because it is clear.", "rejected": "No."},
        {"prompt": "Say hi.", "chosen": "Hello there, nice to meet you.", "rejected": "Go away."},
    ]
    src.write_text(json.dumps(pairs))
    ds = load_dataset(src)
    keep = [ds.records[0], ds.records[2]]  # all on line 1: the records say which
    out = write_clean(ds, keep, tmp_path / "pairs.clean.jsonl")
    back = load_dataset(out)
    assert back.format == "pairs"
    assert [(r.messages, r.chosen, r.rejected) for r in back.records] == [
        (r.messages, r.chosen, r.rejected) for r in keep
    ]
    with pytest.raises(DataError, match="already exists"):
        write_clean(ds, keep, out)
    # The clean-up itself finds the copy within the one-line array and keeps two records.
    events = list(clean_events(CleanOptions(str(src), output=str(tmp_path / "c.jsonl"))))
    assert events[-1].step == 2
    assert len(load_dataset(tmp_path / "c.jsonl").records) == 2


def test_dry_run_writes_nothing_and_reports(tmp_path):
    src = tmp_path / "t.jsonl"
    _jsonl(src, [{"text": "Same text here."}, {"text": "same   TEXT here."}, {"text": "Other."}])
    gen = clean_events(CleanOptions(str(src), dry_run=True))
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            report = stop.value
            break
    assert report.kept == 2 and report.duplicates == 1 and report.output == ""
    assert events[-1].type == "done" and events[-1].adapter == ""
    assert [p.name for p in tmp_path.iterdir()] == ["t.jsonl"]
    assert report.to_dict()["clusters"] == [{"lines": [1, 2], "kind": "exact", "similarity": 1.0}]


def test_cli_dedupe_prints_clusters_and_writes_the_new_file(tmp_path, capsys):
    from studio.cli import main

    src = tmp_path / "d.jsonl"
    _jsonl(src, [_conv("What is two plus two?", "Two plus two is four."),
                 _conv("WHAT is two plus two?", "Two  plus two is four."),
                 _conv("Name a colour.", "Blue.")])  # fmt: skip
    report = tmp_path / "r.json"
    assert main(["data", "dedupe", str(src), "--min-chars", "10", "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "lines 1, 2 (exact): user: What is two plus two?" in out
    assert "line 3: answer too short (5 characters < 10)" in out
    assert f"written:    {tmp_path / 'd.clean.jsonl'}" in out
    assert (tmp_path / "d.clean.jsonl").read_bytes() == src.read_bytes().split(b"\n")[0] + b"\n"
    assert json.loads(report.read_text())["clusters"][0]["lines"] == [1, 2]
    # Exists now: exit 2 with one sentence; --events gives JSON lines ending with the error.
    assert main(["data", "dedupe", str(src)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["data", "dedupe", str(src), "--dry-run", "--events"]) == 0
    events = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert events[-1]["type"] == "done" and events[-1]["step"] == 2
    assert main(["data", "dedupe", str(src), "--threshold", "2"]) == 2

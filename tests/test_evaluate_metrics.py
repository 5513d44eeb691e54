"""Evaluation metrics against hand-computed values, the judge's reply parsing, the report's
HTML (escaped, self-contained) and the options' validation. No model: milliseconds."""

import math

import pytest

from studio.core.errors import ConfigError
from studio.core.evaluate import metrics
from studio.core.evaluate.html import diff_html, plot_svg, render_html
from studio.core.evaluate.judge import endpoint, judge_prompt, parse_verdict
from studio.core.evaluate.options import EvalOptions


def test_normalisation_drops_case_punctuation_articles_and_spaces():
    assert metrics.normalize("  The Answer, is:  4! ") == "answer is 4"
    assert metrics.normalize("Ｆｏｕｒ。") == "four"  # full-width letters and stop (NFKC)
    assert metrics.exact_match("The answer is 4.", "answer is 4")
    assert metrics.exact_match("BLUE", "blue.")
    assert not metrics.exact_match("Blue sky.", "Blue.")
    assert not metrics.exact_match("", "Blue.")


def test_contains_is_on_word_boundaries():
    assert metrics.contains("I think the answer is 4.", "4")
    assert metrics.contains("It is Bonjour, I believe", "bonjour!")
    assert not metrics.contains("It is 14.", "4")  # "4" is not a word of "14"
    assert not metrics.contains("anything", "")  # an empty reference says nothing
    assert not metrics.contains("", "4")


def test_rouge_l_f_by_hand():
    # answer "the cat sat on the mat" -> cat sat on mat (4 words, articles dropped);
    # reference "the cat is on the mat" -> cat is on mat. LCS "cat on mat" = 3.
    # P = 3/4, R = 3/4, F = 0.75.
    assert metrics.rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(0.75)
    # "x y z w" vs "x z": LCS 2, P = 2/4, R = 2/2, F = 2*0.5*1/1.5 = 2/3.
    assert metrics.rouge_l("x y z w", "x z") == pytest.approx(2 / 3)
    assert metrics.rouge_l("same words here", "Same words, here.") == 1.0
    assert metrics.rouge_l("nothing shared", "other text") == 0.0
    assert metrics.rouge_l("", "ref") == 0.0 and metrics.rouge_l("ans", "") == 0.0
    # Order matters: reversed words share only one in sequence. LCS 1 of 3: F = 1/3.
    assert metrics.rouge_l("one two three", "three two one") == pytest.approx(1 / 3)


def test_perplexity_is_exp_of_the_mean_loss():
    losses = [0.5, 1.0, 2.5]
    mean = sum(losses) / len(losses)
    assert metrics.perplexity(mean) == pytest.approx(math.exp(4 / 3))
    assert metrics.perplexity(0.0) == 1.0
    assert metrics.perplexity(1e6) == math.inf  # overflow is a hopeless model, not a crash


def test_score_answer_and_mean():
    assert metrics.score_answer("Blue.", "blue") == {
        "exact_match": True,
        "contains": True,
        "rouge_l": 1.0,
    }
    assert metrics.score_answer("anything", "  ") == {
        "exact_match": None,
        "contains": None,
        "rouge_l": None,
    }
    assert metrics.mean([True, False, None, True]) == pytest.approx(2 / 3)
    assert metrics.mean([None, None]) is None


def test_judge_replies_are_parsed_or_marked_unreadable():
    assert parse_verdict('{"score": 8, "reason": "Correct."}').score == 8
    v = parse_verdict('Sure! ```json\n{"score": "3", "reason": "Wrong colour."}\n```')
    assert (v.score, v.reason) == (3, "Wrong colour.")
    assert parse_verdict("Score: 7 - mostly right").score == 7
    bad = parse_verdict('{"score": 42, "reason": "x"}')
    assert bad.score is None and "no score" in bad.reason
    assert parse_verdict("I cannot grade this.").score is None
    assert endpoint("http://h:8000") == "http://h:8000/v1/chat/completions"
    assert endpoint("http://h:8000/v1/") == "http://h:8000/v1/chat/completions"
    assert endpoint("http://h/v1/chat/completions") == "http://h/v1/chat/completions"
    assert "Reference answer" not in judge_prompt("q", "", "a")


def _report(answer: str) -> dict:
    models = [
        {"key": "base", "adapter": "", "loss": 3.0, "perplexity": 20.08, "exact_match": 0.0,
         "contains": 0.5, "rouge_l": 0.2, "ended_turn": 0, "answered": 2, "tokens": 9, "judge": None},
        {"key": "run<1>", "adapter": "/r/adapter", "loss": 0.5, "perplexity": 1.65,
         "exact_match": 1.0, "contains": 1.0, "rouge_l": 1.0, "ended_turn": 2, "answered": 2,
         "tokens": 9, "judge": None},
    ]  # fmt: skip
    samples = [{"prompt": "<b>q</b>", "messages": [], "reference": "Blue.",
                "answers": {"base": {"text": answer, "finish_reason": "length", "exact_match": False,
                                     "contains": False, "rouge_l": 0.0},
                            "run<1>": {"text": "Blue.", "finish_reason": "stop", "exact_match": True,
                                       "contains": True, "rouge_l": 1.0}}}]  # fmt: skip
    return {"name": "r", "models": models, "samples": samples, "data": {}, "generation": {},
            "judge": {"status": "failed", "message": "the judge was not used: <refused>",
                      "note": "n", "url": "u", "model": "m"},
            "lm_eval": {"status": "off"}}  # fmt: skip


def test_report_html_escapes_everything_and_needs_nothing_outside():
    page = render_html(_report("<script>alert(1)</script>"))
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "&lt;b&gt;q&lt;/b&gt;" in page and "run&lt;1&gt;" in page
    assert "<svg" in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )
    assert "src=" not in page and "<link" not in page
    assert "the judge was not used: &lt;refused&gt;" in page
    # The best of each column in bold: the run's loss (lower) and exact match (higher).
    assert '<td class="num best">0.500</td>' in page and '<td class="num best">100%</td>' in page


def test_answer_diff_marks_shared_extra_and_missing_words():
    html = diff_html("The sky is green", "The sky is blue")
    assert '<span class="same">The sky is</span>' in html
    assert '<span class="extra">green</span>' in html and ">blue</ins>" in html


def test_plot_has_a_bar_per_model_and_metric():
    svg = plot_svg(_report("x")["models"])
    assert svg.count("<rect") == 2 + 2 * 4  # the legend, then loss, exact match, contains and
    # ROUGE-L for each model


def test_options_are_validated():
    with pytest.raises(ConfigError, match="runs"):
        EvalOptions(runs=[])
    with pytest.raises(ConfigError, match="judge_model"):
        EvalOptions(runs=["r"], judge_url="http://h")
    with pytest.raises(ConfigError, match="judge_url"):
        EvalOptions(runs=["r"], judge_url="ftp://h", judge_model="m")
    with pytest.raises(ConfigError, match="name"):
        EvalOptions(runs=["r"], name="../elsewhere")
    with pytest.raises(ConfigError, match="samples"):
        EvalOptions(runs=["r"], samples=-1)


def test_the_best_model_is_alone_at_the_top():
    from studio.core.evaluate.report import best

    models = [{"key": "base", "loss": 3.0, "em": 0.0}, {"key": "run", "loss": 1.0, "em": 0.0}]
    assert best(models, "loss", lower=True) == "run" and best(models, "loss") == "base"
    assert best(models, "em") is None  # tied: nobody in bold
    assert best(models, "judge") is None

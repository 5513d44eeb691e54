"""What 8 and 4 bits cost a run: validation perplexity per quantization, its CLI table, and
clear errors. The unquantized loss must be the run's own final validation loss: the same
examples, masked the same way, through the same loaders."""

import math
import shutil

import pytest

from studio.cli import main
from studio.core.errors import StudioError
from studio.core.events import read_events
from studio.core.quant_cost import Cancelled, describe, perplexity_by_quant, relative
from studio.core.train import run_training
from tests.test_train import config, write_data


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory):
    """A run of a few steps on the tiny model, 5 of its 24 records held out for validation."""
    root = tmp_path_factory.mktemp("quant-cost")
    data = write_data(root / "data.jsonl")
    last = run_training(config(tiny_model, data, root / "run", max_steps=4))
    assert last.type == "done"
    return root / "run"


def final_eval_loss(run_dir) -> float:
    return [e.eval_loss for e in read_events(run_dir / "events.jsonl") if e.type == "eval"][-1]


def test_three_quantizations_measured_on_the_runs_validation_examples(run):
    seen = []
    results = perplexity_by_quant(run, progress=lambda done, total: seen.append((done, total)))
    assert [r.quant for r in results] == ["none", "8bit", "4bit"]
    for r in results:
        assert math.isfinite(r.perplexity) and r.perplexity > 1
        assert r.perplexity == pytest.approx(math.exp(r.loss))
        assert r.examples == 5 and r.tokens > 0 and r.note == "" and r.seconds > 0
    none, eight, four = results
    # Same examples, masking, packing and loss as training's own evaluation.
    assert none.loss == pytest.approx(final_eval_loss(run), abs=1e-3)
    assert eight.tokens == four.tokens == none.tokens
    assert four.memory_mb < eight.memory_mb < none.memory_mb
    assert none.label == "32-bit" and eight.label == "8-bit"  # float32 on the CPU
    # Progress counts examples over all three, ending at the total.
    assert seen[-1] == (15, 15) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    line = describe(results)
    assert line.startswith("32-bit ppl ") and "8-bit" in line and "4-bit" in line and "MB" in line


def test_a_run_without_validation_data_uses_training_records_and_says_so(tiny_model, tmp_path):
    data = write_data(tmp_path / "data.jsonl")
    cfg = config(tiny_model, data, tmp_path / "run", max_steps=2)
    cfg.data.val_split = 0.0
    run_training(cfg)
    (r,) = perplexity_by_quant(tmp_path / "run" / "adapter", ("none",), max_examples=3)
    assert r.examples == 3 and "no validation data" in r.note and r.perplexity > 1


def test_bad_input_is_one_clear_sentence(run, tiny_model, tmp_path):
    lone = tmp_path / "lone-adapter"
    shutil.copytree(run / "adapter", lone)  # an adapter with no run.yaml near it
    with pytest.raises(StudioError, match="not in a run folder"):
        perplexity_by_quant(lone)
    moved = tmp_path / "moved-run"
    shutil.copytree(run, moved)
    text = (moved / "run.yaml").read_text().replace(str(run.parent / "data.jsonl"), "gone.jsonl")
    (moved / "run.yaml").write_text(text)
    with pytest.raises(StudioError) as e:
        perplexity_by_quant(moved)
    assert "gone.jsonl" in e.value.message and e.value.field == "data.path"


def test_cancel_stops_at_the_next_example(run):
    seen = []
    with pytest.raises(Cancelled):
        perplexity_by_quant(run, progress=lambda *a: seen.append(a), cancel=lambda: bool(seen))
    assert seen == [(2, 15)]  # one batch of two examples, then it stopped


def test_each_model_is_freed_before_the_next_loads(run, monkeypatch):
    import weakref

    from studio.core import quant_cost

    real, alive = quant_cost._load, []

    def load(*args):
        assert all(ref() is None for ref in alive), "the previous model is still in memory"
        chat = real(*args)
        alive.append(weakref.ref(chat.shared.net))
        return chat

    monkeypatch.setattr(quant_cost, "_load", load)
    perplexity_by_quant(run)
    assert len(alive) == 3 and all(ref() is None for ref in alive)


def test_relative_change_keeps_small_differences_visible():
    assert relative(10.02, 10.0) == "+0.20%" and relative(13.1, 12.3) == "+6.5%"


def test_cli_prints_a_table(run, capsys):
    assert main(["chat", "--adapter", str(run), "--quant-cost"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["weights", "perplexity", "vs"]
    assert [line.split()[0] for line in lines[1:4]] == ["32-bit", "8-bit", "4-bit"]
    assert "5 validation examples" in out and "MB" in lines[1]
    assert float(lines[1].split()[2]) == pytest.approx(final_eval_loss(run), abs=1e-3)


def test_cli_needs_an_adapter(capsys):
    assert main(["chat", "--quant-cost"]) == 2
    assert "--adapter" in capsys.readouterr().err

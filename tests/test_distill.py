"""Distillation: the divergences (by hand and against TRL), the objective's masking and
chunking, the tokenizer check, a run that lowers KL to its teacher, bad input, resume."""

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from studio.core.config import DistillConfig
from studio.core.data.examples import IGNORE
from studio.core.distill import (
    DistillLoss,
    check_tokenizers,
    forward_kl,
    generalized_jsd,
    reverse_kl,
    token_divergence,
)
from studio.core.errors import ConfigError
from studio.core.events import read_events
from studio.core.train import run_training, train
from tests.test_train import config, kill_after_checkpoint, losses, write_data


def save_teacher(student: Path, out: Path, noise: float, seed: int = 1, pad_to: int = 0) -> Path:
    """The student with a rank-2 change to every linear layer but the head: a model that
    predicts differently, in a way LoRA can learn, under the student's own tokenizer.
    `pad_to` pads the embedding rows as big models do."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(student)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.Linear) and name != "lm_head":
                out_f, in_f = m.weight.shape
                m.weight.add_(torch.randn(out_f, 2) @ torch.randn(2, in_f) * noise)
    if pad_to:
        model.resize_token_embeddings(pad_to, mean_resizing=False)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(student).save_pretrained(out)
    return out


def trained_teacher(student: Path, out: Path, steps: int = 40) -> Path:
    """The student fully fine-tuned on the test data (every weight, every token): a teacher
    sure of the answers where the random student is not, under the same tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(student)
    model = AutoModelForCausalLM.from_pretrained(student, dtype=torch.float32)
    path = write_data(out.parent / "teacher_data.jsonl")
    rows = [json.loads(x)["messages"] for x in path.read_text(encoding="utf-8").splitlines()]
    ids = [tok.apply_chat_template(m, tokenize=True, return_dict=False) for m in rows]
    ids = [list(x["input_ids"]) if isinstance(x, dict) else list(x) for x in ids]
    width = max(map(len, ids))
    input_ids = torch.tensor([x + [tok.pad_token_id] * (width - len(x)) for x in ids])
    labels = torch.tensor([x + [IGNORE] * (width - len(x)) for x in ids])
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        model(input_ids=input_ids, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def student(tiny_model, tmp_path_factory):
    """The tiny model with its LM head 10x larger. The random head's logits span about one
    nat, so no LoRA change below it could make the student confident; now it can."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("student") / "model"
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    with torch.no_grad():
        model.lm_head.weight.mul_(10)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def teacher(student, tmp_path_factory):
    return trained_teacher(student, tmp_path_factory.mktemp("teacher") / "model")


@pytest.fixture
def data(tmp_path):
    return write_data(tmp_path / "data.jsonl")


def distill_config(model, teacher, data, out, distill=None, **train_kw):
    cfg = config(model, data, out, **train_kw)
    cfg.train.mode = "distill"
    cfg.distill = DistillConfig(teacher=str(teacher), **(distill or {}))
    return cfg


# ----------------------------------------------------------------------------- the divergences


def logp(*probs):
    return torch.tensor(probs, dtype=torch.float64).log().unsqueeze(0)


def test_divergences_match_hand_computed_values():
    s, t = logp(0.25, 0.75), logp(0.5, 0.5)
    ln = math.log
    assert forward_kl(s, t).item() == pytest.approx(0.5 * ln(0.5 / 0.25) + 0.5 * ln(0.5 / 0.75))
    assert reverse_kl(s, t).item() == pytest.approx(0.25 * ln(0.25 / 0.5) + 0.75 * ln(0.75 / 0.5))
    # beta 0.5: m = (0.375, 0.625)
    want = 0.5 * (0.5 * ln(0.5 / 0.375) + 0.5 * ln(0.5 / 0.625)) + 0.5 * (
        0.25 * ln(0.25 / 0.375) + 0.75 * ln(0.75 / 0.625)
    )
    assert generalized_jsd(s, t, 0.5).item() == pytest.approx(want)
    # beta 0.2 weighs the teacher 0.2 in the mixture: m = (0.3, 0.7)
    want = 0.2 * (0.5 * ln(0.5 / 0.3) + 0.5 * ln(0.5 / 0.7)) + 0.8 * (
        0.25 * ln(0.25 / 0.3) + 0.75 * ln(0.75 / 0.7)
    )
    assert generalized_jsd(s, t, 0.2).item() == pytest.approx(want)


def test_temperature_softens_both_distributions():
    student = torch.tensor([[0.0, math.log(3.0)]])  # softmax (0.25, 0.75)
    teacher = torch.tensor([[0.0, 0.0]])
    # At T = 2 the student's logits halve: probabilities 1/(1+sqrt 3) and sqrt 3/(1+sqrt 3).
    q = 1 / (1 + math.sqrt(3))
    want = 0.5 * math.log(0.5 / q) + 0.5 * math.log(0.5 / (1 - q))
    got = token_divergence(student, teacher, "forward_kl", temperature=2.0)
    assert got.item() == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
def test_divergence_is_zero_when_teacher_is_student_and_positive_otherwise(kind):
    torch.manual_seed(0)
    x = torch.randn(7, 300) * 3
    assert token_divergence(x, x.clone(), kind, 2.0).abs().max().item() < 1e-6
    assert (token_divergence(x, torch.randn(7, 300), kind, 2.0) > 1e-3).all()


def _trl_jsd():
    try:
        from trl.experimental.gkd.gkd_trainer import GKDTrainer
    except Exception:  # not installed, or a version without it
        try:
            from trl import GKDTrainer
        except Exception:
            pytest.skip("trl is not importable")
    return GKDTrainer.generalized_jsd_loss


@pytest.mark.parametrize(
    "kind,beta", [("forward_kl", 0.0), ("reverse_kl", 1.0), ("jsd", 0.5), ("jsd", 0.1)]
)
def test_divergences_match_trl_on_the_same_tensors(kind, beta):
    trl_loss = _trl_jsd()
    torch.manual_seed(1)
    student, teacher = torch.randn(2, 9, 50) * 2, torch.randn(2, 9, 50) * 2
    labels = torch.randint(0, 50, (2, 9))
    labels[0, :4] = IGNORE  # a prompt
    labels[1, 7:] = IGNORE  # padding
    n = int((labels != IGNORE).sum())
    want = trl_loss(student, teacher, labels=labels, beta=beta, temperature=2.0,
                    num_items_in_batch=n)  # fmt: skip
    mask = labels != IGNORE
    got = token_divergence(student[mask], teacher[mask], kind, 2.0, jsd_beta=beta).sum() / n
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


# ----------------------------------------------------------------------------- the objective


@pytest.fixture(scope="module")
def models(tiny_model, teacher):
    from transformers import AutoModelForCausalLM

    s = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    t = AutoModelForCausalLM.from_pretrained(teacher, dtype=torch.float32)
    return s, t.eval().requires_grad_(False)


def batch(length=60, prompt=20, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 400, (2, length), generator=gen)
    labels = ids.clone()
    labels[:, :prompt] = IGNORE
    labels[1, -7:] = IGNORE
    pos = torch.arange(length).repeat(2, 1)
    return {"input_ids": ids, "position_ids": pos, "labels": labels}


def test_loss_is_kl_and_ce_on_answer_tokens_only(models):
    student, teacher = models
    b = batch()
    cfg = DistillConfig(teacher="t", alpha=0.3, temperature=1.5)
    fn = DistillLoss(student, teacher, cfg, vocab=student.config.vocab_size)
    with torch.no_grad():
        loss, n = fn(b)
        s_all = student(input_ids=b["input_ids"]).logits[:, :-1]
        t_all = teacher(input_ids=b["input_ids"]).logits[:, :-1]
    mask = b["labels"][:, 1:] != IGNORE
    labels = b["labels"][:, 1:][mask]
    kl = token_divergence(s_all[mask], t_all[mask], "forward_kl", 1.5).sum()
    ce = torch.nn.functional.cross_entropy(s_all[mask], labels, reduction="sum")
    assert n == int(mask.sum()) == 2 * 40 - 7
    assert loss.item() == pytest.approx((0.3 * 1.5**2 * kl + 0.7 * ce).item(), rel=1e-4)
    assert fn.take_metrics() == pytest.approx({"kl": kl.item(), "ce": ce.item()}, rel=1e-4)
    # The prompt's positions would change the sum: they are left out, not merely small.
    kl_all = token_divergence(s_all.flatten(0, 1), t_all.flatten(0, 1), "forward_kl", 1.5).sum()
    assert kl_all.item() > kl.item() * 1.2


def test_chunks_give_the_same_loss_and_gradients(models):
    student, teacher = models
    b = batch(length=80, prompt=10, seed=2)
    grads = []
    for chunk in (16, 4096):
        fn = DistillLoss(student, teacher, DistillConfig(teacher="t", chunk_tokens=chunk),
                         vocab=student.config.vocab_size)  # fmt: skip
        student.zero_grad()
        loss, _ = fn(b)
        loss.backward()
        grads.append((loss.item(), student.model.layers[0].self_attn.q_proj.weight.grad.clone()))
    (l16, g16), (lbig, gbig) = grads
    assert l16 == pytest.approx(lbig, rel=1e-5)
    assert torch.allclose(g16, gbig, rtol=1e-4, atol=1e-7) and g16.abs().sum() > 0
    student.zero_grad()


def test_padded_embedding_rows_are_left_out(tiny_model, teacher, models, tmp_path):
    """A teacher whose embedding matrix is padded beyond the tokenizer (as big models' are)
    is compared on the shared ids: rows past them, however large, change nothing."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from studio.core.distill import check_teacher

    student, _ = models
    vocab = student.config.vocab_size
    plain = save_teacher(tiny_model, tmp_path / "plain", noise=0.2)
    plain = AutoModelForCausalLM.from_pretrained(plain).eval().requires_grad_(False)
    padded = save_teacher(tiny_model, tmp_path / "padded", noise=0.2, pad_to=vocab + 30)
    t = AutoModelForCausalLM.from_pretrained(padded).eval().requires_grad_(False)
    assert t.lm_head.weight.shape[0] == vocab + 30
    with torch.no_grad():
        t.lm_head.weight[vocab:] = 50.0  # logits that would dominate if they were compared
    cfg = distill_config(tiny_model, padded, "d", tmp_path / "r")
    assert check_teacher(cfg, AutoTokenizer.from_pretrained(tiny_model)) == vocab
    b = batch()
    with torch.no_grad():
        want, _ = DistillLoss(student, plain, cfg.distill, vocab)(b)
        got, _ = DistillLoss(student, t, cfg.distill, vocab)(b)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


@pytest.fixture(scope="module")
def stranger(tmp_path_factory):
    """A model with a tokenizer of its own (another corpus, another vocabulary)."""
    from studio.core.tiny import build_model

    texts = ["zebra quartz vortex " * 20, "Lorem ipsum dolor sit amet " * 20]
    return build_model(tmp_path_factory.mktemp("stranger") / "model", texts, vocab_size=400)


def test_tokenizers_are_compared_by_their_vocabulary(tiny_model, stranger, teacher):
    from transformers import AutoTokenizer

    mine = AutoTokenizer.from_pretrained(tiny_model)
    assert check_tokenizers(mine, AutoTokenizer.from_pretrained(teacher), "t") == len(mine)
    with pytest.raises(ConfigError, match="does not share the student's tokenizer") as e:
        check_tokenizers(mine, AutoTokenizer.from_pretrained(stranger), str(stranger))
    assert e.value.field == "distill.teacher" and "id " in e.value.message
    # Same size, other tokens: still refused (size alone proves nothing).
    swapped = AutoTokenizer.from_pretrained(tiny_model)
    vocab = dict(mine.get_vocab())
    a, b = sorted(vocab)[100:102]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    swapped.get_vocab = lambda: vocab
    with pytest.raises(ConfigError, match=f"id {min(vocab[a], vocab[b])} "):
        check_tokenizers(mine, swapped, "swapped")


# ----------------------------------------------------------------------------- runs


def test_distillation_lowers_kl_to_the_teacher_through_the_python_api(
    student, teacher, data, tmp_path
):
    from studio import Trainer

    result = Trainer(
        model_path=str(student), output=str(tmp_path / "api"), seq_len=64, batch_size=4,
        lr=1e-2, max_steps=30, seed=3, val_split=0.2, mode="distill", teacher=str(teacher), distill_alpha=0.9,
    ).train(data_path=str(data))  # fmt: skip
    assert result.status == "completed" and (result.adapter_path / "adapter_config.json").is_file()
    events = read_events(result.run_dir / "events.jsonl")
    kl = [e.metrics["kl"] for e in events if e.type == "step"]
    assert len(kl) == 30 and all("ce" in e.metrics for e in events if e.type == "step")
    first, last = sum(kl[:3]) / 3, sum(kl[-3:]) / 3
    print(f"KL to the teacher: {first:.4f} over the first 3 steps, {last:.4f} over the last 3")
    assert last < 0.7 * first
    ev = [e for e in events if e.type == "eval"]
    assert ev and set(ev[-1].metrics) == {"kl", "ce"}
    assert any(e.type == "log" and "distillation from" in e.message for e in events)


def test_a_teacher_with_another_tokenizer_is_exit_2_and_leaves_no_run(
    tiny_model, stranger, data, tmp_path, capsys
):
    from studio.cli import main

    out = tmp_path / "run"
    args = ["train", "--model", str(tiny_model), "--data", str(data), "--output", str(out),
            "--mode", "distill", "--teacher", str(stranger), "--quiet"]  # fmt: skip
    started = time.perf_counter()
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err
    assert "does not share the student's tokenizer" in err and len(err.splitlines()) == 1
    assert not out.exists()
    assert time.perf_counter() - started < 30  # refused before any weights load


def test_a_missing_teacher_is_named_as_the_teacher(tiny_model, data, tmp_path):
    cfg = distill_config(tiny_model, tmp_path / "nope", data, tmp_path / "r")
    with pytest.raises(ConfigError, match=r"^distill\.teacher: no such folder"):
        list(train(cfg))


def test_sigkill_then_resume_matches_uninterrupted_distill_run(tiny_model, teacher, data, tmp_path):
    steps = 24
    extra = dict(max_steps=steps, save_every=4)
    kd = {"loss": "jsd", "chunk_tokens": 16}  # several chunks a batch, recomputed in backward
    reference = tmp_path / "ref"
    run_training(distill_config(tiny_model, teacher, data, reference, kd, **extra))
    run = tmp_path / "killed"
    distill_config(tiny_model, teacher, data, run, kd, **extra).save(tmp_path / "run.yaml")
    cmd = [sys.executable, "-m", "studio", "train", "--config", str(tmp_path / "run.yaml"),
           "--quiet"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    proc, killed_after = kill_after_checkpoint(cmd, run, env)
    assert killed_after is not None, "the run ended before it could be killed"
    assert max(losses(run)) < steps
    out = subprocess.run(cmd[:-1] + ["--output", str(run), "--resume", "--quiet"], env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    got, want = losses(run), losses(reference)
    assert sorted(got) == list(range(1, steps + 1))
    for s in range(1, steps + 1):
        assert got[s] == pytest.approx(want[s], rel=1e-4, abs=1e-6), s
    kl = {e.step: e.metrics["kl"] for e in read_events(run / "events.jsonl") if e.type == "step"}
    ref_kl = {e.step: e.metrics["kl"] for e in read_events(reference / "events.jsonl")
              if e.type == "step"}  # fmt: skip
    assert kl[steps] == pytest.approx(ref_kl[steps], rel=1e-4)


def test_the_teacher_answers_prompt_only_records_once(tiny_model, teacher, tmp_path):
    data = write_data(tmp_path / "data.jsonl", n=12)
    with open(data, "a", encoding="utf-8") as f:
        for i in range(6):
            f.write(json.dumps({"messages": [{"role": "user", "content": f"Say {i}."}]}) + "\n")
            f.write(json.dumps({"prompt": f"Count to {i}."}) + "\n")
    kd = {"generate": True, "max_new_tokens": 6}
    cfg = distill_config(tiny_model, teacher, data, tmp_path / "g", kd, max_steps=2)
    events = list(train(cfg))
    assert events[-1].type == "done", events[-1]
    written = tmp_path / "g" / "distill_data.jsonl"
    rows = [json.loads(x) for x in written.read_text(encoding="utf-8").splitlines()]
    note = next(e.message for e in events if e.type == "log" and "teacher answered" in e.message)
    answered = int(note.split("answered ")[1].split()[0])
    assert answered >= 1 and len(rows) == 12 + answered
    said = [r["messages"] for r in rows if r["messages"][0]["content"].startswith(("Say", "Count"))]
    assert len(said) == answered
    assert all(m[-1]["role"] == "assistant" and m[-1]["content"].strip() for m in said)
    # Resumed (or run again into the same folder): the answers are read back, not regenerated.
    before = written.stat().st_mtime_ns
    cfg.train.max_steps = 3
    again = list(train(cfg, resume=True))
    assert again[-1].type == "done" and written.stat().st_mtime_ns == before
    assert any(e.type == "log" and "reusing the teacher's answers" in e.message for e in again)

"""Teacher -> student distillation (train.mode distill).

The student trains on the same packed rows as SFT, with the loss per answer token

    alpha * T^2 * D(teacher, student at temperature T) + (1 - alpha) * CE(student, answer)

where D is forward KL(teacher||student) (the default: the student covers every mode of the
teacher), reverse KL(student||teacher) (mode-seeking) or the generalised Jensen-Shannon
divergence of GKD (Agarwal et al. 2023, TRL's GKDTrainer.generalized_jsd_loss). T^2 keeps
the gradient's scale independent of T (Hinton et al. 2015).

Memory: logits exist only at labelled positions and only `chunk_tokens` rows at a time, for
both models; each chunk's student logits are recomputed in the backward pass (activation
checkpointing) instead of being kept, so the peak is one chunk x vocabulary, not answer
tokens x vocabulary. The teacher is frozen, in eval mode, never a submodule of the objective
(DDP, the optimizer and the checkpoints never see it), and may be loaded 8- or 4-bit.

Teacher and student must share a tokenizer (the same token -> id map, not just the same
size); models whose embedding matrices are padded beyond it are compared on the shared ids.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from studio.core.config import DistillConfig, RunConfig
from studio.core.data.examples import IGNORE
from studio.core.errors import ConfigError, ModelError
from studio.core.objective import LossFn

GENERATED_FILE = "distill_data.jsonl"
"""RUN/distill_data.jsonl: the training data with the teacher's answers to prompt-only records."""


# ----------------------------------------------------------------------------- the divergences


def forward_kl(student_logp, teacher_logp):
    """KL(teacher||student) per row, from log-probabilities over the last dimension."""
    return (teacher_logp.exp() * (teacher_logp - student_logp)).sum(-1)


def reverse_kl(student_logp, teacher_logp):
    """KL(student||teacher) per row."""
    return forward_kl(teacher_logp, student_logp)


def generalized_jsd(student_logp, teacher_logp, beta: float):
    """beta * KL(teacher||m) + (1 - beta) * KL(student||m), m = beta*teacher + (1-beta)*student,
    per row (GKD's definition, with TRL's meaning of beta)."""
    mixture = torch.logsumexp(
        torch.stack([teacher_logp + math.log(beta), student_logp + math.log(1 - beta)]), dim=0
    )
    return beta * forward_kl(mixture, teacher_logp) + (1 - beta) * forward_kl(mixture, student_logp)


def token_divergence(student_logits, teacher_logits, kind: str = "forward_kl",
                     temperature: float = 1.0, jsd_beta: float = 0.5):  # fmt: skip
    """The divergence of each row's distributions at `temperature` (not scaled by T^2), in
    float32 whatever the logits' dtype: a bf16 softmax over 100k tokens loses the tail."""
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if kind == "forward_kl":
        return forward_kl(s, t)
    if kind == "reverse_kl":
        return reverse_kl(s, t)
    if kind == "jsd":
        return generalized_jsd(s, t, jsd_beta)
    raise ValueError(f"unknown divergence {kind!r}")


# ----------------------------------------------------------------------------- the objective


class DistillLoss(LossFn):
    """The student's loss against a frozen teacher; units are labelled tokens (as SFT).

    take_metrics() gives "kl" (the divergence at temperature T, before the T^2 scale) and
    "ce" (the student's cross entropy on the answers), both summed over answer tokens."""

    def __init__(self, model, teacher, cfg: DistillConfig, vocab: int):
        super().__init__(model)
        # A plain attribute: the teacher is no part of what trains, syncs or is saved.
        self.__dict__["teacher"] = LossFn(teacher)
        self.cfg = cfg
        self.vocab = vocab

    def forward(self, batch):
        if not self.checked:
            self.check_fast_path(batch)
        if not self.teacher.checked:
            self.teacher.check_fast_path(batch)
        target = batch["labels"][:, 1:]
        mask = target != IGNORE
        student = self.labelled_states(batch, mask)
        with torch.no_grad():
            teacher = self.teacher.labelled_states(batch, mask)
        labels = target[mask]
        # Recompute each chunk's logits in the backward pass rather than keep them all.
        recompute = torch.is_grad_enabled() and student.requires_grad
        total = kl = ce = 0.0
        step = self.cfg.chunk_tokens
        for i in range(0, labels.numel(), step):
            args = (student[i : i + step], teacher[i : i + step], labels[i : i + step])
            if recompute:
                from torch.utils.checkpoint import checkpoint

                loss, d, c = checkpoint(self._chunk, *args, use_reentrant=False)
            else:
                loss, d, c = self._chunk(*args)
            total, kl, ce = total + loss, kl + d, ce + c
        if not torch.is_tensor(total):  # no labelled token: a zero that still has a graph
            total = student.sum() * 0.0
        self.add_metrics(kl=float(kl), ce=float(ce))
        return total, labels.numel()

    def _chunk(self, student, teacher, labels):
        """(loss sum, divergence sum, cross-entropy sum) over one chunk of answer tokens."""
        s_logits = (self.head(student) if self.fast else student).float()
        # The teacher's head runs here too (again in the backward pass): one matmul is
        # cheaper than keeping its logits for every answer token.
        with torch.no_grad():
            t_logits = self.teacher.head(teacher) if self.teacher.fast else teacher
        ce = F.cross_entropy(s_logits, labels, reduction="sum")
        c = self.cfg
        d = token_divergence(s_logits[:, : self.vocab], t_logits[:, : self.vocab],
                             c.loss, c.temperature, c.jsd_beta).sum()  # fmt: skip
        loss = c.alpha * c.temperature**2 * d + (1 - c.alpha) * ce
        return loss, d.detach(), ce.detach()


# ----------------------------------------------------------------------------- the teacher


def _teacher_error(e: ModelError, teacher: str) -> ConfigError:
    # load_model and load_tokenizer speak of model.path; here the path is the teacher's.
    msg = e.message.removeprefix("model.path: ")
    return ConfigError(f"distill.teacher: {msg}", field="distill.teacher")


def check_tokenizers(student, teacher, teacher_path: str) -> int:
    """The size of the shared vocabulary; ConfigError if the token -> id maps differ."""
    sv, tv = student.get_vocab(), teacher.get_vocab()
    if sv != tv:
        s_inv = {i: tok for tok, i in sv.items()}
        t_inv = {i: tok for tok, i in tv.items()}
        first = next(
            (i for i in range(max(len(s_inv), len(t_inv))) if s_inv.get(i) != t_inv.get(i)), None
        )
        where = (
            f"; id {first} is {s_inv.get(first)!r} for the student and {t_inv.get(first)!r} "
            "for the teacher"
            if first is not None
            else ""
        )
        raise ConfigError(
            f"distill.teacher: {teacher_path} does not share the student's tokenizer "
            f"({len(tv):,} tokens vs {len(sv):,}{where}); distillation compares the two models' "
            "predictions token by token, so pick a teacher of the student's model family",
            field="distill.teacher",
        )
    return max(sv.values()) + 1


def check_teacher(cfg: RunConfig, tokenizer) -> int:
    """Before any weights load: the teacher's tokenizer against the student's, and its
    config's vocabulary. Returns the shared vocabulary size."""
    from studio.core.models import is_local, load_tokenizer, read_config

    path = cfg.distill.teacher
    try:
        teacher_tok = load_tokenizer(path, cfg.model.trust_remote_code)
        vocab = check_tokenizers(tokenizer, teacher_tok, path)
        if is_local(path):
            rows = read_config(path).get("vocab_size")
            if isinstance(rows, int) and rows < vocab:
                raise ConfigError(
                    f"distill.teacher: {path}'s model has {rows:,} output rows, fewer than "
                    f"its tokenizer's {vocab:,} tokens; it cannot be used as a teacher",
                    field="distill.teacher",
                )
    except ModelError as e:
        raise _teacher_error(e, path) from None
    return vocab


def load_teacher(cfg: RunConfig):
    """The teacher on the student's device and dtype (optionally 8/4-bit), frozen, eval."""
    from studio.core.models import load_model

    mcfg = dataclasses.replace(cfg.model, path=cfg.distill.teacher,
                               quant=cfg.distill.teacher_quant)  # fmt: skip
    try:
        loaded = load_model(mcfg, with_tokenizer=False)
    except ModelError as e:
        raise _teacher_error(e, cfg.distill.teacher) from None
    teacher = loaded.model
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


@dataclass
class Teacher:
    """The teacher of a run, checked; its weights load on first need (`load`)."""

    vocab: int
    """The shared vocabulary: logits are compared on ids below it."""
    cfg: RunConfig
    """The run's config; with distill.generate, training on RUN/distill_data.jsonl."""
    model: object = None
    notes: list[str] = field(default_factory=list)
    """Lines for the run's log."""

    def load(self):
        if self.model is None:
            self.model = load_teacher(self.cfg)
        return self.model


def prepare(cfg: RunConfig, tokenizer, world) -> Teacher:
    """The tokenizers compared (before any weights load), then, with distill.generate, the
    teacher's answers to prompt-only records (rank 0 writes them; the others wait)."""
    teacher = Teacher(check_teacher(cfg, tokenizer), cfg)
    if cfg.distill.generate:
        path = Path(cfg.output) / GENERATED_FILE
        if world.main:
            path, note = generate_answers(cfg, teacher.load(), tokenizer)
            teacher.notes.append(note)
        world.gather(0)  # a barrier: the file is whole before any rank reads it
        teacher.cfg = with_data(cfg, path)
    return teacher


def make_objective(teacher: Teacher, model) -> DistillLoss:
    head = model.get_output_embeddings()
    rows = head.weight.shape[0] if head is not None else teacher.vocab
    if rows < teacher.vocab:
        raise ConfigError(
            f"model.path: the student's LM head has {rows:,} rows, fewer than its tokenizer's "
            f"{teacher.vocab:,} tokens; it cannot be distilled into",
            field="model.path",
        )
    loss = DistillLoss(model, teacher.load(), teacher.cfg.distill, teacher.vocab)
    loss.notes = [*teacher.notes, _memory_note(teacher)]
    return loss


def _memory_note(teacher: Teacher) -> str:
    c = teacher.cfg.distill
    return (
        f"distillation from {c.teacher} ({c.teacher_quant if c.teacher_quant != 'none' else 'unquantized'}): "
        f"{c.loss}, alpha {c.alpha}, temperature {c.temperature}; logits {c.chunk_tokens} answer "
        f"tokens at a time over a shared vocabulary of {teacher.vocab:,}"
    )


# ----------------------------------------------------------------------------- sequence-level KD


def prompt_only(value) -> list[dict] | None:
    """The prompt turns of a row that has no answer, else None: {"messages": [...]} (or
    "conversations") ending with a user turn, {"prompt": "..."} alone, or an Alpaca row
    with an instruction and no output."""
    if not isinstance(value, dict):
        return None
    for key in ("messages", "conversations"):
        turns = value.get(key)
        if isinstance(turns, list) and turns and all(isinstance(t, dict) for t in turns):
            msgs = [
                {"role": t.get("role", t.get("from")), "content": t.get("content", t.get("value"))}
                for t in turns
            ]
            msgs = [{**m, "role": {"human": "user"}.get(m["role"], m["role"])} for m in msgs]
            ok = all(isinstance(m["content"], str) for m in msgs)
            return msgs if ok and msgs[-1]["role"] == "user" else None
    answers = ("output", "response", "completion", "chosen", "answer")
    if any(value.get(k) for k in answers):
        return None
    for key in ("prompt", "instruction", "question"):
        text = value.get(key)
        if isinstance(text, str) and text.strip():
            extra = value.get("input")
            if isinstance(extra, str) and extra.strip():
                text = f"{text}\n\n{extra}"
            return [{"role": "user", "content": text}]
    return None


def _answer(teacher, tokenizer, template, messages, max_new_tokens: int) -> str:
    from studio.core.generation import GenerationSettings, generate

    ids = tokenizer(template.prompt(messages), add_special_tokens=False)["input_ids"]
    special = set(getattr(tokenizer, "all_special_tokens", []))
    stop_ids = {tokenizer.eos_token_id}
    stop_ids |= {tokenizer.convert_tokens_to_ids(s) for s in template.stop_strings if s in special}
    # Greedy: the teacher's most likely answer, the same on every rank and every resume.
    settings = GenerationSettings(temperature=0.0, max_new_tokens=max_new_tokens)
    gen = generate(teacher, tokenizer, ids, settings, stop_ids=stop_ids,
                   stop_strings=[s for s in template.stop_strings if s not in special])  # fmt: skip
    return "".join(gen).strip()


def generate_answers(cfg: RunConfig, teacher, tokenizer) -> tuple[Path, str]:
    """RUN/distill_data.jsonl: every usable record of data.path as messages, with the
    teacher's answers to the prompt-only rows. Written once (atomically), reused on resume.
    Returns (the file, a line for the run's log)."""
    from studio.core.data.formats import load_dataset
    from studio.core.data.readers import open_source
    from studio.core.data.templates import resolve_template
    from studio.core.errors import DataError

    out = Path(cfg.output) / GENERATED_FILE
    if out.is_file():
        return out, f"distillation: reusing the teacher's answers in {out.name}"
    prompts = [(line, m) for line, value, _ in open_source(cfg.data.path).rows
               if (m := prompt_only(value)) is not None]  # fmt: skip
    try:
        records = load_dataset(cfg.data.path, cfg.data.format, cfg.data.columns).records
    except DataError:
        if not prompts:
            raise
        records = []  # only prompts: the file has nothing the importer can use on its own
    rows = [(r.line, {"text": r.text} if r.is_text else {"messages": r.messages}) for r in records]
    template = resolve_template(tokenizer, cfg.data.template)
    empty = 0
    for line, msgs in prompts:
        answer = _answer(teacher, tokenizer, template, msgs, cfg.distill.max_new_tokens)
        if answer:
            rows.append((line, {"messages": msgs + [{"role": "assistant", "content": answer}]}))
        else:
            empty += 1
    rows.sort(key=lambda r: r[0])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for _, row in rows)
    os.replace(tmp, out)  # a kill while generating leaves no half file to reuse
    note = f"; {empty} answered with nothing and left out" if empty else ""
    return out, (
        f"distillation: the teacher answered {len(prompts) - empty} prompt-only record(s) "
        f"of {Path(cfg.data.path).name}{note}; written to {out.name}"
    )


def with_data(cfg: RunConfig, path: Path) -> RunConfig:
    """cfg training on `path` (the generated file), everything else the same."""
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=str(path)))

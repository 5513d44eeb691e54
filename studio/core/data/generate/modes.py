"""The four modes: what each planned item asks of the model and the row it becomes.

- answer: each prompt's answer -> a messages record.
- paraphrase: `n` rewordings of each instruction -> messages records, keeping the file's
  answer (or answering the rewording anew with `regenerate`, or when the file had none).
- self-instruct: `count` new instructions from few-shot prompts of the seed records, each kept
  only when its ROUGE-L against every instruction kept so far is below 0.7, then answered.
- pairs: two sampled answers per prompt. With a judge that prefers one: a pair
  {"prompt", "chosen", "rejected"} (Studio's pairs format). Otherwise (no judge, or a tie)
  a candidate {"prompt", "answers": [a, b]} for a person to pick, which also carries
  "messages" (the prompt answered with the first answer) so it reads as a plain conversation.

Every row carries "meta": its key, mode, source line and variant, the model or endpoint, the
sampling settings, and the prompt used when the mode wrote one.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from studio.core.data.generate.backends import Request, mix_seed
from studio.core.data.generate.inputs import Item
from studio.core.data.generate.options import GenerateOptions
from studio.core.data.generate.writer import item_key
from studio.core.evaluate.metrics import rouge_l

RETRIES = 2
"""Extra tries (new seeds) for an empty answer before its item is skipped."""
ROUGE_MAX = 0.7
"""A new instruction this close to a kept one (ROUGE-L) repeats it (self-instruct's rule)."""
FEW_SHOT_HUMAN, FEW_SHOT_MADE = 3, 2
"""Examples in a self-instruct prompt: from the seed file, and from the instructions made."""
STALL_ROUNDS = 10
"""Self-instruct rounds in a row with nothing kept before it gives up."""

PARAPHRASE = (
    "Reword the instruction below so that it asks for exactly the same thing in different "
    "words. Reply with the reworded instruction only.\n\nInstruction:\n{instruction}"
)
SELF_INSTRUCT = (
    "Here are some tasks a user gave an assistant:\n\n{examples}\n\nWrite one new task of the "
    "same kind, different from all of these. Reply with the task only."
)


@dataclass
class Task:
    """One planned item: one output row once done."""

    key: str
    item: Item | None
    variant: int = 0
    examples: list[int] = field(default_factory=list)
    """self-instruct: the seed lines shown in its prompt."""


class Generator:
    """Runs the tasks of one mode through a backend and builds their rows."""

    def __init__(self, opts: GenerateOptions, items: list[Item], backend, log=None):
        self.opts, self.items, self.backend = opts, items, backend
        self.log = log or (lambda message: None)

    def plan(self) -> list[Task]:
        """Every item of answer, paraphrase and pairs, in output order."""
        mode, n = self.opts.mode, self.opts.n if self.opts.mode == "paraphrase" else 1
        return [Task(item_key(mode, it.line, k), it, k) for it in self.items for k in range(n)]

    def meta(self, task: Task, **extra) -> dict:
        item = task.item
        out = {
            "key": task.key,
            "mode": self.opts.mode,
            "source": {"file": self.opts.input, "line": item.line if item else None},
            "variant": task.variant,
            "generator": self.opts.source(),
            "settings": self.opts.settings(),
        }
        out.update(extra)
        return out

    # ------------------------------------------------------------------ asking the model

    def ask(self, tasks: list[Task], conversations: list[list[dict]], salt="") -> list[str]:
        """One text per conversation; an empty one is asked again with a new seed (twice).

        `salt` (one string, or one per task) sets the seeds apart: a task asked twice (pairs,
        a rewording then its answer) must not sample the same way twice."""
        salts = [salt] * len(tasks) if isinstance(salt, str) else salt
        texts = [""] * len(tasks)
        todo = list(range(len(tasks)))
        for attempt in range(RETRIES + 1):
            requests = [
                Request(
                    conversations[j],
                    mix_seed(self.opts.seed, f"{tasks[j].key}{salts[j]}:{attempt}"),
                    tasks[j].item.line if tasks[j].item else 0,
                )
                for j in todo
            ]
            for j, text in zip(todo, self.backend.generate(requests), strict=True):
                texts[j] = text
            todo = [j for j in todo if not texts[j]]
            if not todo:
                break
        return texts

    # ------------------------------------------------------------------ the modes

    def run(self, tasks: list[Task]) -> list[tuple[Task, dict | None]]:
        """The rows of one batch of tasks, in order (None: skipped, with a log line)."""
        return self._logged(getattr(self, "_" + self.opts.mode)(tasks))

    def _answer(self, tasks):
        answers = self.ask(tasks, [t.item.messages for t in tasks])
        return [
            (t, _conversation(t.item.messages, a, self.meta(t)))
            for t, a in zip(tasks, answers, strict=True)
        ]

    def _paraphrase(self, tasks):
        prompts = [PARAPHRASE.format(instruction=t.item.instruction) for t in tasks]
        rewordings = [_clean(r) for r in self.ask(tasks, [[_user(p)] for p in prompts], ":reword")]
        convs = [t.item.messages[:-1] + [_user(r)] for t, r in zip(tasks, rewordings, strict=True)]
        fresh = [j for j, t in enumerate(tasks) if rewordings[j] and self._regenerates(t.item)]
        answers = [t.item.answer for t in tasks]
        if fresh:
            got = self.ask([tasks[j] for j in fresh], [convs[j] for j in fresh])
            for j, a in zip(fresh, got, strict=True):
                answers[j] = a
        rows = []
        for j, t in enumerate(tasks):
            meta = self.meta(
                t,
                prompt=prompts[j],
                original=t.item.instruction,
                answer="generated" if j in fresh else "kept",
            )
            ok = rewordings[j] and answers[j]
            rows.append((t, _conversation(convs[j], answers[j], meta) if ok else None))
        return rows

    def _regenerates(self, item: Item) -> bool:
        return self.opts.regenerate or not item.answer.strip()

    def _pairs(self, tasks):
        # Both answers of every prompt in one batch: twice the rows per forward pass.
        convs = [t.item.messages for t in tasks]
        both = self.ask(tasks + tasks, convs + convs, [":a"] * len(tasks) + [":b"] * len(tasks))
        first, second = both[: len(tasks)], both[len(tasks) :]
        rows = []
        for t, a, b in zip(tasks, first, second, strict=True):
            if not a or not b:
                rows.append((t, None))
                continue
            rows.append((t, self._pair_row(t, a, b)))
        return rows

    def _pair_row(self, task: Task, a: str, b: str) -> dict:
        prompt = _prompt_field(task.item.messages)
        scores = self.judge_scores(task.item, a, b)
        if scores is not None and None not in scores and scores[0] != scores[1]:
            chosen, rejected = (a, b) if scores[0] > scores[1] else (b, a)
            meta = self.meta(task, judge={"model": self.opts.judge_model, "scores": scores})
            return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "meta": meta}
        meta = self.meta(task, picked=None)
        if scores is not None:
            meta["judge"] = {"model": self.opts.judge_model, "scores": scores}
        messages = task.item.messages + [{"role": "assistant", "content": a}]
        return {"prompt": prompt, "answers": [a, b], "messages": messages, "meta": meta}

    judge = None
    """A studio.core.evaluate.judge.Judge when the run has one (set by the pipeline)."""

    def judge_scores(self, item: Item, a: str, b: str) -> list | None:
        if self.judge is None:
            return None
        question = "\n\n".join(m["content"] for m in item.messages if m["role"] != "system")
        return [self.judge.score(question, "", x).score for x in (a, b)]

    # ------------------------------------------------------------------ self-instruct

    def self_instruct(self, done_rows: list[dict]) -> Iterator[list[tuple[Task, dict | None]]]:
        """Batches of new instructions and their rows, until `count` are kept.

        A round asks for one instruction per free slot; those too close to a kept one are
        dropped and the keys of the kept ones stay consecutive (one row per kept instruction),
        so a restart continues at the number of rows already written.
        """
        made = [r["messages"][-2]["content"] for r in done_rows]
        kept = [it.instruction for it in self.items] + made
        stalled = round_no = 0
        while len(made) < self.opts.count and stalled < STALL_ROUNDS:
            k = len(made)
            slots = [Task(item_key("self-instruct", 0, k + j), None, k + j) for j in range(
                min(self.opts.batch_size, self.opts.count - k))]  # fmt: skip
            shots = [self._few_shot(t, made, round_no) for t in slots]
            raw = self.ask(slots, [[_user(p)] for p, _ in shots], f":instruct{round_no}")
            round_no += 1
            accepted = []  # (prompt, example lines, instruction)
            for (prompt, lines), text in zip(shots, raw, strict=True):
                instruction = _clean(text)
                if instruction and all(rouge_l(instruction, old) < ROUGE_MAX for old in kept):
                    kept.append(instruction)
                    accepted.append((prompt, lines, instruction))
            stalled = 0 if accepted else stalled + 1
            if not accepted:
                continue
            tasks = slots[: len(accepted)]
            convs = [[_user(instruction)] for _, _, instruction in accepted]
            answers = self.ask(tasks, convs)
            rows = []
            for t, (prompt, lines, instruction), conv, a in zip(
                tasks, accepted, convs, answers, strict=True
            ):
                made.append(instruction)
                rows.append(
                    (t, _conversation(conv, a, self.meta(t, prompt=prompt, examples=lines)))
                )
            yield self._logged(rows)
        if len(made) < self.opts.count:
            self.log(
                f"stopped at {len(made)} of {self.opts.count} new instructions: in {STALL_ROUNDS} "
                f"rounds every one the model wrote was too close (ROUGE-L >= {ROUGE_MAX}) to one "
                "kept, or empty"
            )

    def _logged(self, rows):
        for task, row in rows:
            if row is None:
                self.log(f"{task.key}: the model gave an empty answer {RETRIES + 1} times; skipped")
        return rows

    def _few_shot(self, task: Task, made: list[str], round_no: int) -> tuple[str, list[int]]:
        """A few-shot prompt of seed instructions (and ones made), and the seed lines shown."""
        rng = random.Random(mix_seed(self.opts.seed, f"{task.key}:examples:{round_no}"))
        human = rng.sample(self.items, min(FEW_SHOT_HUMAN, len(self.items)))
        machine = rng.sample(made, min(FEW_SHOT_MADE, len(made)))
        examples = [it.instruction for it in human] + machine
        rng.shuffle(examples)
        text = "\n".join(f"{i}. {' '.join(e.split())}" for i, e in enumerate(examples, 1))
        return SELF_INSTRUCT.format(examples=text), [it.line for it in human]


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


def _conversation(prompt: list[dict], answer: str, meta: dict) -> dict | None:
    if not answer:
        return None
    return {"messages": prompt + [{"role": "assistant", "content": answer}], "meta": meta}


def _prompt_field(messages: list[dict]):
    """A lone user turn as a string (TRL's standard shape), else the list of turns."""
    if len(messages) == 1:
        return messages[0]["content"]
    return messages


_LEAD = re.compile(r"^\s*(?:\d+[.)]\s*|[-*]\s+|(?:new\s+)?(?:task|instruction)\s*:\s*)", re.I)


def _clean(text: str) -> str:
    """The instruction a model wrote, without a list number, a 'Task:' label or quotes."""
    text = _LEAD.sub("", text.strip(), count=1).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text

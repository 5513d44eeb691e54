"""Build the bundled demo: `resources/demo/data.jsonl` and `resources/demo/model/`.

Everything here is generated from scratch by this script, so it is license-clean:

* The data: ~400 short instruction/answer conversations (capitals, arithmetic, opposites,
  colours, a few multi-turn chats) in OpenAI messages format.
* The model: a ~2M-parameter Llama-style model with a byte-level BPE tokenizer trained on
  the spot and a ChatML template. It is briefly pre-trained (full weights, plain text) on
  sentences stating the same facts, so it "knows" them but has never seen the chat format;
  LoRA fine-tuning on the demo data then teaches it to answer questions in turns.

Run: `python packaging/make_demo.py` (about a minute on 2 CPU cores). Deterministic.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "resources" / "demo"

CAPITALS = {
    "France": "Paris",
    "Germany": "Berlin",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Portugal": "Lisbon",
    "Japan": "Tokyo",
    "China": "Beijing",
    "India": "New Delhi",
    "Canada": "Ottawa",
    "Brazil": "Brasilia",
    "Egypt": "Cairo",
    "Kenya": "Nairobi",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Finland": "Helsinki",
    "Poland": "Warsaw",
    "Greece": "Athens",
    "Peru": "Lima",
    "Chile": "Santiago",
    "Mexico": "Mexico City",
    "Austria": "Vienna",
    "Ireland": "Dublin",
    "Denmark": "Copenhagen",
    "Hungary": "Budapest",
    "Argentina": "Buenos Aires",
    "Australia": "Canberra",
    "Thailand": "Bangkok",
    "Vietnam": "Hanoi",
    "Turkey": "Ankara",
    "Morocco": "Rabat",
    "Cuba": "Havana",
    "Belgium": "Brussels",
}
OPPOSITES = {
    "hot": "cold",
    "big": "small",
    "fast": "slow",
    "happy": "sad",
    "light": "dark",
    "up": "down",
    "early": "late",
    "open": "closed",
    "full": "empty",
    "old": "new",
    "strong": "weak",
    "high": "low",
    "near": "far",
    "soft": "hard",
    "wet": "dry",
    "loud": "quiet",
    "rich": "poor",
    "thick": "thin",
}
COLOURS = {
    "the sky": "blue",
    "grass": "green",
    "snow": "white",
    "coal": "black",
    "a banana": "yellow",
    "a tomato": "red",
    "an orange": "orange",
    "a plum": "purple",
    "chocolate": "brown",
    "a lemon": "yellow",
    "the sea": "blue",
    "a leaf": "green",
    "milk": "white",
    "a cherry": "red",
}
SYSTEMS = [
    "You are a helpful assistant.",
    "Answer briefly and politely.",
    "You are Studio's demo model.",
]


def facts() -> list[tuple[str, str]]:
    """(question, answer) pairs."""
    rng = random.Random(1)
    qa = []
    for country, city in CAPITALS.items():
        qa.append((f"What is the capital of {country}?", f"The capital of {country} is {city}."))
    for word, opp in OPPOSITES.items():
        qa.append((f"What is the opposite of {word}?", f"The opposite of {word} is {opp}."))
    for thing, colour in COLOURS.items():
        qa.append((f"What colour is {thing}?", f"{thing[0].upper() + thing[1:]} is {colour}."))
    for _ in range(160):
        a, b = rng.randint(1, 50), rng.randint(1, 50)
        qa.append((f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."))
    return qa


def conversations() -> list[dict]:
    rng = random.Random(2)
    records = []
    qa = facts()
    for q, a in qa:
        msgs = []
        if rng.random() < 0.3:
            msgs.append({"role": "system", "content": rng.choice(SYSTEMS)})
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        records.append({"messages": msgs})
    for _ in range(60):  # multi-turn: a greeting, then one or two questions
        msgs = [
            {"role": "user", "content": rng.choice(["Hello!", "Hi there.", "Good morning!"])},
            {"role": "assistant", "content": "Hello! Ask me a question."},
        ]
        for q, a in rng.sample(qa, rng.randint(1, 2)):
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        records.append({"messages": msgs})
    rng.shuffle(records)
    return records


def pretrain_corpus() -> list[str]:
    """Plain sentences stating the facts (no questions, no chat format)."""
    sents = [a for _, a in facts()]
    return sents + [f"{c} is a country. Its capital city is {v}." for c, v in CAPITALS.items()]


def pretrain(model, tokenizer, texts: list[str], steps: int = 400, seq: int = 128) -> None:
    import torch

    rng = random.Random(3)
    ids = []
    for _ in range(40):
        rng.shuffle(texts)
        for t in texts:
            ids += tokenizer(t + " ", add_special_tokens=False)["input_ids"]
    data = torch.tensor(ids)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(0)
    model.train()
    for step in range(steps):
        starts = torch.randint(0, len(data) - seq - 1, (16,), generator=g)
        batch = torch.stack([data[s : s + seq] for s in starts])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        if step % 100 == 0 or step == steps - 1:
            print(f"pretrain step {step}: loss {loss.item():.3f}", file=sys.stderr)


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM

    sys.path.insert(0, str(ROOT))
    from studio.core.tiny import build_model

    OUT.mkdir(parents=True, exist_ok=True)
    records = conversations()
    with open(OUT / "data.jsonl", "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    texts = pretrain_corpus() + [m["content"] for r in records for m in r["messages"]]
    model_dir = OUT / "model"
    build_model(
        model_dir,
        texts,
        vocab_size=1024,
        hidden_size=192,
        layers=4,
        heads=4,
        kv_heads=2,
        intermediate_size=512,
        max_position_embeddings=1024,
        seed=0,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    pretrain(model, tokenizer, pretrain_corpus())
    model.save_pretrained(model_dir)
    (OUT / "README.md").write_text(
        "# Studio demo\n\n`data.jsonl`: generated instruction conversations (OpenAI messages format).\n"
        "`model/`: a ~2M-parameter Llama-style model with random initial weights, pre-trained for a "
        "few hundred steps on plain sentences stating the same facts. Not a real language model: "
        "it exists so that a fine-tune runs offline in about a minute on a CPU.\n"
        "Both are produced by `packaging/make_demo.py` (no third-party data or weights).\n",
        encoding="utf-8",
    )
    n = sum(p.numel() for p in model.parameters())
    print(
        f"wrote {len(records)} records and a {n / 1e6:.1f}M-parameter model to {OUT}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()

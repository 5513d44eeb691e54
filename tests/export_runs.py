"""Run folders for the export tests: a tiny base model, a LoRA adapter with non-zero weights
(random B, so merging visibly changes the model) and a run.yaml, as training leaves them."""

from __future__ import annotations

import json
from pathlib import Path

CONVERSATIONS = [
    [
        {"role": "user", "content": f"What is {a} plus {b}?"},
        {"role": "assistant", "content": f"{a} plus {b} is {a + b}."},
    ]
    for a in range(1, 6)
    for b in range(1, 4)
]


def make_run(
    root: Path,
    model_dir: Path,
    *,
    name: str = "run",
    template: str = "chatml",
    quant: str = "none",
    targets=("q_proj", "k_proj", "v_proj", "o_proj"),
    system: str = "",
    seed: int = 0,
    dora: bool = False,
) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from studio.core.config import DataConfig, ModelConfig, RunConfig

    run = Path(root) / name
    run.mkdir(parents=True)
    data = run / "data.jsonl"
    with open(data, "w", encoding="utf-8") as fh:
        for conv in CONVERSATIONS:
            messages = ([{"role": "system", "content": system}] if system else []) + conv
            fh.write(json.dumps({"messages": messages}) + "\n")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft_model = get_peft_model(
        model,
        LoraConfig(
            r=4, lora_alpha=8, target_modules=list(targets), lora_dropout=0.0, use_dora=dora
        ),
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    peft_model.save_pretrained(run / "adapter")
    cfg = RunConfig(
        model=ModelConfig(path=str(model_dir), quant=quant),
        data=DataConfig(path=str(data), template=template),
        output=str(run),
    )
    cfg.save(run / "run.yaml")
    return run

"""Packing: rows respect the budget, and packed losses equal one-at-a-time losses."""

import pytest
import torch

from studio.core.data.examples import IGNORE, Example
from studio.core.data.packing import collate, pack_rows


def test_pack_rows_respects_budget_and_uses_every_example_once():
    lengths = [5, 90, 33, 64, 1, 100, 47, 12, 70, 30]
    rows = pack_rows(lengths, 100)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= 100 for r in rows)
    assert len(rows) <= 6  # 452 tokens need at least 5 rows of 100


def test_pack_rows_is_seeded_nearly_full_and_mixes_lengths():
    import random

    rng = random.Random(0)
    lengths = [int(20 + 490 * rng.random() ** 1.5) for _ in range(400)]
    rows = pack_rows(lengths, 512, seed=1)
    assert rows == pack_rows(lengths, 512, seed=1)
    assert rows != pack_rows(lengths, 512, seed=2)
    lower_bound = -(-sum(lengths) // 512)
    assert len(rows) <= 1.05 * lower_bound


def test_rows_mix_short_and_long_examples():
    import random
    import statistics

    rng = random.Random(0)
    lengths = [rng.choice([22, 27, 30, 35, 50, 73, 77]) for _ in range(300)]
    rows = pack_rows(lengths, 256, seed=1)
    means = [statistics.mean(lengths[i] for i in row) for row in rows]
    # Packing sorted by length gives rows of only long or only short examples (the spread of
    # row means is then that of the lengths, ~20); mixed rows average out.
    assert statistics.pstdev(means) < 0.6 * statistics.pstdev(lengths)


def test_collate_restarts_positions_and_masks_boundaries():
    exs = [Example([1, 2, 3], [1, 2, 3]), Example([4, 5], [IGNORE, 5])]
    b = collate(exs, [[0, 1], [1]], pad_id=0)
    assert b["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]]
    assert b["input_ids"].tolist() == [[1, 2, 3, 4, 5], [4, 5, 0, 0, 0]]
    # The first token of each example carries no label, so no example learns from its neighbour.
    assert b["labels"].tolist() == [[IGNORE, 2, 3, IGNORE, 5], [IGNORE, 5, IGNORE, IGNORE, IGNORE]]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_per_example_losses_equal_unpacked(tiny_model, attn):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation=attn).eval()
    g = torch.Generator().manual_seed(0)
    exs = []
    for n in (7, 19, 4, 30, 11):
        ids = torch.randint(5, 400, (n,), generator=g).tolist()
        exs.append(Example(ids, [IGNORE] * (n // 3) + ids[n // 3 :]))

    def per_token_losses(batch):
        with torch.no_grad():
            logits = model(
                input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
            ).logits
        tgt = batch["labels"][:, 1:]
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1), tgt.flatten(), reduction="none", ignore_index=IGNORE
        ).view(tgt.shape)
        return loss, tgt != IGNORE

    alone = []
    for i in range(len(exs)):
        loss, mask = per_token_losses(collate(exs, [[i]], pad_id=0))
        alone.append(loss[mask])
    rows = [[0, 1, 2], [3, 4]]
    loss, mask = per_token_losses(collate(exs, rows, pad_id=0))
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            n = len(exs[i])
            packed = loss[r, at : at + n - 1][mask[r, at : at + n - 1]]
            assert torch.allclose(packed, alone[i], atol=1e-5), (attn, i)
            at += n

"""Split records into train and validation: by a seeded fraction, or by a second file."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import NamedTuple

from studio.core.config import DataConfig
from studio.core.data.formats import load_dataset
from studio.core.data.records import Dataset, Record
from studio.core.errors import DataError


def split_records(
    records: Sequence[Record], val_fraction: float, seed: int
) -> tuple[list[Record], list[Record]]:
    """Hold out `val_fraction` of `records` (chosen with `seed`); both parts keep file order.

    The same records, fraction and seed always give the same split. A non-zero fraction holds
    out at least one record, and at least one record is always left for training.
    """
    if not 0 <= val_fraction < 1:
        raise DataError(f"the validation fraction must be in [0, 1); got {val_fraction!r}.")
    n = len(records)
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    else:
        n_val = 0
    if n_val == 0:
        return list(records), []
    # Shuffle indices rather than records so both parts can stay in file order (the trainer
    # shuffles each epoch itself; file order keeps the validation report easy to read).
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held = set(order[:n_val])
    train = [r for i, r in enumerate(records) if i not in held]
    val = [r for i, r in enumerate(records) if i in held]
    return train, val


class Split(NamedTuple):
    train: Dataset
    """The training records; its problems are those of the training file."""
    val: list[Record]
    val_file: Dataset | None
    """The validation file as imported (with its own problems), when there is one."""


def load_split(cfg: DataConfig, seed: int) -> Split:
    """Load the training file and its validation records.

    With `cfg.eval_path` the validation records come from that file (`val_split` is ignored);
    otherwise `cfg.val_split` of the training records are held out.
    """
    if not cfg.path:
        raise DataError("no training data file is set (data.path); choose a file to train on.")
    train = load_dataset(cfg.path, cfg.format, cfg.columns)
    if cfg.eval_path:
        try:
            val = load_dataset(cfg.eval_path, cfg.format, cfg.columns)
        except DataError as e:
            raise DataError(f"data.eval_path: {e.message}", field="data.eval_path") from None
        if (train.format == "text") != (val.format == "text"):
            raise DataError(
                f"data.eval_path: the validation file {val.path} is in the {val.format} format "
                f"but the training file is {train.format}; both must be conversations or both "
                "plain text.",
                field="data.eval_path",
            )
        return Split(train, val.records, val)
    if cfg.val_split > 0:
        kept, held = split_records(train.records, cfg.val_split, seed)
        return Split(dataclasses.replace(train, records=kept), held, None)
    return Split(train, [], None)


def load_run_split(cfg: DataConfig, seed: int) -> Split:
    """load_split for a run: a problem with the file that names no field is data.path's."""
    try:
        return load_split(cfg, seed)
    except DataError as e:
        if e.field:
            raise
        raise DataError(f"data.path: {e.message}", field="data.path") from None

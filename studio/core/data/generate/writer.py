"""The output file: rows appended as they are made, read back to continue after a stop.

Each row is one JSON line written with a single write, then flushed and fsync'd, so a kill
(or a power cut) loses at most the row being written: its torn line is cut off when the
file is opened again. Every row carries `meta.key`, the stable key of the planned item it
answers (mode:source line:variant); a restart skips the keys already in the file, so the
output ends with one row per planned item whatever happened in between.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from studio.core.errors import DataError


def item_key(mode: str, line: int, variant: int) -> str:
    return f"{mode}:{line}:{variant}"


class RowWriter:
    def __init__(self, path: str | os.PathLike, mode: str, overwrite: bool = False):
        self.path = Path(path)
        self.rows: list[dict] = []
        """The rows already in the file (read back on a restart)."""
        if self.path.is_dir():
            raise DataError(f"output: {self.path} is a folder; give a .jsonl file to write")
        # Nothing is created or replaced until the first row is made: a model that will not
        # load or an endpoint that cannot be reached leaves the output as it was.
        self.fresh = overwrite or not self.path.exists()
        if not self.fresh:
            self._read_back(mode)
        self.done = {row["meta"]["key"] for row in self.rows}
        self._fh = None

    def _read_back(self, mode: str) -> None:
        data = self.path.read_bytes()
        good = 0  # bytes of whole, readable lines
        lines = data.split(b"\n")
        for i, raw in enumerate(lines):
            last = i == len(lines) - 1
            if not raw.strip():
                good += len(raw) + (0 if last else 1)
                continue
            row = _parse(raw)
            if row is None and last:
                break  # torn by a kill mid-write: dropped below
            if row is None:
                raise DataError(
                    f"output: line {i + 1} of {self.path} is not a row written by studio data "
                    "generate; choose another output file, or --overwrite to start it afresh"
                )
            if row["meta"].get("mode") != mode:
                raise DataError(
                    f"output: {self.path} holds {row['meta'].get('mode')} rows; this run makes "
                    f"{mode} rows; choose another output file, or --overwrite to start it afresh"
                )
            self.rows.append(row)
            good += len(raw) + (0 if last else 1)
        if good < len(data) or (data and not data.endswith(b"\n")):
            # Cut the torn line (and end the last whole one) so the next row starts clean.
            with open(self.path, "r+b") as fh:
                fh.truncate(good)
                if good and not data[:good].endswith(b"\n"):
                    fh.seek(good)
                    fh.write(b"\n")
                fh.flush()
                os.fsync(fh.fileno())

    def append(self, record: dict) -> int:
        """Write one row durably; returns its 0-based index in the file."""
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "wb" if self.fresh else "ab")
        line = json.dumps(record, ensure_ascii=False) + "\n"
        self._fh.write(line.encode("utf-8"))
        self._fh.flush()
        os.fsync(self._fh.fileno())  # a row reported as written survives a kill or a crash
        self.rows.append(record)
        self.done.add(record["meta"]["key"])
        return len(self.rows) - 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def _parse(raw: bytes) -> dict | None:
    try:
        row = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(row, dict) or not isinstance(row.get("meta"), dict):
        return None
    return row if isinstance(row["meta"].get("key"), str) else None

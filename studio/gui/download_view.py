"""A hub model's download, read from a run's (or an evaluation's) Progress events.

The core reports it as Progress(stage="download ID: FILE", done/total in bytes); this shows
it on a progress bar and a label. Bytes overflow a QProgressBar's int past 2 GB, so the bar
counts per mille.
"""

from __future__ import annotations


def show_download(bar, label, event: dict) -> None:
    from studio.core.hub import bytes_text

    done, total = int(event.get("done") or 0), int(event.get("total") or 0)
    fraction = done / total if total > 0 else 0.0
    bar.setRange(0, 1000)
    bar.setValue(int(1000 * min(1.0, fraction)))
    bar.show()
    stage = str(event.get("stage") or "").removeprefix("download ")
    label.setText(f"Downloading {stage}, {bytes_text(done, total)}")

"""Metrics of a run, one JSON object per line (``OUT/metrics.jsonl``), written by rank 0."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


class MetricsLog:
    """Append records ``{"event": ..., "time": ..., **fields}``; a no-op when not ``enabled``.

    The file is opened per record so a killed run keeps every complete line and a
    resumed run appends to the same file.
    """

    def __init__(self, path: str | Path, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: str, **fields: Any) -> None:
        if not self.enabled:
            return
        record = {"event": event, "time": round(time.time(), 3), **fields}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def read_metrics(path: str | Path, event: str | None = None) -> list[dict[str, Any]]:
    """The records of a metrics file (of one ``event`` kind if given)."""
    lines = Path(path).read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return [r for r in records if event is None or r["event"] == event]

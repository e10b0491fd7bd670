"""Metrics of a run, one JSON object per line (``OUT/metrics.jsonl``), written by rank 0."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


class MetricsLog:
    """Append records ``{"event": ..., "time": ..., **fields}``; a no-op when not ``enabled``.

    The file is opened per record so a killed run keeps every complete line and a
    resumed run appends to the same file. With ``tensorboard_dir``, every numeric field
    of a record that has a ``step`` is also written as a TensorBoard scalar
    ``EVENT/FIELD`` at that step (this needs the ``tensorboard`` package).
    """

    def __init__(
        self, path: str | Path, enabled: bool = True, tensorboard_dir: str | Path | None = None
    ) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self.writer: Any = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ImportError(
                    "TensorBoard logging needs the tensorboard package: pip install tensorboard"
                ) from e
            self.writer = SummaryWriter(str(tensorboard_dir))

    def write(self, event: str, **fields: Any) -> None:
        if not self.enabled:
            return
        record = {"event": event, "time": round(time.time(), 3), **fields}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None and "step" in fields:
            for key, value in fields.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{event}/{key}", value, fields["step"])
            self.writer.flush()

    def truncate_after(self, step: int) -> None:
        """Drop the records of steps after ``step`` (and a line cut short by a kill).

        A resumed run calls it: the interrupted run logged steps past its last
        checkpoint, and the resumed one logs them again.
        """
        if not self.enabled or not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            done = record.get("step") if isinstance(record, dict) else None
            if not isinstance(done, (int, float)) or done <= step:
                kept.append(line)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(f"{line}\n" for line in kept))
        os.replace(tmp, self.path)


def read_metrics(path: str | Path, event: str | None = None) -> list[dict[str, Any]]:
    """The records of a metrics file (of one ``event`` kind if given)."""
    lines = Path(path).read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return [r for r in records if event is None or r["event"] == event]

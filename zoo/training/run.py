"""A run folder knows its run: ``OUT/run.json`` holds the run id and the options it was
started with, written when the run starts.

Every checkpoint's ``state.pt`` carries the same id (and options), and ``metrics.jsonl``
opens with a ``start`` record naming it, so the checkpoints, ``latest`` and the metrics of
a folder belong to one run. A new run into a folder that already holds one is refused
(:class:`RunFolderInUseError`): it would append restarting steps to the old metrics and
leave the old checkpoints beside the new ones, where a later resume would pick them. A
resume checks that the checkpoint belongs to the folder's run.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from zoo.training.lock import RunLock

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS = "checkpoints"


class RunFolderInUseError(RuntimeError):
    """The output folder holds another training run."""


def new_run_id() -> str:
    """A fresh run id: 12 hex digits, random (two runs never share one)."""
    return uuid.uuid4().hex[:12]


def read_run(out: str | Path) -> dict[str, Any] | None:
    """The content of ``OUT/run.json`` (``{"run_id", "started", "options"}``), or None
    when the folder has none (or an unreadable one)."""
    path = Path(out) / RUN_FILE
    try:
        run = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return run if isinstance(run, dict) else None


def write_run(out: str | Path, run_id: str, options: dict[str, Any]) -> None:
    """Record ``run_id`` and ``options`` as the run of the folder ``out`` (atomically)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "run_id": run_id,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime()),
        "options": options,
    }
    tmp = out / f".{RUN_FILE}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, out / RUN_FILE)


def run_traces(out: str | Path) -> list[str]:
    """What in ``out`` belongs to a training run (its record, metrics, checkpoints)."""
    out = Path(out)
    found = []
    if (out / RUN_FILE).is_file():
        found.append(RUN_FILE)
    metrics = out / METRICS_FILE
    if metrics.is_file() and metrics.stat().st_size > 0:
        found.append(METRICS_FILE)
    checkpoints = out / CHECKPOINTS
    if checkpoints.is_dir() and any(checkpoints.iterdir()):
        found.append(f"{CHECKPOINTS}/")
    return found


def check_unused(out: str | Path) -> None:
    """Refuse to start a new run in ``out`` when it holds one.

    Raises:
        RunFolderInUseError: naming the folder, its run and the three ways on.
    """
    out = Path(out)
    traces = run_traces(out)
    if not traces:
        return
    run = read_run(out)
    which = f"run {run['run_id']}" if run and "run_id" in run else "a training run"
    raise RunFolderInUseError(
        f"{out} already holds {which} ({', '.join(traces)}): continue it with --resume {out}, "
        f"start the new run in another --out folder, or pass --overwrite to move the old "
        f"run aside to {out}.replaced-<time>"
    )


def move_aside(out: str | Path) -> Path | None:
    """Rename the run folder ``out`` to ``OUT.replaced-YYYYmmdd-HHMMSS`` (``--overwrite``).

    Returns the new name, or None when ``out`` holds no run. The folder's lock is taken
    first, so a run still training there is never moved.

    Raises:
        RunLockedError: a live run holds ``out``.
    """
    out = Path(out)
    if not run_traces(out):
        return None
    with RunLock(out):
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime())
        aside = out.with_name(f"{out.name}.replaced-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = out.with_name(f"{out.name}.replaced-{stamp}-{n}")
        os.replace(out, aside)
    return aside


def check_belongs(out: str | Path, checkpoint: Path, checkpoint_run: str | None) -> None:
    """Refuse to resume the checkpoint of run ``checkpoint_run`` into ``out`` when ``out``
    holds another run (checkpoints written before run ids existed carry none: accepted).

    Raises:
        RunFolderInUseError: the two ids differ.
    """
    run = read_run(out)
    if checkpoint_run is None or run is None or run.get("run_id") in (None, checkpoint_run):
        return
    raise RunFolderInUseError(
        f"checkpoint {checkpoint} belongs to run {checkpoint_run}, but {out} holds run "
        f"{run['run_id']} ({Path(out) / RUN_FILE}): resume into that run's own folder or a new "
        "--out folder"
    )

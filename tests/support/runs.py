"""Training runs in subprocesses, killed at a chosen moment (the fault-injection tests)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def kill_when(cmd: list[str], ready: Callable[[], bool], env: dict[str, str] | None = None) -> None:
    """Start ``cmd`` in the repository root and SIGKILL it as soon as ``ready()`` holds."""
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 300
        while not ready():
            assert proc.poll() is None, "the run ended before the fault"
            assert time.monotonic() < deadline, "the fault point never came"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()


def train_steps(out: Path) -> int:
    """How many training steps the run in ``out`` has logged."""
    path = out / "metrics.jsonl"
    return path.read_text().count('"event": "train"') if path.is_file() else 0

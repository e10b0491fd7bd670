"""How the GPU day runs a step: its own process session, a whole-tree kill, atomic results.

Kept apart from ``gpu_day.py`` (what the steps are) so that the process rules are tested alone:
a step that outlives its limit must not leave grandchildren eating the rest of the device time,
a call killed mid-write must leave a readable ``summary.json``, and no step after ``build`` may
compile (each compile there costs minutes the budget does not have).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

# Seconds the step's process group gets after SIGINT, then after SIGTERM, before SIGKILL.
KILL_GRACE_S = 3.0
# The build tools a later step must not start: torch's JIT builder runs ninja, ninja runs nvcc.
COMPILERS = ("ninja", "nvcc")


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write ``payload`` as JSON to ``path`` through a temporary file and a rename.

    A process killed at any moment leaves either the previous complete file or the new one,
    never a truncated one (``rename`` within a folder is atomic on POSIX).
    """
    text = json.dumps(payload, indent=2) + "\n"
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop the step's whole process group: SIGINT, then SIGTERM, then SIGKILL.

    SIGINT first: pytest then writes its JUnit XML of the tests that ran, and make stops
    its children. Whatever is left after the grace times is killed.
    """
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=KILL_GRACE_S)
            break
        except subprocess.TimeoutExpired:
            continue
    # The leader may be gone while a child ignores both signals: kill the group in any case.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_command(
    name: str, command: list[str], limit_s: float, env: dict[str, str], cwd: Path, log: TextIO
) -> dict[str, Any]:
    """Run ``command`` in a new process session with ``limit_s`` seconds; log its output.

    On timeout the whole process group (``make`` and every compiler, test or benchmark it
    started) is terminated, not only the direct child. Returns status, seconds and command.
    """
    log.write(f"\n===== {name}: {' '.join(command)} (limit {limit_s:.0f} s)\n")
    log.flush()
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    except OSError as exc:
        status = f"could not start: {exc}"
    else:
        try:
            code = proc.wait(timeout=limit_s)
            status = "passed" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            status = f"timed out after {limit_s:.0f} s"
        finally:
            # Children that outlived a leader which exited by itself (a daemonised helper).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
    elapsed = time.monotonic() - start
    log.write(f"===== {name}: {status} in {elapsed:.1f} s\n")
    log.flush()
    print(f"{name:14s} {status} ({elapsed:.0f} s)", flush=True)
    return {"status": status, "seconds": round(elapsed, 1), "command": command}


_SHIM = """#!/bin/sh
# GPU day: record that a step ran {tool}, then run the real one (the next on PATH).
echo "${{GPU_DAY_STEP:-?}} {tool} $*" >> "{record}"
PATH="$(printf %s "$PATH" | sed "s#^{folder}:##")" exec {tool} "$@"
"""


def compiler_shims(folder: Path, record: Path) -> Path:
    """Write ``ninja``/``nvcc`` wrappers into ``folder`` that append each call to ``record``.

    Put ``folder`` first on ``PATH`` for the steps after ``build``: torch's JIT builder
    starts ``ninja`` from ``PATH`` (and ninja starts nvcc), so any late compile is recorded.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for tool in COMPILERS:
        shim = folder / tool
        shim.write_text(_SHIM.format(tool=tool, record=record, folder=folder))
        shim.chmod(shim.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return folder


def compiles_since(record: Path, offset: int) -> tuple[list[str], int]:
    """The compiler calls recorded after byte ``offset``, and the new offset."""
    if not record.is_file():
        return [], offset
    data = record.read_bytes()
    return [line for line in data[offset:].decode().splitlines() if line], len(data)

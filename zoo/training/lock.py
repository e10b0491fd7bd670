"""One training run per output folder: ``OUT/.lock``, held with ``flock`` for the run's life.

Two runs writing into one folder would prune each other's checkpoints and interleave
their metrics. The lock is the kernel's ``flock`` on ``OUT/.lock``, so it goes away
with its process however that process ends (a SIGKILL included): a lock file left by a
dead run never blocks. The file's content (pid, host, start time, command) is only
there to tell the refused run who holds the folder.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import IO, Any

LOCK_FILE = ".lock"


class RunLockedError(RuntimeError):
    """Another live process trains into the same output folder."""


class RunLock:
    """The lock of the output folder ``out`` (created if needed); see the module doc.

    Use as a context manager, or :meth:`acquire` and :meth:`release`.
    """

    def __init__(self, out: str | Path) -> None:
        self.path = Path(out) / LOCK_FILE
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self) -> RunLock:
        """Take the lock, or raise :class:`RunLockedError` naming the run that holds it."""
        if self._file is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Opened without truncating: the holder's description must survive a refused try.
        f = self.path.open("a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = describe_holder(f.read())
            f.close()
            raise RunLockedError(
                f"{self.path.parent} is in use by another training run ({holder}); "
                "wait for it to finish or choose another output folder"
            ) from None
        except BaseException:
            f.close()
            raise
        f.seek(0)
        f.truncate()
        f.write(json.dumps(_this_run()) + "\n")
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        """Let go of the lock (the file stays: removing it would race with a new run)."""
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _this_run() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime()),
        "command": " ".join(sys.argv),
    }


def describe_holder(text: str) -> str:
    """``pid 123 on host h, started 2026-01-02 03:04:05 UTC`` from a lock file's content."""
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on host {info['host']}, started {info['started']}"
    except (ValueError, KeyError, TypeError):
        return "its pid and start time are not recorded yet"

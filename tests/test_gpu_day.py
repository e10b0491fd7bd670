"""The GPU day's script stays runnable between the rare days a GPU is lent.

Every step names a script or Makefile target that exists; every step runs in the one day
environment; a compile after ``build`` is caught; any ``--steps`` subset runs from a fresh
machine (install and build put in front); the plan fits call 1 in 420 s; ``--collect`` copies
only results. (``make gpu-day-dry-run`` runs every step's CPU rehearsal: minutes, not here.)
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gpu_day
import gpu_day_plan

ROOT = Path(__file__).resolve().parent.parent


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+):", text, flags=re.M))


def test_every_step_names_an_existing_script_or_target(tmp_path: Path) -> None:
    targets = _make_targets()
    steps = gpu_day.steps(tmp_path, sys.executable)
    assert [s.name for s in steps] == list(gpu_day.STEP_NAMES)
    assert gpu_day.STEP_NAMES[:3] == ("install", "build", "smoke")  # the order of value
    for step in steps:
        for command in (step.command, step.dry_command):
            if command[0] == "make":
                named = [a for a in command[1:] if not a.startswith("-") and "=" not in a]
                assert named and set(named) <= targets, (step.name, named)
            elif command[1] == "-m":
                module = command[2]
                # find_spec("pip") makes setuptools' distutils shim stand down for the rest of
                # the process (a later torch.utils.cpp_extension import then fails): pip is
                # looked up as a distribution instead.
                if module == "pip":
                    assert importlib.metadata.version("pip"), step.name
                else:
                    assert importlib.util.find_spec(module) is not None, (step.name, module)
            else:
                assert (ROOT / command[1]).is_file(), (step.name, command[1])
    assert {"gpu-day", "gpu-day-dry-run", "gpu-anchors", "gpu-bundle", "gpu-install"} <= targets


def test_the_tree_fits_the_device_tool() -> None:
    size = gpu_day._carry_size()
    # Without .whl/.anchors here the tracked tree alone must leave room for them (~10 MiB).
    assert 0 < size < gpu_day.CARRY_LIMIT - 10 * 2**20


def test_collect_copies_results_and_fails_on_an_empty_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
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


def test_the_limits_follow_the_rehearsal_and_call_1_fits_420_s(tmp_path: Path) -> None:
    limits = gpu_day_plan.planned_limits()
    assert set(limits) == set(gpu_day.STEP_NAMES) and min(limits.values()) > 0
    assert sum(limits[n] for n in gpu_day_plan.CALLS[1]) <= gpu_day_plan.FIRST_CALL_S
    assert sum(limits[n] for n in gpu_day_plan.CALLS[2]) <= gpu_day_plan.SECOND_CALL_S
    assert gpu_day_plan.FIRST_CALL_S + gpu_day_plan.SECOND_CALL_S + 90 <= 900  # 15 device-minutes
    # The formula by hand: ceil(1.5 * (2 * 3 s + 15 s)) = 32 s.
    assert gpu_day_plan.Model(2.0, 15, 1.5, "").limit(3.0) == 32
    fake = tmp_path / "rehearsal.json"
    seconds = {name: 1.0 for name in gpu_day_plan.MODELS}
    fake.write_text(json.dumps({"seconds": seconds}))
    slow = {**seconds, "build": 101.0}
    slower = tmp_path / "slow.json"
    slower.write_text(json.dumps({"seconds": slow}))
    # A slower rehearsed build gives build more and leaves test-gpu less, the total unchanged.
    a, b = gpu_day_plan.planned_limits(fake), gpu_day_plan.planned_limits(slower)
    assert b["build"] - a["build"] == pytest.approx(60, abs=1)
    assert a["test-gpu"] - b["test-gpu"] == b["build"] - a["build"]
    del seconds["smoke"]
    fake.write_text(json.dumps({"seconds": seconds}))
    with pytest.raises(ValueError, match="smoke"):
        gpu_day_plan.planned_limits(fake)


def test_a_subset_gets_install_and_build_in_front_on_a_fresh_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gpu_day, "STATE", tmp_path / "state")
    assert gpu_day.plan_steps(["bench-models"], dry_run=False) == [
        "install",
        "build",
        "bench-models",
    ]
    assert gpu_day.plan_steps(["install"], dry_run=False) == ["install"]
    with pytest.raises(ValueError, match="bench-everything"):
        gpu_day.plan_steps(["bench-everything"], dry_run=False)


def _fake_steps(tmp_path: Path, later: str):
    """install writes a marker; build succeeds; every later step runs ``later`` (a shell line)
    after checking the marker, as `import zoo` needs the installed wheel on a fresh machine."""
    marker = tmp_path / "site" / "zoo-installed"
    probe = tmp_path / "env.txt"

    def steps(out: Path, python: str) -> list[gpu_day.Step]:
        def sh(line: str) -> list[str]:
            return ["sh", "-c", line]

        record = (
            f'echo "$GPU_DAY_STEP $TORCH_CUDA_ARCH_LIST $MAX_JOBS $MSDA_OPS_CACHE_DIR" >> {probe}'
        )
        made = [
            gpu_day.Step(
                "install", sh(f"mkdir -p {marker.parent} && touch {marker} && {record}"), sh("true")
            ),
            gpu_day.Step("build", sh(record), sh(record)),
        ]
        for name in gpu_day.STEP_NAMES[2:]:
            line = f"test -f {marker} && {record} && {later}"
            made.append(gpu_day.Step(name, sh(line), sh(line)))
        return made

    return steps, marker, probe


def _fake_day(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str) -> Path:
    """gpu_day with :func:`_fake_steps` running ``command``, its state in ``tmp_path``;
    returns the probe file every step writes to."""
    steps, _, probe = _fake_steps(tmp_path, command)
    monkeypatch.setattr(gpu_day, "steps", steps)
    monkeypatch.setattr(gpu_day, "STATE", tmp_path / "state")
    monkeypatch.setattr(gpu_day, "environment", lambda python: {})
    return probe


def test_any_subset_runs_from_a_fresh_machine_in_one_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = _fake_day(tmp_path, monkeypatch, "true")
    out = tmp_path / "out"
    assert gpu_day.run_day(out, 600, sys.executable, ["bench-models"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["steps"]) == ["install", "build", "bench-models"]
    lines = probe.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["install", "build", "bench-models"]
    assert len({tuple(line.split()[1:]) for line in lines}) == 1  # one environment
    assert lines[0].split()[1:3] == ["9.0", "8"]
    # The second call on the same machine does not install again.
    assert gpu_day.run_day(out, 600, sys.executable, ["smoke"]) == 0
    assert list(json.loads((out / "summary.json").read_text())["steps"]) == ["build", "smoke"]


def test_a_compile_after_the_build_step_fails_the_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A later step that starts ninja (as torch's JIT builder does) is caught by the wrapper.
    _fake_day(tmp_path, monkeypatch, "ninja --version >/dev/null 2>&1; true")
    out = tmp_path / "out"
    assert gpu_day.run_day(out, 600, sys.executable, ["smoke"]) == 1
    smoke = json.loads((out / "summary.json").read_text())["steps"]["smoke"]
    assert smoke["status"] == "passed" and smoke["compiles"] == ["smoke ninja --version"]


def test_a_spent_budget_skips_steps_and_fails(tmp_path: Path, monkeypatch) -> None:
    # With no time left nothing runs, and the day says so instead of passing.
    monkeypatch.setattr(gpu_day, "environment", lambda python: {})
    assert gpu_day.run_day(tmp_path, 0.0, sys.executable, ["bench-models"]) == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"]["bench-models"]["status"] == "skipped: budget spent"


def test_the_dry_run_prints_the_plan_per_step_and_call(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_day.py"), "--dry-run", "--no-carry-check",
         "--steps", "install", "--out", str(tmp_path / "dry")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    totals = [int(t) for t in re.findall(r"^plan  total +(\d+) s$", proc.stdout, re.M)]
    assert len(totals) == len(gpu_day_plan.CALLS) and totals[0] <= 420, proc.stdout
    for name in gpu_day.STEP_NAMES:
        assert re.search(rf"^plan  {name} +\d+ s$", proc.stdout, re.M), name
    assert "dry run: ready for the GPU" in proc.stdout

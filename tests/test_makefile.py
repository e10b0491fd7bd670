"""The Makefile's stamps and loop, run for real in a scratch copy with pip replaced by ``echo``.

The venv is re-installed exactly when one of its inputs changes (the pinned torch included);
without network and without an installed CUDA toolkit, cuda-check is skipped with one line.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
SETUP_LINE = "==> setting up v "


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """The Makefile in a tree with the files its rules name; a fake interpreter."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    for name in ("pyproject.toml", "msda_ops/pyproject.toml", "Cargo.toml",
                 "msda_ops/src/msda_ops/build.py", "msda_ops/src/msda_ops/cuda_toolkit.py",
                 "msda_ops/src/msda_ops/csrc/kernel.cu", "matcher_rs/Cargo.toml"):  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    # Prints a CUDA toolkit version when asked for one; every other call succeeds quietly.
    fake = tmp_path / "fakepy"
    fake.write_text('#!/bin/sh\ncase "$*" in *importlib*) echo 13.0.2;; esac\nexit 0\n')
    fake.chmod(0o755)
    return tmp_path


def _make(scratch: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = ["make", "--no-print-directory", "VENV=v", "PYTHON=true", "PY=./fakepy", "PIP=echo"]
    return subprocess.run(
        [*command, *args], cwd=scratch, capture_output=True, text=True, timeout=60
    )


def test_the_venv_stamp_covers_the_torch_spec(scratch: Path) -> None:
    first = _make(scratch, "v/.deps")
    assert first.returncode == 0 and SETUP_LINE in first.stdout, first.stdout + first.stderr
    assert SETUP_LINE not in _make(scratch, "v/.deps").stdout  # nothing changed: no install
    changed = _make(scratch, "v/.deps", "TORCH_SPEC=torch==2.11.0")
    assert SETUP_LINE in changed.stdout and "install torch==2.11.0" in changed.stdout
    assert SETUP_LINE not in _make(scratch, "v/.deps", "TORCH_SPEC=torch==2.11.0").stdout
    (scratch / "pyproject.toml").write_text("# edited\n")
    assert SETUP_LINE in _make(scratch, "v/.deps", "TORCH_SPEC=torch==2.11.0").stdout


def test_offline_without_a_toolkit_cuda_check_is_skipped_in_one_line(scratch: Path) -> None:
    assert _make(scratch, "v/.deps").returncode == 0
    offline = _make(scratch, "cuda-check", "PIP=false")  # every pip call fails, as offline
    assert offline.returncode == 0, offline.stdout + offline.stderr
    assert "cuda-check: SKIPPED" in offline.stdout and "nvcc build check" not in offline.stdout
    assert not (scratch / "v" / ".nvcc").exists()
    # Online once: the toolkit is installed and the build check runs; then offline again,
    # nothing is downloaded (the stamp holds) and nothing is skipped.
    online = _make(scratch, "cuda-check")
    assert (
        "cuda-toolkit[nvcc,cccl]==13.0.2" in online.stdout and "nvcc build check" in online.stdout
    )
    assert (scratch / "v" / ".nvcc").is_file()
    (scratch / "build" / "cuda-check.stamp").unlink()
    again = _make(scratch, "cuda-check", "PIP=false")
    assert again.returncode == 0 and "nvcc build check" in again.stdout
    assert "cuda-toolkit" not in again.stdout


def _variable(name: str) -> list[str]:
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    match = re.search(rf"^{name} := (.*)$", text, flags=re.M)
    assert match, name
    return match.group(1).split()


def test_the_fast_selection_names_existing_test_files() -> None:
    fast = _variable("FAST_TESTS")
    assert len(fast) >= 5 and all((ROOT / f).is_file() for f in fast), fast


def test_every_make_target_the_readme_names_exists() -> None:
    targets = set(re.findall(r"^([A-Za-z0-9_.-]+):", (ROOT / "Makefile").read_text(), re.M))
    readme = (ROOT / "README.md").read_text()
    named = set(re.findall(r"`make ([a-z][a-z0-9-]*)", readme))
    assert named and named <= targets, named - targets
    assert {"check", "test", "test-floor", "gpu-day-dry-run"} <= targets


def test_ci_runs_make_test_and_make_test_reports_durations() -> None:
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), re.M)
    dry = subprocess.run(["make", "-n", "-o", "setup", "--no-print-directory", "pytest"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert "--durations=15" in dry.stdout, dry.stdout + dry.stderr

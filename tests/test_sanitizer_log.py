"""benchmarks/sanitizer_log.py: only reports whose stack is in our CUDA code count."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import sanitizer_log

ROOT = Path(__file__).resolve().parents[1]

# A memcheck log in compute-sanitizer's report format, written by hand (no GPU has run here yet):
# two API errors inside torch (a pinned-memory probe, an event query) and one invalid read in
# our forward kernel, between the program's own output.
CANNED = ROOT / "tests" / "data" / "compute_sanitizer_memcheck.log"


def test_the_canned_log_counts_our_kernel_only() -> None:
    reports = sanitizer_log.parse(CANNED.read_text())
    assert [r.title.split(" (")[0] for r in reports] == [
        "Program hit cudaErrorInvalidValue",
        "Invalid __global__ read of size 2 bytes",
        "Program hit cudaErrorNotReady",
    ]
    assert [r.ours for r in reports] == [False, True, False]
    assert sanitizer_log.summarise(reports) == (1, 2)
    assert len(reports[1].lines) == 7  # the whole report, host frames included


def test_an_api_error_raised_under_our_launcher_is_ours() -> None:
    log = (
        "========= Program hit cudaErrorInvalidConfiguration (error 9) on CUDA API call to cudaLaunchKernel.\n"
        "=========         Host Frame: cudaLaunchKernel [0x1] in libcudart.so.13\n"
        "=========         Host Frame: msda::cuda::backward(at::Tensor const&) [0x2] in msda_ops_cuda.so\n"
        "=========\n"
    )
    assert sanitizer_log.summarise(sanitizer_log.parse(log)) == (1, 0)


def _fake_sanitizer(tmp_path: Path, log: str) -> Path:
    """A stand-in for compute-sanitizer: prints ``log``, then runs the program it was given."""
    (tmp_path / "log.txt").write_text(log)
    script = tmp_path / "fake-sanitizer"
    # Its arguments: --tool T [--leak-check no] PROGRAM...
    script.write_text(
        f"#!/bin/sh\ncat {tmp_path / 'log.txt'}\nshift 2\n"
        '[ "$1" = --leak-check ] && shift 2\nexec "$@"\n'
    )
    script.chmod(0o755)
    return script


@pytest.mark.parametrize(
    ("log", "program", "expected"),
    [
        (CANNED.read_text(), "true", 1),  # our invalid read fails the check
        ("\n".join(CANNED.read_text().splitlines()[:7]) + "\n", "true", 0),  # torch's only
        ("", "false", 1),  # the program itself failed
    ],
)
def test_the_command_line_fails_on_ours_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], log: str, program: str, expected: int
) -> None:
    fake = _fake_sanitizer(tmp_path, log)
    status = sanitizer_log.main(["--sanitizer", str(fake), "--tool", "memcheck", "--", program])
    assert status == expected
    out = capsys.readouterr().out
    if log == CANNED.read_text():
        assert "1 report(s) in our kernels or launcher, 2 elsewhere" in out
        assert "not ours (logged, not counted): Program hit cudaErrorNotReady" in out

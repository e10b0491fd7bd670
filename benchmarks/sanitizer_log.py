"""compute-sanitizer, counting only the reports whose stack is in our kernels or launcher.

torch itself makes CUDA API calls that fail on purpose (a probe that returns an error, which
torch then clears), and compute-sanitizer reports each one; counted as errors they would fail
our check for code that is not ours. A report counts when any of its lines (the kernel name,
the source file, a host frame) is in msda_ops' CUDA library; the others are logged, not counted::

    python benchmarks/sanitizer_log.py --sanitizer PATH --tool memcheck -- python3 -P tests/support/sanitize_run.py
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass, field

PREFIX = "========="
# Our kernels (namespace msda, demangled), their sources, and the library the launcher lives in.
OURS = re.compile(r"\bmsda::|msda_ops_cuda|msda_kernel\.cu|kernels\.cuh|msda_sampling\.h")
# Lines of the sanitizer's own that are not reports.
NOT_REPORTS = ("COMPUTE-SANITIZER", "ERROR SUMMARY", "LEAK SUMMARY", "Target application")


@dataclass
class Report:
    """One compute-sanitizer report: its first line and the indented lines under it."""

    title: str
    lines: list[str] = field(default_factory=list)

    @property
    def ours(self) -> bool:
        return any(OURS.search(line) for line in (self.title, *self.lines))


def parse(text: str) -> list[Report]:
    """The reports in compute-sanitizer's output (the program's own lines are ignored)."""
    reports: list[Report] = []
    current: Report | None = None
    for raw in text.splitlines():
        if not raw.startswith(PREFIX):
            continue
        body = raw[len(PREFIX) :]
        if not body.strip():
            current = None  # a bare prefix line ends a report
        elif (
            body.startswith(" ")
            and not body.startswith("  ")
            and not body[1:].startswith(NOT_REPORTS)
        ):
            current = Report(body.strip())
            reports.append(current)
        elif current is not None and body.startswith("  "):
            current.lines.append(body.strip())
    return reports


def summarise(reports: list[Report]) -> tuple[int, int]:
    """(reports in our code, reports elsewhere)."""
    ours = sum(report.ours for report in reports)
    return ours, len(reports) - ours


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sanitizer", default="compute-sanitizer")
    parser.add_argument("--tool", default="memcheck")
    parser.add_argument("program", nargs="+", help="the command to watch (after --)")
    args = parser.parse_args(argv)
    command = [args.sanitizer, "--tool", args.tool]
    if args.tool == "memcheck":
        command += ["--leak-check", "no"]
    proc = subprocess.run(
        [*command, *args.program], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    sys.stdout.write(proc.stdout)  # the whole log, torch's reports included
    reports = parse(proc.stdout)
    ours, elsewhere = summarise(reports)
    for report in reports:
        if not report.ours:
            print(f"sanitizer {args.tool}: not ours (logged, not counted): {report.title}")
    print(f"sanitizer {args.tool}: {ours} report(s) in our kernels or launcher, "
          f"{elsewhere} elsewhere; program exit {proc.returncode}")  # fmt: skip
    return 1 if ours or proc.returncode else 0


if __name__ == "__main__":
    sys.exit(main())

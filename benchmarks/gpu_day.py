"""The GPU day: one prepared run that validates and times every GPU path in two device calls.

A GPU is lent to few tasks, for about 15 minutes of device time in all (start-up included),
10 minutes per call. So everything GPU-side is this one script, rehearsed on a CPU machine
with ``--dry-run`` and then run on the GPU machine::

    make gpu-bundle gpu-anchors ORIGINAL_SRC=...   # here: wheels + the original op's sources
    make gpu-day-dry-run                           # here: plan, carried files, every step
    # device tool, call 1 (<= 420 s planned): run(carry=[".whl", ".anchors"], timeout_s=480,
    #     command="python3 benchmarks/gpu_day.py --out $OUT")
    # call 2, at once while the machine is warm, with what is left:
    #     command="python3 benchmarks/gpu_day.py --call 2 --out $OUT"

Steps, most valuable first (``--steps`` picks any subset; ``install`` and ``build`` are
added in front when this machine has not done them, so a subset works on a fresh machine):

1. ``install``: the carried wheels (``make gpu-install``), once, in a step of its own.
2. ``build``: our CPU and CUDA libraries (``python -m msda_ops.build --kind cpu cuda``) and,
   in the background, the original SenseTime kernel from ``.anchors/deformable_detr_ops``.
3. ``smoke``: one forward + backward per backend against the reference (``gpu_smoke.py``).
4. ``test-gpu``: ``make gpu-pytest`` (every ``gpu`` test), as JUnit XML.
5. ``sanitizer``: compute-sanitizer memcheck, synccheck, initcheck (``make gpu-sanitize``).
6. ``bench-msda``: ``bench_msda.py --device cuda`` (ours, Triton, reference, the anchors).
7. ``bench-models``: ``bench_models.py --device cuda`` (zoo against transformers).

Every step runs with the same environment (:func:`day_environment`: architectures, jobs,
cache folders), so nothing compiles after ``build``: ``ninja``/``nvcc`` wrappers on ``PATH``
record any compile that does happen (``compiles`` in the summary; a problem in the dry run).
Each step's limit comes from the measured rehearsal (:mod:`gpu_day_plan`). ``summary.json``
is rewritten atomically after every step; ``--collect DIR`` copies a fetched day's JSON into
``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_day_plan import CALLS, FIRST_CALL_S, SECOND_CALL_S, planned_limits
from gpu_day_proc import compiler_shims, compiles_since, run_command, write_json_atomic

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / ".whl"
ANCHORS = ROOT / ".anchors"
RESULTS = ROOT / "benchmarks" / "results"
ORIGINAL_OPS = ANCHORS / "deformable_detr_ops"
STATE = ROOT / "build" / "gpu-day"  # what this machine has done (the install marker)
# Wheels the GPU machine lacks (DESIGN.md: no network there); fnmatch patterns in .whl/.
REQUIRED_WHEELS = ("detr_zoo-*abi3*.whl", "pycocotools-*cp312*.whl", "deformops-*.whl")
RESULT_FILES = ("msda_cuda.json", "models_cuda.json", "smoke.json")
STEP_NAMES = tuple(name for call in CALLS.values() for name in call)
SETUP_STEPS = ("install", "build")
# The device tool carries at most 64 MiB: tracked files, untracked unignored ones, carried paths.
CARRY_LIMIT = 64 * 2**20


@dataclass
class Step:
    """One stage of the GPU day: its command on the GPU and its CPU rehearsal."""

    name: str
    command: list[str]
    dry_command: list[str]


def day_environment() -> dict[str, str]:
    """The one environment of every step (and of the commands they start).

    The CUDA library's cache key holds the architectures: a step without
    ``TORCH_CUDA_ARCH_LIST`` would look for (and build) another library than ``build`` made.
    Fixed cache folders let every step find what ``build`` and the smoke compiled.
    """
    return {
        "TORCH_CUDA_ARCH_LIST": "9.0",  # H100/H200; the DESIGN's GPU machine
        "MAX_JOBS": "8",  # 16 cores: half for ours, half for the original kernel's build
        "PYTHONPATH": str(ROOT / "msda_ops" / "src"),  # msda_ops from its sources
        "MSDA_OPS_CACHE_DIR": str(ROOT / "build" / "msda_ops-cache"),
        "TRITON_CACHE_DIR": str(ROOT / "build" / "triton-cache"),
    }


def steps(out: Path, python: str) -> list[Step]:
    """The day's stages in priority order; ``out`` receives every result file."""
    make = ["make", "--no-print-directory", f"GPU_PYTHON={python}"]
    wheels = sorted(str(p) for p in WHEELS.glob("*.whl"))
    # Rehearsed: the carried wheels' tags fit the GPU machine's CPython 3.12 on x86-64 Linux
    # (installs nothing). pip checks a local file's Requires-Python against the interpreter it
    # runs on, not --python-version (deformops wants >= 3.12; this machine has 3.11), so that
    # check is left to the tags.
    platforms = [
        a for v in ("2_34", "2_28", "2_17") for a in ("--platform", f"manylinux_{v}_x86_64")
    ]
    pip_check = [python, "-m", "pip", "install", "--dry-run", "-q", "--no-index", "--no-deps",
                 "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
                 *platforms, "--platform", "manylinux2014_x86_64", "--ignore-requires-python",
                 "--target", str(out / "install-check"), *wheels] if wheels else [python, "-m", "pip", "--version"]  # fmt: skip
    return [
        Step("install", [*make, "gpu-install"], pip_check),
        Step("build", [python, "-m", "msda_ops.build", "--kind", "cpu", "cuda"],
             [python, "-m", "msda_ops.build", "--kind", "cpu"]),
        Step("smoke", [python, "benchmarks/gpu_smoke.py", "--out", str(out)],
             [python, "benchmarks/gpu_smoke.py", "--dry-run"]),
        Step("test-gpu", [*make, "gpu-pytest", f"PYTEST_ARGS=--junitxml={out}/test_gpu.xml"],
             [python, "-m", "pytest", "-m", "gpu", "--collect-only", "-q", "-p", "no:cacheprovider"]),
        Step("sanitizer", [*make, "gpu-sanitize"],
             [python, "tests/support/sanitize_run.py", "--dry-run"]),
        Step("bench-msda",
             [python, "benchmarks/bench_msda.py", "--device", "cuda", "--quick", "--budget", "0.1",
              "--output", str(out / "msda_cuda.json")],
             [python, "benchmarks/bench_msda.py", "--device", "cuda", "--dry-run"]),
        Step("bench-models",
             # No --compile: compiling both models twice does not fit call 2 (a third call may).
             [python, "benchmarks/bench_models.py", "--device", "cuda", "--train",
              "--output", str(out / "models_cuda.json")],
             # A CPU smoke run at a small size: builds, checks and times both models once.
             [python, "benchmarks/bench_models.py", "--quick", "--device", "cpu", "--train"]),
    ]  # fmt: skip


def _install_marker() -> Path:
    return STATE / "installed"


def _wheel_list() -> str:
    return "".join(f"{p.name} {p.stat().st_size}\n" for p in sorted(WHEELS.rglob("*.whl")))


def plan_steps(requested: list[str], dry_run: bool) -> list[str]:
    """The steps to run, in day order: ``requested`` plus the set-up a fresh machine lacks.

    ``install`` is added when this machine has not installed these wheels (a real run leaves a
    marker; a dry run never does, so it rehearses the fresh machine); ``build`` is added in
    front of any later step (a no-op of seconds when the libraries are cached).
    """
    unknown = sorted(set(requested) - set(STEP_NAMES))
    if unknown:
        raise ValueError(f"steps: unknown {unknown}; expected some of {list(STEP_NAMES)}")
    chosen = set(requested)
    if chosen - set(SETUP_STEPS):
        chosen.add("build")
        marker = _install_marker()
        if dry_run or not marker.is_file() or marker.read_text() != _wheel_list():
            chosen.add("install")
    return [name for name in STEP_NAMES if name in chosen]


def _start_original_build(
    python: str, log: TextIO, env: dict[str, str]
) -> subprocess.Popen[bytes] | None:
    """Build the original kernel in the background, in its own session (killed at the end)."""
    if not (ORIGINAL_OPS / "setup.py").is_file():
        log.write(f"original kernel: no sources in {ORIGINAL_OPS}; anchor skipped\n")
        return None
    cmd = [python, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps",
           "--no-index", str(ORIGINAL_OPS)]  # fmt: skip
    log.write(f"original kernel: {' '.join(cmd)} (background)\n")
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def environment(python: str) -> dict[str, object]:
    """What the results are measured on: GPU, driver, versions."""
    env: dict[str, object] = {"python": sys.version.split()[0]}
    probe = (
        "import json, torch; d = torch.cuda.is_available(); print(json.dumps({'torch': torch.__version__,"
        " 'cuda': torch.version.cuda, 'device': torch.cuda.get_device_name() if d else 'cpu'}))"
    )
    try:
        env.update(
            json.loads(subprocess.check_output([python, "-c", probe], text=True, timeout=120))
        )
    except (subprocess.SubprocessError, OSError, ValueError) as exc:
        env["torch_probe_error"] = str(exc)
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                 "--format=csv,noheader"]  # fmt: skip
        env["nvidia_smi"] = subprocess.run(query, capture_output=True, text=True).stdout.strip()
    return env


class Day:
    """Runs chosen steps in one environment, under their limits, recording each in a summary."""

    def __init__(self, out: Path, python: str, dry_run: bool, log: TextIO) -> None:
        self.out, self.python, self.dry_run, self.log = out, python, dry_run, log
        self.env = {**os.environ, **day_environment()}
        self.record = out / "compiles.log"
        self.shims = out / "shims"
        self.by_name = {step.name: step for step in steps(out, python)}

    def run(self, name: str, limit_s: float) -> dict[str, Any]:
        """Run step ``name``; after ``build`` the compiler wrappers are on ``PATH``."""
        step = self.by_name[name]
        env = {**self.env, "GPU_DAY_STEP": name}
        command = step.dry_command if self.dry_run else step.command
        offset = self.record.stat().st_size if self.record.is_file() else 0
        result = run_command(name, command, limit_s, env, ROOT, self.log)
        if name == "build":
            compiler_shims(self.shims, self.record)
            self.env["PATH"] = f"{self.shims}{os.pathsep}{self.env.get('PATH', '')}"
        elif name == "install" and not self.dry_run and result["status"] == "passed":
            STATE.mkdir(parents=True, exist_ok=True)
            _install_marker().write_text(_wheel_list())
        compiled, _ = compiles_since(self.record, offset)
        if compiled and name != "build":
            result["compiles"] = compiled
            print(f"{name:14s} compiled after the build step: {compiled[:3]}", flush=True)
        return result


def print_plan(names: list[str], limits: dict[str, int]) -> None:
    """Each step's planned wall time (its limit) and the total of the call."""
    for name in names:
        print(f"plan  {name:14s} {limits[name]:4d} s")
    print(f"plan  {'total':14s} {sum(limits[n] for n in names):4d} s")


def run_day(out: Path, budget_s: float, python: str, only: list[str] | None = None) -> int:
    """Run the steps (call 1's, or those in ``only``) within ``budget_s`` seconds.

    Returns 0 when every step that ran passed and none compiled after ``build``.
    """
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + budget_s
    names = plan_steps(only or list(CALLS[1]), dry_run=False)
    limits = planned_limits()
    print_plan(names, limits)
    results: dict[str, dict[str, Any]] = {}
    summary = {"environment": environment(python), "plan": {n: limits[n] for n in names},
               "steps": results}  # fmt: skip
    write_json_atomic(out / "summary.json", summary)
    original = None
    with open(out / "gpu_day.log", "a", buffering=1) as log:
        for wheel in sorted(WHEELS.glob("*.whl")):
            log.write(f"carried wheel: {wheel.name}\n")
        day = Day(out, python, dry_run=False, log=log)
        for name in names:
            left = deadline - time.monotonic() - 5
            if name == "build" and "bench-msda" in names:
                original = _start_original_build(python, log, day.env)
            if name == "bench-msda" and original is not None:
                _join_original(original, left, log)
            if left < 20:
                results[name] = {"status": "skipped: budget spent"}
                print(f"{name:14s} skipped: budget spent", flush=True)
            else:
                results[name] = day.run(name, min(limits[name], left))
            write_json_atomic(out / "summary.json", summary)
        if original is not None and original.poll() is None:
            os.killpg(original.pid, signal.SIGKILL)  # its benchmark never started
    failed = [n for n, r in results.items() if r["status"] != "passed" or r.get("compiles")]
    print("all steps passed" if not failed else f"not passed: {', '.join(failed)}")
    return 1 if failed else 0


def _join_original(original: subprocess.Popen[bytes], left: float, log: TextIO) -> None:
    """The anchor must be installed before its benchmark starts; give up after two minutes."""
    try:
        original.wait(timeout=max(1.0, min(120.0, left - 60)))
        log.write(f"original kernel build: exit {original.returncode}\n")
    except subprocess.TimeoutExpired:
        os.killpg(original.pid, signal.SIGKILL)
        log.write("original kernel build: timed out, anchor skipped\n")


def _carry_size() -> int:
    """Bytes the device call would send: tracked + untracked-unignored files + carried paths."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.split(b"\0")  # fmt: skip
    total = sum(
        (ROOT / p.decode()).stat().st_size for p in listed if p and (ROOT / p.decode()).is_file()
    )
    for carried in (WHEELS, ANCHORS):
        total += sum(f.stat().st_size for f in carried.rglob("*") if f.is_file())
    return total


def carry_problems() -> list[str]:
    """What the device call would lack: wheels, the original kernel's sources, room."""
    problems = [
        f"missing wheel {pattern} in {WHEELS} (run `make gpu-bundle`)"
        for pattern in REQUIRED_WHEELS
        if not list(WHEELS.glob(pattern))
    ]
    if not (ORIGINAL_OPS / "setup.py").is_file():
        problems.append(
            f"missing the original kernel's sources in {ORIGINAL_OPS} "
            "(run `make gpu-anchors ORIGINAL_SRC=<Deformable-DETR checkout or git dir>`)"
        )
    size = _carry_size()
    print(f"carried tree: {size / 2**20:.1f} MiB of {CARRY_LIMIT / 2**20:.0f} MiB")
    if size > CARRY_LIMIT:
        problems.append(f"the tree to carry is {size / 2**20:.1f} MiB, over the 64 MiB limit")
    return problems


def dry_run(
    python: str, only: list[str] | None, carry: bool, record: Path | None, out: Path
) -> int:
    """Rehearse on this CPU machine: the plan, the carried files, every step's CPU variant.

    As on a fresh GPU machine, the chosen steps run in :func:`day_environment` with
    ``install`` and ``build`` in front; a compile after ``build`` is a problem. ``record``
    receives each step's measured seconds (the input of :mod:`gpu_day_plan`).
    """
    problems = carry_problems() if carry else []
    try:
        limits = planned_limits()
    except (OSError, ValueError) as exc:  # the first --record creates the rehearsal file
        problems.append(f"no plan: {exc}")
    else:
        for number, call in CALLS.items():
            print(f"call {number}:")
            print_plan(list(call), limits)
        first, second = (sum(limits[name] for name in CALLS[n]) for n in (1, 2))
        if first > FIRST_CALL_S or second > SECOND_CALL_S or min(limits.values()) <= 0:
            problems.append(
                f"calls plan {first} s and {second} s, over {FIRST_CALL_S} s and "
                f"{SECOND_CALL_S} s, or a limit is <= 0"
            )
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    measured: dict[str, float] = {}
    day = Day(out, python, dry_run=True, log=sys.stdout)
    for name in plan_steps(only or list(STEP_NAMES), dry_run=True):
        # The rehearsal's own limit: generous, it runs on 2 shared CPU cores (Triton interpreted).
        result = day.run(name, 900)
        measured[name] = result["seconds"]
        if result["status"] != "passed":
            problems.append(f"step {name}: its rehearsal {result['status']}")
        if result.get("compiles"):
            problems.append(f"step {name} compiled after the build step: {result['compiles']}")
    if record is not None:
        # The load average says how shared this machine was while it measured.
        write_json_atomic(
            record,
            {
                "environment": environment(python),
                "load_average": os.getloadavg(),
                "seconds": measured,
            },
        )
        print(f"wrote {record}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("dry run: ready for the GPU" if not problems else f"dry run: {len(problems)} problem(s)")
    return 1 if problems else 0


def collect(fetched: Path) -> int:
    """Copy the result JSON of a finished day from ``fetched`` into benchmarks/results/."""
    copied = 0
    for name in (*RESULT_FILES, "summary.json"):
        src = fetched / name
        if src.is_file():
            dst = RESULTS / ("gpu_day_summary.json" if name == "summary.json" else name)
            shutil.copyfile(src, dst)
            print(f"copied {src} -> {dst}")
            copied += 1
    return 0 if copied else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-day-out")))
    parser.add_argument(
        "--budget", type=float, default=540.0, help="seconds for the whole call (default 540)"
    )
    parser.add_argument("--python", default=sys.executable, help="the interpreter with torch")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--call", type=int, choices=sorted(CALLS), help="the steps of call N")
    group.add_argument("--steps", nargs="+", choices=STEP_NAMES, help="only these steps")
    parser.add_argument("--dry-run", action="store_true", help="rehearse on this CPU machine")
    parser.add_argument(
        "--no-carry-check", action="store_true", help="dry run: skip the .whl/.anchors checks"
    )
    parser.add_argument("--record", type=Path, help="dry run: write the measured step times")
    parser.add_argument("--collect", type=Path, help="copy a fetched day's JSON into results/")
    args = parser.parse_args(argv)
    only = args.steps or (list(CALLS[args.call]) if args.call else None)
    if args.collect:
        return collect(args.collect)
    if args.dry_run:
        out = args.out if "--out" in (argv or sys.argv) else Path("/tmp/gpu-day-dry-run")
        return dry_run(args.python, only, not args.no_carry_check, args.record, out)
    return run_day(args.out, args.budget, args.python, only)


if __name__ == "__main__":
    sys.exit(main())

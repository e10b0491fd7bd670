"""The GPU day: one prepared run that validates and times every GPU path within one device call.

A GPU is lent to few tasks, for about 15 minutes of device time in all (start-up included),
10 minutes per call. So everything GPU-side is this one script, rehearsed on a CPU machine
with ``--dry-run`` and then run on the GPU machine in a single call::

    make gpu-bundle gpu-anchors ORIGINAL_SRC=...   # here: wheels + the original op's sources
    make gpu-day-dry-run                           # here: every import, wheel, path and step
    # device tool, call 1: run(carry=[".whl", ".anchors"], timeout_s=580,
    #                          command="python3 benchmarks/gpu_day.py --out $OUT")
    # call 2, at once while the machine is warm (30 s), for what call 1 had no time for:
    #   command="python3 benchmarks/gpu_day.py --out $OUT --steps bench-models"

Estimated on a 16-core H200 machine (not yet measured): the CUDA build 1-2 min, test-gpu
2-3 min (Triton compiles each configuration), the sanitizer 1-2 min, the kernel benchmark
3-5 min; so the models benchmark usually needs the second call. The kernel benchmark saves
its JSON after every case, so a step stopped by its limit still returns what it measured.

Steps, most valuable first, each under its own time limit cut to what the budget has left:

1. ``build``: our CUDA kernel (``python -m msda_ops.build --kind cuda``) and, in the
   background, the original SenseTime kernel from ``.anchors/deformable_detr_ops``.
2. ``test-gpu``: ``make test-gpu`` (CUDA kernel and Triton backend against the reference,
   gradcheck, opcheck, compile, CUDA graphs, deterministic mode...), as JUnit XML.
3. ``sanitizer``: compute-sanitizer memcheck, synccheck and initcheck on a forward+backward.
4. ``bench-msda``: ``benchmarks/bench_msda.py --device cuda`` (ours, Triton, reference,
   deformops, the original kernel).
5. ``bench-models``: ``benchmarks/bench_models.py --device cuda`` (zoo vs transformers).

At most 8 files come back from ``$OUT``: ``summary.json`` (environment, each step's status
and time), ``gpu_day.log`` (every step's output, compute-sanitizer's too), ``test_gpu.xml``,
``msda_cuda.json``, ``models_cuda.json``. Copy the JSON into ``benchmarks/results/`` and
commit it (``--collect DIR`` does that from the fetched folder).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / ".whl"
ANCHORS = ROOT / ".anchors"
RESULTS = ROOT / "benchmarks" / "results"
ORIGINAL_OPS = ANCHORS / "deformable_detr_ops"
# Wheels the GPU machine lacks (DESIGN.md: no network there); fnmatch patterns in .whl/.
REQUIRED_WHEELS = ("detr_zoo-*abi3*.whl", "pycocotools-*cp312*.whl", "deformops-*.whl")
RESULT_FILES = ("msda_cuda.json", "models_cuda.json")
STEP_NAMES = ("build", "test-gpu", "sanitizer", "bench-msda", "bench-models")
# The device tool carries at most 64 MiB: tracked files, untracked unignored ones, carried paths.
CARRY_LIMIT = 64 * 2**20


@dataclass
class Step:
    """One stage of the GPU day: a command, its limit, and its CPU rehearsal."""

    name: str
    command: list[str]
    limit_s: int
    dry_command: list[str] | None  # what --dry-run runs instead (None: checked statically)
    env: dict[str, str] = field(default_factory=dict)


def _python_path() -> str:
    # msda_ops runs from its sources (kernels JIT-built there); zoo/matcher_rs from the wheel.
    extra = [str(ROOT / "msda_ops" / "src")]
    if os.environ.get("PYTHONPATH"):
        extra.append(os.environ["PYTHONPATH"])
    return os.pathsep.join(extra)


def steps(out: Path, python: str) -> list[Step]:
    """The day's stages in priority order; ``out`` receives every result file."""
    bench_env = {"PYTHONPATH": _python_path()}
    return [
        Step(
            "build",
            [python, "-m", "msda_ops.build", "--kind", "cuda"],
            240,
            [python, "-c", "import msda_ops.build"],
            {"PYTHONPATH": _python_path(), "TORCH_CUDA_ARCH_LIST": "9.0"},
        ),
        Step(
            "test-gpu",
            ["make", "--no-print-directory", "gpu-pytest", f"PYTEST_ARGS=--junitxml={out}/test_gpu.xml"],
            200,
            [python, "-m", "pytest", "-m", "gpu", "--collect-only", "-q", "-p", "no:cacheprovider"],
        ),
        Step(
            "sanitizer",
            ["make", "--no-print-directory", "gpu-sanitize"],
            90,
            [python, "tests/support/sanitize_run.py", "--dry-run"],
            bench_env,
        ),
        Step(
            "bench-msda",
            [python, "benchmarks/bench_msda.py", "--device", "cuda"],
            300,
            [python, "benchmarks/bench_msda.py", "--dry-run"],
            bench_env,
        ),
        Step(
            "bench-models",
            [python, "benchmarks/bench_models.py", "--device", "cuda", "--train", "--compile"],
            120,
            # A CPU smoke run at a small size: builds, checks and times both models once.
            [python, "benchmarks/bench_models.py", "--quick", "--device", "cpu", "--train"],
            bench_env,
        ),
    ]  # fmt: skip


def _run(step: Step, command: list[str], limit_s: float, log: TextIO) -> dict[str, object]:
    log.write(f"\n===== {step.name}: {' '.join(command)} (limit {limit_s:.0f} s)\n")
    log.flush()
    start = time.monotonic()
    env = {**os.environ, **step.env}
    try:
        proc = subprocess.run(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=limit_s
        )
        status = "passed" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    except subprocess.TimeoutExpired:
        status = f"timed out after {limit_s:.0f} s"
    except OSError as exc:
        status = f"could not start: {exc}"
    elapsed = time.monotonic() - start
    log.write(f"===== {step.name}: {status} in {elapsed:.1f} s\n")
    log.flush()
    print(f"{step.name:14s} {status} ({elapsed:.0f} s)", flush=True)
    return {"status": status, "seconds": round(elapsed, 1), "command": command}


def _start_original_build(log: TextIO) -> subprocess.Popen[bytes] | None:
    """Build the original kernel in the background (16 cores there; ours builds meanwhile)."""
    if not (ORIGINAL_OPS / "setup.py").is_file():
        log.write(f"original kernel: no sources in {ORIGINAL_OPS}; anchor skipped\n")
        return None
    env = {**os.environ, "MAX_JOBS": "8", "TORCH_CUDA_ARCH_LIST": "9.0"}
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps",
           "--no-index", str(ORIGINAL_OPS)]  # fmt: skip
    log.write(f"original kernel: {' '.join(cmd)} (background)\n")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


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


def _run_step(
    step: Step,
    left: float,
    original: subprocess.Popen[bytes] | None,
    started: float,
    out: Path,
    log: TextIO,
) -> dict[str, object]:
    """Run one step within ``left`` seconds and copy the result files it wrote into ``out``."""
    if step.name == "bench-msda" and original is not None:
        # The anchor must be installed before its benchmark starts.
        try:
            original.wait(timeout=max(1.0, min(120.0, left - 60)))
            log.write(f"original kernel build: exit {original.returncode}\n")
        except subprocess.TimeoutExpired:
            original.kill()
            log.write("original kernel build: timed out, anchor skipped\n")
    result = _run(step, step.command, min(step.limit_s, left), log)
    for name in RESULT_FILES:  # the benchmarks write into benchmarks/results/
        path = RESULTS / name
        if path.is_file() and path.stat().st_mtime >= started:
            shutil.copyfile(path, out / name)
    return result


def run_day(out: Path, budget_s: float, python: str, only: list[str] | None = None) -> int:
    """Run the steps (all, or those named in ``only``) within ``budget_s`` seconds.

    Returns 0 when every step that ran passed.
    """
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + budget_s
    started = time.time()
    results: dict[str, dict[str, object]] = {}
    summary = {"environment": environment(python), "steps": results}
    with open(out / "gpu_day.log", "a", buffering=1) as log:
        for wheel in sorted(WHEELS.glob("*.whl")):
            log.write(f"carried wheel: {wheel.name}\n")
        chosen = [step for step in steps(out, python) if only is None or step.name in only]
        original = (
            _start_original_build(log) if any(s.name == "bench-msda" for s in chosen) else None
        )
        for step in chosen:
            left = deadline - time.monotonic() - 5
            if left < 20:
                results[step.name] = {"status": "skipped: budget spent"}
                print(f"{step.name:14s} skipped: budget spent", flush=True)
            else:
                results[step.name] = _run_step(step, left, original, started, out, log)
            (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if original is not None and original.poll() is None:
            original.kill()  # the benchmark that needed it never started
    failed = [name for name, result in results.items() if result["status"] != "passed"]
    print("all steps passed" if not failed else f"not passed: {', '.join(failed)}")
    return 1 if failed else 0


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


def dry_run(python: str) -> int:
    """Rehearse on this (CPU) machine: wheels, sources, sizes and every step's CPU variant."""
    problems: list[str] = []
    for pattern in REQUIRED_WHEELS:
        if not list(WHEELS.glob(pattern)):
            problems.append(f"missing wheel {pattern} in {WHEELS} (run `make gpu-bundle`)")
    if not (ORIGINAL_OPS / "setup.py").is_file():
        problems.append(
            f"missing the original kernel's sources in {ORIGINAL_OPS} "
            "(run `make gpu-anchors ORIGINAL_SRC=<Deformable-DETR checkout or git dir>`)"
        )
    size = _carry_size()
    print(f"carried tree: {size / 2**20:.1f} MiB of {CARRY_LIMIT / 2**20:.0f} MiB")
    if size > CARRY_LIMIT:
        problems.append(
            f"the tree to carry is {size / 2**20:.1f} MiB, over the device tool's 64 MiB"
        )
    log = sys.stdout
    day = steps(Path("/tmp/gpu-day-dry-run"), python)
    if [step.name for step in day] != list(STEP_NAMES):
        problems.append("STEP_NAMES does not list the steps in order")
    for step in day:
        if step.dry_command is None:
            continue
        result = _run(step, step.dry_command, step.limit_s, log)
        if result["status"] != "passed":
            problems.append(f"step {step.name}: its rehearsal {result['status']}")
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
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-day-out")))
    parser.add_argument(
        "--budget", type=float, default=540.0, help="seconds for the whole call (default 540)"
    )
    parser.add_argument("--python", default=sys.executable, help="the interpreter with torch")
    parser.add_argument(
        "--steps",
        nargs="+",
        choices=STEP_NAMES,
        help="run only these steps (e.g. a second call for what the first ran out of time for)",
    )
    parser.add_argument("--dry-run", action="store_true", help="rehearse on this CPU machine")
    parser.add_argument("--collect", type=Path, help="copy a fetched day's JSON into results/")
    args = parser.parse_args(argv)
    if args.collect:
        return collect(args.collect)
    if args.dry_run:
        return dry_run(args.python)
    return run_day(args.out, args.budget, args.python, args.steps)


if __name__ == "__main__":
    sys.exit(main())

"""The timing helper every benchmark shares: medians of repeats, environment, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _cuda_sync() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
    except ImportError:  # pragma: no cover - torch is a dependency of every benchmark here
        pass


# What an L2 flush writes: larger than the L2 of any current GPU (H100: 50 MB, H200: 60 MB).
L2_FLUSH_BYTES = 256 * 2**20


def time_fn(
    fn: Callable[[], Any],
    *,
    repeats: int = 10,
    warmup: int = 2,
    min_time: float = 0.0,
    device: str | None = None,
    flush_l2: bool = False,
) -> dict[str, Any]:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed ones (at least ``min_time`` s).

    Every call is timed by the wall clock (CUDA synchronised before and after, so it covers the
    kernels and the launch overhead). With ``device="cuda"`` each call is also timed by CUDA
    events recorded around it on the current stream: the GPU's own time, without the host's
    synchronisation cost; then ``median_s`` is the events' median. ``flush_l2`` (CUDA) writes
    a buffer larger than the L2 cache before each timed call, outside both timings, so no call
    finds its inputs cached by the previous one.

    Returns seconds: ``median_s``, ``min_s``, ``max_s`` (of the figure ``median_s`` uses),
    ``wall_median_s``, ``event_median_s`` (None without events) and ``repeats``.
    """
    events = device == "cuda"
    flush = None
    if events:
        import torch

        if flush_l2:
            flush = torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.float32, device="cuda")
    for _ in range(warmup):
        fn()
    _cuda_sync()
    wall: list[float] = []
    gpu: list[float] = []
    start_all = time.perf_counter()
    while len(wall) < repeats or time.perf_counter() - start_all < min_time:
        if flush is not None:
            flush.zero_()
            _cuda_sync()
        if events:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0 = time.perf_counter()
            begin.record()
            fn()
            end.record()
            end.synchronize()
            wall.append(time.perf_counter() - t0)
            gpu.append(begin.elapsed_time(end) / 1e3)  # milliseconds
        else:
            t0 = time.perf_counter()
            fn()
            _cuda_sync()
            wall.append(time.perf_counter() - t0)
    used = gpu if events else wall
    return {
        "median_s": statistics.median(used),
        "min_s": min(used),
        "max_s": max(used),
        "wall_median_s": statistics.median(wall),
        "event_median_s": statistics.median(gpu) if gpu else None,
        "repeats": float(len(wall)),
    }


def environment() -> dict[str, Any]:
    """Machine and library versions, recorded with every result file."""
    env: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            env["device"] = torch.cuda.get_device_name()
            env["cuda"] = torch.version.cuda
        else:
            env["device"] = "cpu"
    except ImportError:  # pragma: no cover
        env["device"] = "cpu"
    try:
        env["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        env["git_commit"] = None
    return env


# Peak memory bandwidth (bytes/s) of GPUs whose properties do not report it.
_PEAK_BANDWIDTH = {"H200": 4.8e12, "H100 SXM": 3.35e12, "H100 PCIe": 2.0e12, "A100": 2.0e12}


def device_peak_bandwidth(device: int = 0) -> float | None:
    """Theoretical DRAM bandwidth of a CUDA device in bytes/s (None without CUDA).

    From the memory clock and bus width (double data rate) when torch reports them, else
    from a small table of data-sheet figures by device name.
    """
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(device)
    clock_khz = getattr(props, "memory_clock_rate", 0)
    bus_bits = getattr(props, "memory_bus_width", 0)
    if clock_khz and bus_bits:
        return 2.0 * clock_khz * 1e3 * bus_bits / 8
    for name, peak in _PEAK_BANDWIDTH.items():
        if name in props.name:
            return peak
    return None


# Where smoke (--quick) and ad-hoc runs write, so that they never overwrite the committed
# results in RESULTS; --output names a file explicitly.
SCRATCH = Path(os.environ.get("TMPDIR", "/tmp")) / "detr-zoo-bench"


def results_path(output: str | Path | None, default: str, *, scratch: bool) -> Path:
    """The JSON file a benchmark run writes.

    Args:
        output: ``--output``: a path ending in ``.json``, or a name in ``results/``.
        default: the committed results' name (``results/<default>.json``).
        scratch: a smoke or ad-hoc run: without ``output`` it goes to :data:`SCRATCH`.
    """
    if output is not None:
        text = str(output)
        return Path(text) if text.endswith(".json") else RESULTS / f"{text}.json"
    return (SCRATCH if scratch else RESULTS) / f"{default}.json"


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``{"environment": ..., **payload}`` to ``path`` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"environment": environment(), **payload}, indent=2) + "\n")
    return path


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain-text table of ``rows`` (dicts) in ``columns``; floats with 3 significant digits."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}"
        return "-" if value is None else str(value)

    table = [columns, *[[cell(row.get(c)) for c in columns] for row in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

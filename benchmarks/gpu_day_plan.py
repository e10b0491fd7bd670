"""Each GPU-day step's time limit, derived from the measured CPU rehearsal with stated factors.

``python benchmarks/gpu_day.py --dry-run --record benchmarks/results/gpu_day_rehearsal.json``
measures every step's CPU rehearsal here. A step's limit on the GPU machine is

    limit = ceil(margin * (scale * rehearsal_seconds + fixed_s))

where ``scale`` converts this machine's seconds (2 shared cores) into the GPU host's (16 cores)
for the work the rehearsal really does, and ``fixed_s`` is what no CPU rehearsal can show:
GPU first-call compilation (nvcc, Triton's JIT) and the CUDA work itself. ``test-gpu`` takes
what call 1 has left of :data:`FIRST_CALL_S`, so that a second call, started at once on the warm
machine, fits the 15 device-minutes: 900 s - 420 s - one start-up (~90 s) leaves
:data:`SECOND_CALL_S` for call 2. The rehearsal on record ran on 2 cores shared with other jobs
(load average 10-16), so its seconds overstate this machine's: the limits err long.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

REHEARSAL = Path(__file__).resolve().parent / "results" / "gpu_day_rehearsal.json"
FIRST_CALL_S = 420
CALLS = {
    1: ("install", "build", "smoke", "test-gpu"),
    2: ("sanitizer", "bench-msda", "bench-models"),
}
# Call 2 runs at once on the warm machine: 900 s - call 1 - one start-up (~90 s).
SECOND_CALL_S = 390
REMAINDER = "test-gpu"  # the step that gets what call 1 has left


@dataclass(frozen=True)
class Model:
    """How one step's GPU time follows from its rehearsal (see the module docstring)."""

    scale: float
    fixed_s: float
    margin: float
    why: str

    def limit(self, rehearsal_s: float) -> int:
        return math.ceil(self.margin * (self.scale * rehearsal_s + self.fixed_s))


MODELS = {
    "install": Model(
        2.0,
        15,
        1.5,
        "the rehearsal is pip --dry-run of the same wheels; the real "
        "install writes them (~100 MB with the sanitizer): +15 s",
    ),
    "build": Model(
        0.5,
        110,
        1.2,
        "the CPU library: same sources on 8 jobs instead of 2 cores "
        "(x0.5, not x0.25: one translation unit dominates); the CUDA library for sm_90 "
        "only: 100 s measured here for sm_80+sm_90 on 2 cores (DESIGN.md), 110 s kept",
    ),
    "smoke": Model(
        0.0,
        50,
        1.2,
        "the rehearsal runs Triton in its interpreter (no relation); "
        "on the GPU: 12 calls, Triton JIT of the forward and backward for 2 dtypes x "
        "softmax (~8 compiles of ~5 s)",
    ),
    "sanitizer": Model(
        3.0,
        45,
        1.3,
        "three tools, each the rehearsal's 58 calls (CPU kernel); "
        "under memcheck a CUDA context starts in ~15 s",
    ),
    "bench-msda": Model(
        0.0,
        120,
        1.0,
        "the benchmark's own budget (--quick, 0.1 s per "
        "measurement); it saves after every case, so its limit loses no result",
    ),
    "bench-models": Model(
        0.05,
        60,
        1.3,
        "the rehearsal is mostly ResNet-50 forward/backward on "
        "CPU, ~100x faster on the GPU: 5 % of it transfers (building, loading, "
        "checking both models); +60 s for the CUDA timings themselves",
    ),
}


def rehearsal_seconds(path: Path = REHEARSAL) -> dict[str, float]:
    """The measured seconds of each step's rehearsal (written by ``--record``)."""
    return {k: float(v) for k, v in json.loads(path.read_text())["seconds"].items()}


def planned_limits(path: Path = REHEARSAL) -> dict[str, int]:
    """Each step's limit in seconds; ``test-gpu`` gets call 1's remainder of FIRST_CALL_S.

    Raises:
        ValueError: the rehearsal file lacks a step's time (re-run ``--dry-run --record``).
    """
    measured = rehearsal_seconds(path)
    missing = sorted(set(MODELS) - set(measured))
    if missing:
        raise ValueError(
            f"{path}: no rehearsal time for {missing}; run gpu_day.py --dry-run --record"
        )
    limits = {name: model.limit(measured[name]) for name, model in MODELS.items()}
    limits[REMAINDER] = FIRST_CALL_S - sum(limits[n] for n in CALLS[1] if n != REMAINDER)
    return limits

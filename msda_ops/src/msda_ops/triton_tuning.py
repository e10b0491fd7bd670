"""Launch shapes of the Triton kernels, and the choice among a few of them on the GPU.

A launch shape follows from a :data:`Config` ``(tile, per_thread)``: the elements of one
``[BLOCK_Q, BLOCK_LP, BLOCK_D]`` tile and how many of them each thread holds (hence the
warps). :data:`CONFIGS` are the candidates; ptxas' registers and spills for each, at the
model's shapes, are in ``benchmarks/results/triton_ptxas.json`` (``benchmarks/triton_ptxas.py``,
compiled here without a GPU). :data:`DEFAULT` is used where nothing is timed: in Triton's
interpreter, during CUDA graph capture, and with ``MSDA_OPS_TRITON_AUTOTUNE=0``.

On CUDA the first call of each (kernel, L*P, D, dtype, softmax, device) times every
candidate (CUDA events, median of a few runs after a warm-up) and keeps the fastest for the
process. The key leaves out Lq, so images of other sizes reuse the choice instead of
tuning again; the choice changes only the order of float sums, never what is computed.
"""

from __future__ import annotations

import functools
import os
import statistics
from collections.abc import Callable, Hashable

import torch
import triton

Config = tuple[int, int]  # (tile elements, elements per thread)
# ptxas (the JSON above, encoder shape, sm_90 fp32 backward): (1024, 4) 221 registers,
# (512, 2) 124, (256, 2) 125, no spill; (2048, 4) spills 356 bytes and (512, 4) spills
# on sm_80 in float16, so they are not candidates.
DEFAULT: Config = (1024, 4)
CONFIGS: tuple[Config, ...] = ((1024, 4), (512, 2), (256, 2), (256, 1), (128, 1))
_REPEATS = 5
_chosen: dict[Hashable, Config] = {}


def launch_shape(
    queries: int, samples: int, channels: int, config: Config = DEFAULT
) -> dict[str, int]:
    """BLOCK_Q, BLOCK_LP, BLOCK_D and num_warps for Lq queries, L*P samples, D channels.

    ``samples`` and ``channels`` are at least 1 (the callers launch nothing otherwise).
    """
    tile, per_thread = config
    block_lp = triton.next_power_of_2(samples)
    block_d = min(triton.next_power_of_2(channels), 32, max(1, tile // block_lp))
    block_q = max(1, min(triton.next_power_of_2(max(queries, 1)), tile // (block_lp * block_d)))
    warps = max(1, min(8, block_q * block_lp * block_d // (32 * per_thread)))
    return {"BLOCK_Q": block_q, "BLOCK_LP": block_lp, "BLOCK_D": block_d, "num_warps": warps}


def tuning_enabled(device: torch.device, interpreted: bool) -> bool:
    """Whether a first call on ``device`` times the candidates (see the module docstring)."""
    if device.type != "cuda" or interpreted:
        return False
    if os.environ.get("MSDA_OPS_TRITON_AUTOTUNE", "1").strip() == "0":
        return False
    return not torch.cuda.is_current_stream_capturing()


def cuda_time(run: Callable[[], object]) -> float:
    """Median milliseconds of ``run`` on the current stream, after one warm-up run."""
    run()
    times = []
    for _ in range(_REPEATS):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def choose(
    key: Hashable,
    run: Callable[[Config], object],
    enabled: bool,
    timer: Callable[[Callable[[], object]], float] = cuda_time,
) -> Config:
    """The config for ``key``: the fastest of :data:`CONFIGS` by ``timer``, found once.

    ``run(config)`` launches the kernel with that config into scratch outputs. A config that
    fails to launch (e.g. out of resources on this GPU) is skipped; :data:`DEFAULT` when
    none runs or when ``enabled`` is false (then nothing is remembered).
    """
    if key in _chosen:
        return _chosen[key]
    if not enabled:
        return DEFAULT
    times: dict[Config, float] = {}
    for config in CONFIGS:
        try:
            times[config] = timer(functools.partial(run, config))
        except Exception:  # a shape this GPU cannot run (e.g. out of resources): skip it
            continue
    best = min(times, key=times.__getitem__) if times else DEFAULT
    _chosen[key] = best
    return best

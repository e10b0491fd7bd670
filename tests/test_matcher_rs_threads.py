"""matcher_rs under threads (issue 28): costs written by another thread while they are
solved, and bounded worker threads whatever ``n_threads`` asks for.

The writer only ever changes entries outside one optimal assignment (found by scipy on the
original matrix), and only for the worse (larger when minimising, smaller when maximising,
or forbidden), or to NaN. Any mix of old and new values the solver may see then has the
same optimal total as the original, or contains NaN: the only correct outcomes are an
assignment of that total or scipy's "invalid numeric entries" error (when NaN was written).
Before the fix the solver read the array in place with the GIL released and panicked
("internal error", a Rust backtrace on stderr) or called the matrix infeasible.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment as scipy_lsa

from matcher_rs import linear_sum_assignment, linear_sum_assignment_batch

INVALID = "matrix contains invalid numeric entries"


def _problem(
    seed: int, shape: tuple[int, int], dtype: str, layout: str, maximize: bool
) -> tuple[np.ndarray, float, np.ndarray]:
    """An integer-valued matrix (exact in float32), scipy's optimal total, and a mask of
    the entries outside scipy's optimal assignment (those the writer may change)."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 1000, size=shape).astype(np.float64)
    rows, cols = scipy_lsa(values, maximize)
    off = np.ones(shape, dtype=bool)
    off[rows, cols] = False
    cost = values.astype(dtype)
    if layout == "F":
        cost = np.asfortranarray(cost)
    return cost, float(values[rows, cols].sum()), off


def _worse(cost: np.ndarray, off: np.ndarray, maximize: bool, nan: bool, seed: int):
    """Endless new contents for ``cost``: its entries outside the optimum made worse (a
    cycle of a few drawn in advance, so the writer spends its time writing)."""
    rng = np.random.default_rng(seed)
    sign = -1.0 if maximize else 1.0
    forbidden = -np.inf if maximize else np.inf
    drawn = []
    for k in range(4):
        new = cost + sign * rng.integers(1, 500, size=cost.shape).astype(cost.dtype)
        new[rng.random(cost.shape) < 0.05] = forbidden
        if nan and k == 3:
            new[rng.random(cost.shape) < 0.01] = np.nan
        drawn.append(np.where(off, new, cost).astype(cost.dtype))
    return itertools.cycle(drawn)


@contextmanager
def _writing(targets: list[tuple[np.ndarray, Iterator[np.ndarray]]]) -> Iterator[None]:
    """Keep writing into every target (bulk copies and single elements) until the block ends."""
    stop = threading.Event()

    def run() -> None:
        rng = np.random.default_rng(0)
        while not stop.is_set():
            for arr, contents in targets:
                new = next(contents)
                np.copyto(arr, new)  # numpy releases the GIL for large copies
                for _ in range(20):  # and element writes, each between two bytecodes
                    i, j = rng.integers(0, arr.shape[0]), rng.integers(0, arr.shape[1])
                    arr[i, j] = new[i, j]

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # hand the GIL over often, to interleave as much as possible
    writer = threading.Thread(target=run)
    writer.start()
    try:
        yield
    finally:
        stop.set()
        writer.join()
        sys.setswitchinterval(old)


def _check(outcome: Callable[[], tuple[np.ndarray, np.ndarray]], want: float, original, nan):
    try:
        rows, cols = outcome()
    except ValueError as err:
        assert nan and str(err).endswith(INVALID), err
        return
    n, m = original.shape
    assert len(rows) == len(cols) == min(n, m)
    assert np.all(np.diff(rows) > 0) and len(set(cols.tolist())) == len(cols)
    assert float(original[rows, cols].astype(np.float64).sum()) == want


SHAPES = st.sampled_from([(120, 120), (80, 150), (150, 80), (200, 200)])
# Large enough for a solve to span many hand-overs of the GIL.
BIG_SHAPES = st.sampled_from([(400, 400), (300, 500), (500, 300)])


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    seed=st.integers(0, 2**32 - 1),
    shape=BIG_SHAPES,
    dtype=st.sampled_from(["float32", "float64"]),
    layout=st.sampled_from(["C", "F"]),
    maximize=st.booleans(),
    nan=st.booleans(),
)
def test_single_solve_under_concurrent_writes(capfd, seed, shape, dtype, layout, maximize, nan):
    cost, want, off = _problem(seed, shape, dtype, layout, maximize)
    original = cost.copy()
    with _writing([(cost, _worse(original, off, maximize, nan, seed))]):
        for _ in range(8):
            _check(lambda: linear_sum_assignment(cost, maximize), want, original, nan)
    assert capfd.readouterr().err == ""


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    seed=st.integers(0, 2**32 - 1),
    shape=SHAPES,
    dtype=st.sampled_from(["float32", "float64"]),
    padded=st.booleans(),
    maximize=st.booleans(),
    nan=st.booleans(),
)
def test_batch_solve_under_concurrent_writes(capfd, seed, shape, dtype, padded, maximize, nan):
    problems = [_problem(seed + k, shape, dtype, "C", maximize) for k in range(4)]
    originals = [cost.copy() for cost, _, _ in problems]
    costs = np.stack(originals) if padded else [cost for cost, _, _ in problems]
    targets = [
        (costs[k], _worse(originals[k], p[2], maximize, nan, k)) for k, p in enumerate(problems)
    ]
    with _writing(targets):
        for _ in range(4):
            try:
                # Enough work for the parallel path: items are solved on pool workers.
                got = linear_sum_assignment_batch(costs, maximize, n_threads=2)
            except ValueError as err:
                assert nan and str(err).endswith(INVALID), err
                continue
            for (rows, cols), original, (_, want, _) in zip(got, originals, problems, strict=True):
                _check(lambda rows=rows, cols=cols: (rows, cols), want, original, nan)
    assert capfd.readouterr().err == ""


def _thread_count() -> int:
    """Threads of this process, as the kernel counts them."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))


needs_proc = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="counts threads through Linux /proc"
)


def _batch(count: int) -> tuple[list[np.ndarray], list[float]]:
    """Matrices with enough work for the parallel path, and scipy's optimal totals."""
    rng = np.random.default_rng(5)
    costs = [rng.random((120, 120)) for _ in range(count)]
    return costs, [float(c[scipy_lsa(c)].sum()) for c in costs]


def _totals(got: list[tuple[np.ndarray, np.ndarray]], costs: list[np.ndarray]) -> list[float]:
    return [float(c[rows, cols].sum()) for (rows, cols), c in zip(got, costs, strict=True)]


@needs_proc
def test_distinct_n_threads_start_no_new_threads():
    # Before the fix each distinct n_threads built and kept its own pool (37 values, 703
    # threads); now every batch shares rayon's one pool and n_threads caps its tasks.
    costs, want = _batch(40)
    assert _totals(linear_sum_assignment_batch(costs), costs) == pytest.approx(want)
    before = _thread_count()
    for n in range(1, 38):
        assert _totals(linear_sum_assignment_batch(costs, n_threads=n), costs) == pytest.approx(
            want
        )
    assert _thread_count() <= before


@needs_proc
@pytest.mark.parametrize("n_threads", [10**6, 2**63, 10**30])
def test_huge_n_threads_is_clamped(n_threads):
    costs, want = _batch(8)
    linear_sum_assignment_batch(costs)
    before = _thread_count()
    got = linear_sum_assignment_batch(costs, n_threads=n_threads)
    assert _totals(got, costs) == pytest.approx(want)
    assert _thread_count() <= max(before, (os.cpu_count() or 1) + 2)

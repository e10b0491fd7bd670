"""Square LSAP, one thread: matcher_rs against scipy, lap and laprust on five kinds of matrix.

Part of ``bench_matcher.py``. Every contender solves the same matrix, in turn, within each
repeat (interleaved, the order rotated), so a loaded machine slows them alike; each call is
timed in wall time and in the calling thread's CPU time, after one untimed warm-up call
each. All five run on the calling thread, so thread CPU time is the comparison that a shared, loaded machine does not distort
(preemption stops the clock); wall time is recorded beside it. Ratios are of medians.

Kinds: ``uniform`` (U[0, 1)), ``integer`` (integers in [0, n)), ``ties`` (integers in
[0, 8): many ties), ``detr`` (a DETR-like cost: 5 x L1 distance between jittered boxes
minus the matched class's probability) and ``lowrank`` (rank 3, U[0, 1) factors; the
anchors take minutes beyond n = 1000 there, so it stops at 1000). A float32 entry hands
every contender the float32 array (scipy, lap convert it to float64 themselves).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment as scipy_lsa

import matcher_rs
from matcher_rs import _core

KINDS = ("uniform", "integer", "ties", "detr", "lowrank")
MAX_SIZE = {"lowrank": 1000}
ANCHORS = ("scipy", "lap", "laprust")
TARGET = 1.2  # matcher_rs must be this much faster than every anchor (issue 27)


def make_cost(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """An ``(n, n)`` float64 cost matrix of the given kind."""
    if kind == "uniform":
        return rng.random((n, n))
    if kind == "integer":
        return rng.integers(0, n, (n, n)).astype(np.float64)
    if kind == "ties":
        return rng.integers(0, 8, (n, n)).astype(np.float64)
    if kind == "lowrank":
        return rng.random((n, 3)) @ rng.random((3, n))
    if kind == "detr":
        targets = rng.random((n, 4)) * 0.5 + 0.25
        preds = targets[rng.permutation(n)] + rng.normal(0.0, 0.05, (n, 4))
        cost = np.zeros((n, n))
        for k in range(4):  # L1 distance, one coordinate at a time (no (n, n, 4) array)
            cost += np.abs(preds[:, None, k] - targets[None, :, k])
        prob = rng.dirichlet(np.ones(91), size=n)  # class probabilities per prediction
        labels = rng.integers(0, 91, n)
        return 5.0 * cost - prob[:, labels]
    raise ValueError(f"unknown kind {kind!r}")


def _solvers(lap: Any, laprust: Any) -> dict[str, Callable[[np.ndarray], Any]]:
    """Single-matrix solvers by name; ``matcher_rs_noavx`` is matcher_rs with AVX off."""

    def noavx(c: np.ndarray) -> Any:
        previous = _core._set_avx(False)
        try:
            return matcher_rs.linear_sum_assignment(c)
        finally:
            _core._set_avx(previous)

    out: dict[str, Callable[[np.ndarray], Any]] = {
        "scipy": scipy_lsa,
        "matcher_rs": matcher_rs.linear_sum_assignment,
        "matcher_rs_noavx": noavx,
    }
    if lap is not None:
        out["lap"] = lambda c: lap.lapjv(c, return_cost=False)
    if laprust is not None:
        out["laprust"] = lambda c: laprust.lapjv(c, return_cost=False)
    return out


def _total(name: str, cost: np.ndarray, result: Any) -> float:
    if name == "lap":  # (x, y): x[i] is the column of row i
        x = np.asarray(result[0])
        return float(cost[np.arange(len(x)), x].sum())
    return float(cost[result[0], result[1]].sum())


def time_call(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """One call of ``fn``: (wall seconds, thread CPU seconds, its result)."""
    wall, cpu = time.perf_counter(), time.thread_time()
    out = fn()
    return time.perf_counter() - wall, time.thread_time() - cpu, out


def bench(sizes: list[int], lap: Any, laprust: Any, kinds: tuple[str, ...] = KINDS) -> list[dict]:
    """One entry per (kind, dtype, n): medians of wall and thread-CPU seconds, ratios."""
    rows = []
    solvers = _solvers(lap, laprust)
    for kind in kinds:
        for n in [s for s in sizes if s <= MAX_SIZE.get(kind, s)]:
            base = make_cost(kind, n, np.random.default_rng(n))
            for dtype in ("float64", "float32"):
                cost = base.astype(dtype)
                exact = cost.astype(np.float64)
                want = float(exact[scipy_lsa(exact)].sum())
                repeats = 21 if n <= 100 else 11 if n <= 300 else 5 if n <= 1000 else 3
                repeats = 3 if kind == "lowrank" and n >= 1000 else repeats
                repeats = 1 if n >= 4000 else repeats
                wall: dict[str, list[float]] = {name: [] for name in solvers}
                cpu: dict[str, list[float]] = {name: [] for name in solvers}
                names = list(solvers)
                # One untimed call each first: every contender starts warm (matcher_rs's
                # binding grows its reusable copy buffer on a first large call, 0.1-0.3 s for
                # 128 MB at 4000 float64 on this VM, which a training loop pays once).
                for name in names:
                    solvers[name](cost)
                # A fresh order each repeat: which solver ran just before (and left its data
                # in the caches) changes, so no contender always follows the same one.
                order = np.random.default_rng([n, repeats])
                for _ in range(repeats):
                    for name in order.permutation(names).tolist():
                        w, c, out = time_call(lambda name=name, cost=cost: solvers[name](cost))
                        got = _total(name, exact, out)
                        tol = (1e-4 if dtype == "float32" else 1e-9) * max(1.0, abs(want))
                        assert abs(got - want) <= tol, (kind, n, dtype, name, got, want)
                        wall[name].append(w)
                        cpu[name].append(c)
                entry: dict[str, Any] = {"kind": kind, "n": n, "dtype": dtype, "repeats": repeats}
                for name in solvers:
                    entry[f"{name}_s"] = float(np.median(cpu[name]))
                    entry[f"{name}_wall_s"] = float(np.median(wall[name]))
                ours = entry["matcher_rs_s"]
                for anchor in ANCHORS:
                    if f"{anchor}_s" in entry:
                        entry[f"speedup_vs_{anchor}"] = entry[f"{anchor}_s"] / ours
                entry["avx_speedup"] = entry["matcher_rs_noavx_s"] / ours
                entry["meets_target"] = all(
                    entry[f"speedup_vs_{a}"] >= TARGET for a in ANCHORS if f"{a}_s" in entry
                )
                rows.append(entry)
                print(
                    f"{kind:8s} {n:5d} {dtype}: "
                    + "  ".join(f"{k} {entry[f'{k}_s'] * 1e3:8.2f}" for k in solvers)
                    + " ms CPU; x"
                    + " x".join(
                        f"{entry[f'speedup_vs_{a}']:.2f} {a}" for a in ANCHORS if f"{a}_s" in entry
                    )
                    + f"; AVX x{entry['avx_speedup']:.2f}",
                    flush=True,
                )
    return rows


def summary(rows: list[dict]) -> dict[str, Any]:
    """Where matcher_rs reaches the target against every anchor, and where not."""
    key = [f"{r['kind']} {r['n']} {r['dtype']}" for r in rows]
    return {
        "target": f"matcher_rs >= {TARGET}x every anchor, thread CPU time",
        "met": [k for k, r in zip(key, rows, strict=True) if r["meets_target"]],
        "missed": [k for k, r in zip(key, rows, strict=True) if not r["meets_target"]],
    }


def plot(rows: list[dict], path: Path) -> bool:
    """Seconds against n, one panel per kind and dtype, one line per solver."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return False
    kinds = [k for k in KINDS if any(r["kind"] == k for r in rows)]
    fig, axes = plt.subplots(len(kinds), 2, figsize=(10, 3 * len(kinds)), squeeze=False)
    for i, kind in enumerate(kinds):
        for j, dtype in enumerate(("float64", "float32")):
            ax = axes[i][j]
            sel = [r for r in rows if r["kind"] == kind and r["dtype"] == dtype]
            sizes = [r["n"] for r in sel]
            for name in [k[:-2] for k in sel[0] if k.endswith("_s") and not k.endswith("wall_s")]:
                ax.plot(sizes, [r[f"{name}_s"] for r in sel], marker="o", label=name)
            ax.set(xscale="log", yscale="log", title=f"{kind}, {dtype}")
            ax.set(xlabel="n (n x n)", ylabel="thread CPU seconds")
    axes[0][0].legend(fontsize="small")
    fig.suptitle("linear sum assignment, 1 thread (median thread CPU time)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True

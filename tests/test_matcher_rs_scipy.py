"""Property tests of matcher_rs's public entry points against scipy and an exact oracle.

Random shapes (empty and rectangular both ways), dtypes, memory layouts, containers,
special values and argument types. Every case must either raise the exception type scipy
raises (the same message for the solver's own errors) or return an assignment whose exact
total is optimal up to rounding, rows ascending. The oracle is exhaustive search in exact
rational arithmetic, not scipy's answer: near the float64 maximum scipy's own sums overflow
and it can return a non-optimal assignment or call a feasible matrix infeasible (counted
as hypothesis events: run with ``--hypothesis-show-statistics``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment as scipy_lsa

from matcher_rs import linear_sum_assignment, linear_sum_assignment_batch

# Casting huge float64 values to float32/float16 overflows to inf on purpose; complex
# arrays inside lists lose their imaginary part in numpy's conversion, for both libraries.
pytestmark = [
    pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore::numpy.exceptions.ComplexWarning"),
]

MAX = float(np.finfo(np.float64).max)
INVALID = "matrix contains invalid numeric entries"
INFEASIBLE = "cost matrix is infeasible"

DTYPES = ["float64", "float32", "float16", ">f8", ">f4", "int8", "int32", "int64", "uint8"]
DTYPES += ["uint64", "bool", "complex128", "object"]
LAYOUTS = ["C", "F", "T", "strided", "negative", "unaligned", "broadcast"]
CONTAINERS = ["ndarray", "ndarray", "list", "tuple", "torch", "str", "fraction", "memoryview"]
MAXIMIZE = [False, True, 0, 1, None, 1.0, "", "yes", np.bool_(True), np.array(1.0)]
TORCH_DTYPES = {"float64", "float32", "float16", "int8", "int32", "int64", "uint8", "bool"}


@dataclass
class Case:
    obj: Any  # what both solvers are given
    values: np.ndarray  # the float64 values they should see
    single: bool  # solved natively in float32


def _floats(kind: str) -> st.SearchStrategy[float]:
    small = st.integers(-20, 20).map(float)
    if kind == "ints":
        return small
    if kind == "reals":
        return st.floats(-1e3, 1e3)
    huge = st.one_of(st.floats(-1.0, 1.0).map(lambda u: u * MAX), st.sampled_from([MAX, -MAX]))
    if kind == "huge":
        return huge
    return st.one_of(huge, small, st.sampled_from([1e-300, -5e-324, 1e300, 0.5]))  # mixed


@st.composite
def cases(draw: st.DrawFn, max_side: int = 5) -> Case:
    r, c = draw(st.integers(0, max_side)), draw(st.integers(0, max_side))
    dtype = draw(st.sampled_from(DTYPES))
    if dtype in ("int8", "int32", "int64", "uint8", "uint64"):
        info = np.iinfo(dtype)
        ints = st.one_of(
            st.integers(max(-20, int(info.min)), 20), st.integers(int(info.min), int(info.max))
        )
        base = np.array(draw(st.lists(ints, min_size=r * c, max_size=r * c)), dtype=dtype)
    elif dtype == "bool":
        base = np.array(draw(st.lists(st.booleans(), min_size=r * c, max_size=r * c)))
    else:
        kind = draw(st.sampled_from(["ints", "reals", "huge", "mixed"]))
        special = st.sampled_from([np.inf, np.inf, -np.inf, np.nan])
        entry = st.one_of(_floats(kind), _floats(kind), _floats(kind), special)
        values = draw(st.lists(entry, min_size=r * c, max_size=r * c))
        base = np.array(values, dtype=np.float64)
        event(f"values: {kind}")
        base = base.astype(object) if dtype == "object" else base.astype(dtype)
    a = base.reshape(r, c)
    layout = draw(st.sampled_from(LAYOUTS))
    if dtype == "object" and layout == "unaligned":
        layout = "C"
    view = _layout(a, layout)
    container = draw(st.sampled_from(CONTAINERS))
    if container == "torch" and (dtype not in TORCH_DTYPES or layout == "negative"):
        container = "ndarray"
    if container == "memoryview" and dtype == "object":
        container = "ndarray"
    event(f"dtype {dtype}, container {container}")
    obj = _contain(view, container)
    # Complex costs only ever solve when empty; their values matter then only by shape.
    values = np.asarray(view).real.astype(np.float64)
    single = dtype == "float32" and container in ("ndarray", "torch", "memoryview")
    return Case(obj, values, single)


def _layout(a: np.ndarray, layout: str) -> np.ndarray:
    r, c = a.shape
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "T":
        return a.T.copy().T
    if layout == "strided":
        b = np.zeros((r, 2 * c), dtype=a.dtype)
        b[:, ::2] = a
        return b[:, ::2]
    if layout == "negative":
        return a[::-1, ::-1].copy()[::-1, ::-1]
    if layout == "unaligned":
        buf = bytearray(a.nbytes + 1)
        u = np.frombuffer(buf, dtype=a.dtype, offset=1, count=a.size).reshape(r, c)
        u[...] = a
        return u
    if layout == "broadcast" and r > 0:
        return np.broadcast_to(a[:1], (r, c))
    return a


def _contain(view: np.ndarray, container: str) -> Any:
    if container == "list":
        return view.tolist()
    if container == "tuple":
        return tuple(tuple(row) for row in view.tolist())
    if container == "torch":
        return torch.from_numpy(view if view.flags.writeable else view.copy())
    if container == "str" and view.dtype.kind == "f":
        return [[repr(float(x)) for x in row] for row in view.tolist()]
    if container == "fraction" and view.dtype.kind == "f":
        return [[Fraction(x) if np.isfinite(x) else x for x in row] for row in view.tolist()]
    if container == "memoryview" and view.dtype.kind in "fiub" and view.dtype.isnative:
        return memoryview(np.ascontiguousarray(view))
    return view


ERRORS = (ValueError, TypeError, OverflowError, MemoryError)


def _outcome(fn: Any, *args: Any) -> tuple[Any, ...]:
    """``("ok", rows, cols)`` or ``("error", type, message)`` of a single solve."""
    try:
        rows, cols = fn(*args)
    except ERRORS as err:
        return ("error", type(err), str(err))
    return ("ok", rows, cols)


def _batch_outcome(fn: Any) -> tuple[Any, ...]:
    """``("ok", results)`` or ``("error", type, message)`` of a batch solve."""
    try:
        return ("ok", fn())
    except ERRORS as err:
        return ("error", type(err), str(err))


def _optimum(values: np.ndarray, maximize: bool) -> str | Fraction:
    """The exact optimal total, or the error scipy's contract prescribes."""
    bad = np.inf if maximize else -np.inf
    if np.isnan(values).any() or (values == bad).any():
        return INVALID
    n, m = values.shape
    c = values if n <= m else values.T
    forbidden = -np.inf if maximize else np.inf
    exact = [[Fraction(float(x)) if x != forbidden else None for x in row] for row in c]
    best: Fraction | None = None
    for p in itertools.permutations(range(max(n, m)), min(n, m)):
        picks = [exact[i][j] for i, j in enumerate(p)]
        if any(x is None for x in picks):
            continue
        total = sum(picks, Fraction(0))
        if best is None or (total > best if maximize else total < best):
            best = total
    return INFEASIBLE if best is None else best


def _check_assignment(values, rows, cols, maximize, optimum, single) -> bool:
    """Valid, rows ascending, and optimal up to rounding (False if only the total is off)."""
    n, m = values.shape
    assert rows.dtype == cols.dtype == np.int64
    assert len(rows) == len(cols) == min(n, m)
    assert np.all(np.diff(rows) > 0) and len(set(cols.tolist())) == len(cols)
    assert np.all((rows >= 0) & (rows < n)) and np.all((cols >= 0) & (cols < m))
    total = sum(
        (Fraction(float(values[i, j])) for i, j in zip(rows, cols, strict=True)), Fraction(0)
    )
    finite = np.abs(values[np.isfinite(values)])
    largest = Fraction(float(finite.max())) if finite.size else Fraction(0)
    tol = largest * min(n, m) * Fraction(1, 2**18 if single else 2**40)
    return abs(total - optimum) <= tol


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(cases(), st.sampled_from(MAXIMIZE))
def test_single_matches_scipy_and_exact_optimum(case, maximize):
    want = _outcome(scipy_lsa, case.obj, maximize)
    got = _outcome(linear_sum_assignment, case.obj, maximize)
    flag = bool(maximize)
    optimum = _optimum(case.values, flag)
    if want[0] == "error" and want[1:] == (ValueError, INFEASIBLE) and optimum != INFEASIBLE:
        event("scipy defect: a feasible matrix called infeasible")
        want = ("ok",)
    if want[0] == "error":
        event(f"error {want[1].__name__}")
        assert got[0] == "error", f"scipy raised {want[1:]}, matcher_rs returned {got}"
        assert got[1] is want[1], (got, want)
        if want[2] in (INVALID, INFEASIBLE):
            assert got[2] == want[2]
            assert optimum == want[2]
        return
    assert got[0] == "ok", f"scipy solved it, matcher_rs raised {got[1:]}"
    assert isinstance(optimum, Fraction)
    assert _check_assignment(case.values, got[1], got[2], flag, optimum, case.single)
    if len(want) == 3 and not _check_assignment(case.values, *want[1:], flag, optimum, False):
        event("scipy defect: a non-optimal assignment")
    event("solved")


def _expected_batch_error(singles: list[tuple[Any, ...]]) -> tuple[Any, ...] | None:
    """The batch's error: the first item that fails to convert, else the first that fails
    to solve (conversions all happen before any solve)."""
    solver = (INVALID, INFEASIBLE)
    failed = [(k, o) for k, o in enumerate(singles) if o[0] == "error"]
    conversion = [(k, o) for k, o in failed if o[2] not in solver]
    for k, o in conversion or failed:
        return ("error", o[1], f"batch item {k}: {o[2]}")
    return None


THREADS = [None, None, 1, 2, 3, np.int64(2), 0, -1, 1.5, "2", True]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(cases(max_side=12), max_size=6),
    st.sampled_from(MAXIMIZE),
    st.sampled_from(THREADS),
    st.sampled_from([list, tuple, iter]),
)
def test_batch_list_matches_single_solves(items, maximize, n_threads, wrap):
    got = _batch_outcome(
        lambda: linear_sum_assignment_batch(wrap([c.obj for c in items]), maximize, n_threads)
    )
    if n_threads is not None and (isinstance(n_threads, (bool, float, str)) or int(n_threads) <= 0):
        bad = TypeError if isinstance(n_threads, (bool, float, str)) else ValueError
        assert got[:2] == ("error", bad) and "n_threads must be a positive integer" in got[2]
        return
    singles = [_outcome(linear_sum_assignment, c.obj, maximize) for c in items]
    expected = _expected_batch_error(singles)
    if expected is not None:
        event("batch error")
        assert got == expected
        return
    assert got[0] == "ok" and len(got[1]) == len(items)
    for (rows, cols), single in zip(got[1], singles, strict=True):
        assert rows.tolist() == single[1].tolist() and cols.tolist() == single[2].tolist()
    event("batch solved")


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_padded_batch_matches_scipy_per_item(data):
    b, r, c = (
        data.draw(st.integers(0, 5)),
        data.draw(st.integers(0, 7)),
        data.draw(st.integers(0, 7)),
    )
    dtype = data.draw(st.sampled_from(["float64", "float32", "int64", "float16"]))
    values = data.draw(
        st.lists(
            st.one_of(st.integers(-20, 20).map(float), st.just(np.inf)),
            min_size=b * r * c,
            max_size=b * r * c,
        )
    )
    padded = np.array(values, dtype=np.float64).reshape(b, r, c)
    rows = data.draw(st.lists(st.integers(0, r), min_size=b, max_size=b))
    cols = data.draw(st.lists(st.integers(0, c), min_size=b, max_size=b))
    for k in range(b):
        padded[k, rows[k] :, :] = np.nan  # padding is never read
        padded[k, :, cols[k] :] = np.nan
    if dtype == "int64":
        padded = np.nan_to_num(padded, nan=7, posinf=9).astype(np.int64)
    else:
        padded = padded.astype(dtype)
    container = data.draw(st.sampled_from(["ndarray", "torch", "transposed"]))
    obj: Any = padded
    if container == "torch":
        obj = torch.from_numpy(padded)
    elif container == "transposed":
        obj = padded.transpose(0, 2, 1).copy().transpose(0, 2, 1)
    size_kind = data.draw(st.sampled_from([list, np.array, torch.tensor, tuple]))
    got = _batch_outcome(
        lambda: linear_sum_assignment_batch(obj, n_rows=size_kind(rows), n_cols=size_kind(cols))
    )
    singles = [_outcome(scipy_lsa, padded[k, : rows[k], : cols[k]]) for k in range(b)]
    expected = _expected_batch_error(singles)
    if expected is not None:
        assert got[:2] == expected[:2] and got[2] == expected[2]
        return
    assert got[0] == "ok"
    single = dtype == "float32"
    for k, ((rr, cc), want) in enumerate(zip(got[1], singles, strict=True)):
        block = padded[k, : rows[k], : cols[k]].astype(np.float64)
        optimum = _optimum(block, False)
        assert isinstance(optimum, Fraction)
        assert _check_assignment(block, rr, cc, False, optimum, single)
        assert rr.tolist() == sorted(rr.tolist()) and len(want[1]) == len(rr)


@pytest.mark.parametrize("shape", [(0, 0), (0, 4), (4, 0), (3, 8), (8, 3), (1, 5), (5, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.bool_])
def test_shapes_and_dtypes_match_scipy_exactly(shape, dtype):
    # Unique optimum (distinct powers of two), so the assignment itself must match.
    rng = np.random.default_rng(sum(shape))
    cost = (2.0 ** rng.permutation(max(1, shape[0] * shape[1]))[: shape[0] * shape[1]]).reshape(
        shape
    )
    cost = cost.astype(dtype) if dtype is not np.bool_ else cost == cost.max(initial=0)
    for maximize in (False, True):
        want = scipy_lsa(cost, maximize)
        got = linear_sum_assignment(cost, maximize)
        if dtype is np.bool_:  # ties: compare totals
            assert cost[got].sum() == cost[want].sum()
        else:
            assert [a.tolist() for a in got] == [a.tolist() for a in want]

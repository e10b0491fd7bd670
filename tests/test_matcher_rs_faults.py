"""matcher_rs on the bad inputs and faults of issue 15, each against scipy or an exact oracle."""

from __future__ import annotations

import itertools
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment as scipy_lsa

import matcher_rs
from matcher_rs import _core, linear_sum_assignment, linear_sum_assignment_batch

MAX = np.finfo(np.float64).max


def _exact_optimum(cost: np.ndarray, maximize: bool = False) -> Fraction:
    """The best total over every complete assignment, summed exactly (finite costs)."""
    n, m = cost.shape
    c = cost if n <= m else cost.T
    totals = (
        sum((Fraction(float(c[i, j])) for i, j in enumerate(p)), Fraction(0))
        for p in itertools.permutations(range(max(n, m)), min(n, m))
    )
    return max(totals) if maximize else min(totals)


def _exact_total(cost: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> Fraction:
    return sum((Fraction(float(cost[i, j])) for i, j in zip(rows, cols, strict=True)), Fraction(0))


# Costs whose sums overflow float64: the first is the issue's example (scipy: [1, 0]);
# on the second, found by random search, the old solver said "infeasible" and scipy 1.17
# returns a non-optimal assignment, so the exact optimum is the oracle.
HUGE = [
    np.array([[1.6e308, -1.45e308], [8.7e307, -1.4e308]]),
    np.array(
        [
            [-7.012601676675341e307, -1.284304064778573e308, 1.267557864883568e308],
            [-MAX, -MAX, 6.3839377558322e307],
            [-MAX, -MAX, 8.937316190795758e307],
        ]
    ),
    np.array([[MAX, -MAX, MAX], [-MAX, MAX, -MAX]]),
]


@pytest.mark.parametrize("k", range(len(HUGE)))
@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("transpose", [False, True])
def test_huge_costs_are_solved_optimally(k, maximize, transpose):
    cost = HUGE[k].T if transpose else HUGE[k]
    rows, cols = linear_sum_assignment(cost, maximize)
    assert rows.tolist() == sorted(rows.tolist()) and len(set(cols.tolist())) == len(cols)
    assert _exact_total(cost, rows, cols) == _exact_optimum(cost, maximize)
    # The same through both batch paths (list and padded) and in float32 near its maximum.
    got = linear_sum_assignment_batch([cost, cost], maximize)
    assert all(_exact_total(cost, r, c) == _exact_optimum(cost, maximize) for r, c in got)
    (r, c), _ = linear_sum_assignment_batch(np.stack([cost, cost]), maximize)
    assert _exact_total(cost, r, c) == _exact_optimum(cost, maximize)
    c32 = (cost / MAX * np.finfo(np.float32).max).astype(np.float32)
    r, c = linear_sum_assignment(c32, maximize)
    assert _exact_total(c32, r, c) == _exact_optimum(c32, maximize)


def test_issue_example_matches_scipy():
    assert [a.tolist() for a in linear_sum_assignment(HUGE[0])] == [[0, 1], [1, 0]]
    assert [a.tolist() for a in scipy_lsa(HUGE[0])] == [[0, 1], [1, 0]]


def _broadcast(shape):
    return np.broadcast_to(1.0, shape)  # no memory behind it: solving needs a copy


@pytest.mark.parametrize("shape", [(10**10, 3), (3, 10**10)])
def test_allocation_failure_is_memory_error(shape):
    with pytest.raises(MemoryError):
        scipy_lsa(_broadcast(shape))
    with pytest.raises(MemoryError, match=r"cannot allocate .* 10000000000"):
        linear_sum_assignment(_broadcast(shape))
    with pytest.raises(MemoryError, match="batch item 1: cannot allocate"):
        linear_sum_assignment_batch([np.eye(2), _broadcast(shape)], n_threads=1)
    # Enough estimated work to take the parallel path.
    with pytest.raises(MemoryError, match="batch item 0: cannot allocate"):
        linear_sum_assignment_batch([_broadcast(shape)] * 3, n_threads=2)
    with pytest.raises(MemoryError, match="batch item 0: cannot allocate"):
        linear_sum_assignment_batch(np.broadcast_to(1.0, (2, *shape)))


@pytest.mark.parametrize("on_worker", [False, True])
def test_a_panic_is_a_runtime_error_not_a_base_exception(on_worker, capfd, monkeypatch):
    # Every panic would be a bug; the guard must still turn it into an Exception, and
    # print nothing (Rust's default hook writes the message, and with RUST_BACKTRACE set
    # a backtrace of some thirty lines, to the user's stderr).
    monkeypatch.setenv("RUST_BACKTRACE", "1")
    try:
        _core._panic_for_tests(on_worker)
    except Exception as err:  # a PanicException would fly past this clause
        assert type(err) is RuntimeError
        assert "matcher_rs internal error (a bug" in str(err) and "test panic" in str(err)
        if not on_worker:  # the location is known on the thread that panicked
            assert "src/lib.rs:" in str(err)
    else:
        pytest.fail("no exception")
    assert capfd.readouterr().err == ""
    # The thread-local solvers and the pool still work afterwards.
    got = linear_sum_assignment_batch([1 - np.eye(300)] * 4, n_threads=2)
    assert all(cols.tolist() == list(range(300)) for _, cols in got)


@pytest.mark.parametrize("maximize", [1, 0, None, 1.0, 0.0, "", "yes", np.bool_(True), [1]])
def test_maximize_takes_any_truthy_value(maximize):
    cost = np.array([[1.0, 2.0], [3.0, 5.0]])
    want = [a.tolist() for a in scipy_lsa(cost, maximize)]
    assert [a.tolist() for a in linear_sum_assignment(cost, maximize)] == want
    assert [a.tolist() for a in linear_sum_assignment_batch([cost], maximize)[0]] == want


def test_maximize_without_a_truth_value_raises_as_scipy():
    for bad in (np.array([1, 0]), np.array([])):
        with pytest.raises(ValueError, match="truth value"):
            scipy_lsa(np.eye(2), bad)
        with pytest.raises(ValueError, match="truth value"):
            linear_sum_assignment(np.eye(2), bad)


@pytest.mark.parametrize(
    "cost",
    [
        [[2**70, 1], [1, 2]],
        [["1", "2"], ["3", "0.5"]],
        [["inf", "1"], ["2", "1e3"]],
        [[Fraction(1, 3), 1], [1, Fraction(2, 7)]],
        [[Decimal("1.5"), 1], [1, Decimal("-2.25")]],
        ((1, 2), (3, 4)),
        [np.array([1j, 1]), np.array([1, 2])],  # arrays inside a list convert element-wise too
        [[1.0, None], [2.0, 3.0]],  # None is NaN: invalid entries
        [["1", "x"], ["2", "3"]],
        [[2**1100, 1], [1, 2]],
        [[1j, 1], [1, 2]],
        np.array([[1, 2], [3, 4]], dtype=object),
        np.ones((2, 2), dtype=complex),
        np.array([["1", "2"], ["3", "4"]]),
        np.eye(3).astype(">f8"),
        np.eye(3).astype(np.longdouble),
        [[1, 2], [3]],
        "abc",
        None,
    ],
    ids=lambda c: type(c).__name__,
)
@pytest.mark.filterwarnings("ignore::numpy.exceptions.ComplexWarning")
def test_conversions_match_scipy(cost):
    def outcome(fn):
        try:
            rows, cols = fn(cost)
        except (ValueError, TypeError, OverflowError) as err:
            return type(err)
        return np.asarray(cost, dtype=np.float64)[rows, cols].sum()

    assert outcome(linear_sum_assignment) == outcome(scipy_lsa)


def test_unaligned_array_is_copied():
    buf = bytearray(8 * 6 + 1)
    cost = np.frombuffer(buf, dtype=np.float64, offset=1, count=6).reshape(2, 3)
    cost[...] = [[3.0, 1.0, 2.0], [1.0, 5.0, 0.5]]
    assert not cost.flags.aligned and cost.flags.c_contiguous
    want = [a.tolist() for a in scipy_lsa(cost)]
    assert [a.tolist() for a in linear_sum_assignment(cost)] == want
    assert [a.tolist() for a in linear_sum_assignment_batch([cost, cost.T])[0]] == want
    padded = np.frombuffer(bytearray(8 * 12 + 3), np.float32, offset=3, count=12).reshape(2, 2, 3)
    padded[...] = cost.astype(np.float32)
    assert [a.tolist() for a in linear_sum_assignment_batch(padded)[1]] == want


def test_a_type_error_of_the_core_is_not_retried(monkeypatch):
    # The wrapper converts up front; it never catches the core's TypeError to convert
    # and retry (which would hide a genuine error behind a silent conversion).
    calls = []

    def refuse(*args):
        calls.append(args)
        raise TypeError("from the core")

    monkeypatch.setattr(_core, "linear_sum_assignment", refuse)
    monkeypatch.setattr(_core, "linear_sum_assignment_batch", refuse)
    with pytest.raises(TypeError, match="from the core"):
        linear_sum_assignment(np.eye(2))
    with pytest.raises(TypeError, match="from the core"):
        linear_sum_assignment_batch([np.eye(2)])
    assert len(calls) == 2


@pytest.mark.parametrize(
    ("n_threads", "error", "message"),
    [
        (-1, ValueError, "n_threads must be a positive integer or None, got -1"),
        (0, ValueError, "got 0"),
        (1.5, TypeError, "n_threads must be a positive integer or None, got 1.5"),
        ("2", TypeError, "got '2'"),
        (True, TypeError, "got True"),
    ],
)
def test_n_threads_is_checked(n_threads, error, message):
    with pytest.raises(error, match=message):
        linear_sum_assignment_batch([np.eye(2)], n_threads=n_threads)


def test_n_threads_takes_numpy_and_torch_integers():
    for n in (np.int64(2), torch.tensor(2), 2**3):
        assert linear_sum_assignment_batch([1 - np.eye(2)], n_threads=n)[0][1].tolist() == [0, 1]


@pytest.mark.parametrize(
    ("sizes", "error", "message"),
    [
        ([1.5, 2], TypeError, r"n_rows\[0\] must be an integer, got 1.5 \(float\)"),
        (np.array([1.0, 2.0]), TypeError, r"n_rows\[0\] must be an integer, got np.float64"),
        (torch.tensor([1.0, 2.0]), TypeError, r"n_rows\[0\] must be an integer"),
        ([True, 2], TypeError, r"n_rows\[0\] must be an integer, got True"),
        ([1, -1], ValueError, r"n_rows\[1\] must be an integer in \[0, 3\].*got -1"),
        ([1, 2**70], ValueError, r"n_rows\[1\] must be an integer in \[0, 3\]"),
        (3, TypeError, "n_rows must be a sequence of integers, got 3"),
    ],
)
def test_sizes_must_be_integers_in_range(sizes, error, message):
    with pytest.raises(error, match=message):
        linear_sum_assignment_batch(np.zeros((2, 3, 3)), n_rows=sizes)


def test_sizes_take_integer_vectors():
    padded = np.random.default_rng(0).random((2, 3, 3))
    for sizes in ([1, 2], (1, 2), np.array([1, 2]), torch.tensor([1, 2]), [np.int8(1), 2]):
        got = linear_sum_assignment_batch(padded, n_rows=sizes)
        assert [len(r) for r, _ in got] == [1, 2]


def test_version_is_the_crate_version():
    # The extension reports the crate's version; maturin gives the wheel the same one.
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    root = Path(__file__).resolve().parents[1]
    crate = tomllib.loads((root / "matcher_rs" / "Cargo.toml").read_text())["package"]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert matcher_rs.__version__ == crate["version"] == project["version"]

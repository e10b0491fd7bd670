"""matcher_rs against scipy's linear_sum_assignment (the oracle) on random matrices."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.optimize import linear_sum_assignment as scipy_lsa

from matcher_rs import linear_sum_assignment, linear_sum_assignment_batch

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _outcome(fn, cost, maximize=False):
    """(total in float64, k) or the error message."""
    try:
        rows, cols = fn(cost, maximize=maximize)
    except ValueError as err:
        return str(err)
    c = np.asarray(cost, dtype=np.float64)
    return float(c[rows, cols].sum()) if len(rows) else 0.0, len(rows)


def _assert_same(cost, maximize=False, rtol=1e-9):
    got, want = _outcome(linear_sum_assignment, cost, maximize), _outcome(scipy_lsa, cost, maximize)
    if isinstance(want, str) or isinstance(got, str):
        assert got == want
    else:
        assert got[1] == want[1]
        assert got[0] == pytest.approx(want[0], rel=rtol, abs=rtol)


def _assert_valid(rows, cols, shape):
    assert rows.dtype == np.int64 and cols.dtype == np.int64
    assert len(rows) == min(shape)
    assert np.all(np.diff(rows) > 0)
    assert len(set(cols.tolist())) == len(cols)


entries = st.one_of(
    st.integers(-20, 20).map(float),
    st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False),
    st.just(np.inf),
)
# Rarely an invalid entry: both libraries must then raise the same error.
entries_with_invalid = st.one_of(entries, entries, entries, st.sampled_from([np.nan, -np.inf]))


@FAST
@given(
    hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=9),
        elements=entries,
    ),
    st.booleans(),
)
def test_random_matrices_match_scipy(cost, maximize):
    if maximize:
        cost = -cost  # +inf (forbidden) becomes -inf, a stray -inf becomes invalid +inf
    _assert_same(cost, maximize)


@FAST
@given(
    hnp.arrays(
        np.int64, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.integers(0, 50)
    ),
    st.sampled_from([np.float32, np.float64, np.int32, np.int64, np.uint8, np.float16, np.bool_]),
    st.booleans(),
)
def test_dtypes_match_scipy(values, dtype, maximize):
    cost = values.astype(dtype)
    # float32 is solved natively; a float32 total compares with scipy's within rounding.
    rows, cols = linear_sum_assignment(cost, maximize)
    _assert_valid(rows, cols, cost.shape)
    _assert_same(cost, maximize, rtol=1e-5)


@FAST
@given(
    hnp.arrays(
        np.float64, st.tuples(st.integers(1, 30), st.integers(1, 30)), elements=st.floats(0, 1)
    ),
    st.sampled_from(["F", "T", "slice", "neg", "f32F"]),
)
def test_strided_layouts_match(base, layout):
    view = {
        "F": np.asfortranarray(base),
        "T": base.T,
        "slice": base[::2, ::-1],
        "neg": base[::-1],
        "f32F": np.asfortranarray(base.astype(np.float32)),
    }[layout]
    rows, cols = linear_sum_assignment(view)
    _assert_valid(rows, cols, view.shape)
    _assert_same(view, rtol=1e-5)


@pytest.mark.parametrize("shape", [(100, 100), (50, 200), (200, 50), (300, 7), (7, 300)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_larger_random(shape, dtype):
    cost = np.random.default_rng(sum(shape)).random(shape).astype(dtype)
    for maximize in (False, True):
        _assert_same(cost, maximize, rtol=1e-5)


@pytest.mark.parametrize(
    ("cost", "maximize", "message"),
    [
        ([[1.0, np.nan], [3.0, 2.0]], False, "matrix contains invalid numeric entries"),
        ([[1.0, -np.inf], [3.0, 2.0]], False, "matrix contains invalid numeric entries"),
        ([[1.0, np.inf], [3.0, 2.0]], True, "matrix contains invalid numeric entries"),
        ([[1.0, np.inf], [np.inf, np.inf]], False, "cost matrix is infeasible"),
        ([[1.0, 2.0, 3.0], [np.inf, np.inf, np.inf]], False, "cost matrix is infeasible"),
        ([[1.0, -np.inf], [-np.inf, -np.inf]], True, "cost matrix is infeasible"),
    ],
)
def test_errors_match_scipy(cost, maximize, message):
    for dtype in (np.float64, np.float32):
        with pytest.raises(ValueError, match=message):
            linear_sum_assignment(np.array(cost, dtype=dtype), maximize)
        with pytest.raises(ValueError, match=message):
            scipy_lsa(np.array(cost, dtype=dtype), maximize)


@pytest.mark.parametrize("bad", [np.zeros(3), np.zeros((2, 2, 2)), 5.0])
def test_not_a_matrix(bad):
    with pytest.raises(ValueError, match="expected a matrix"):
        linear_sum_assignment(bad)
    with pytest.raises(ValueError, match="expected a matrix"):
        scipy_lsa(bad)


def test_unsafe_dtype_is_a_type_error():
    with pytest.raises(TypeError):
        linear_sum_assignment(np.ones((2, 2), dtype=np.complex128))


@pytest.mark.parametrize("shape", [(4, 4), (3, 6), (6, 3)])
def test_constant_matrix_gives_identity(shape):
    rows, cols = linear_sum_assignment(np.full(shape, 3.0))
    k = min(shape)
    assert rows.tolist() == list(range(k)) and cols.tolist() == list(range(k))


@pytest.mark.parametrize("shape", [(0, 0), (0, 5), (5, 0)])
def test_empty(shape):
    rows, cols = linear_sum_assignment(np.zeros(shape))
    assert rows.shape == cols.shape == (0,) and rows.dtype == np.int64


def test_lists_and_torch_tensors():
    cost = [[4, 1, 3], [2, 0, 5], [3, 2, 2]]
    want = [[0, 1, 2], [1, 0, 2]]
    assert [a.tolist() for a in linear_sum_assignment(cost)] == want
    t = torch.tensor(cost, dtype=torch.float32, requires_grad=True)
    assert [a.tolist() for a in linear_sum_assignment(t)] == want
    assert [a.tolist() for a in linear_sum_assignment(torch.tensor(cost))] == want
    assert [a.tolist() for a in linear_sum_assignment(torch.tensor(cost).T.double())] == [
        [0, 1, 2],
        [1, 0, 2],
    ]


def test_cuda_tensor_is_refused_with_advice():
    fake = torch.empty(2, 2, device="meta")
    with pytest.raises(TypeError, match=r"\.cpu\(\)"):
        linear_sum_assignment(fake)


def test_batch_list_matches_single_solves():
    rng = np.random.default_rng(1)
    costs = [rng.random((int(q), int(t))) for q, t in rng.integers(0, 60, size=(40, 2))]
    costs += [c.astype(np.float32) for c in costs[:10]] + [costs[0].T]
    for n_threads in (None, 1, 2, 3):
        for maximize in (False, True):
            got = linear_sum_assignment_batch(costs, maximize, n_threads)
            assert len(got) == len(costs)
            for c, (r, k) in zip(costs, got, strict=True):
                wr, wk = scipy_lsa(c, maximize)
                assert c[r, k].sum() == pytest.approx(c[wr, wk].sum(), rel=1e-5, abs=1e-9)


def test_batch_items_the_core_declines_are_converted():
    # The core takes a list or tuple of aligned float32/float64 ndarrays as it is and
    # declines anything else (the wrapper converts every item and calls again): each kind
    # of item, at the front, in the middle and at the end, must give scipy's answer.
    rng = np.random.default_rng(5)
    base = [rng.random((9, 4)), rng.random((3, 8)).astype(np.float32), rng.random((6, 6))]
    odd = rng.random((5, 3))
    unaligned = np.frombuffer(b"\0" + odd.astype(np.float64).tobytes(), np.float64, offset=1)
    kinds = [
        odd.tolist(),
        odd.astype(np.int64) * 7,
        odd.astype(np.float16),
        odd.astype(">f8"),
        odd.view(np.matrix),
        unaligned.reshape(5, 3),
        torch.from_numpy(odd),
        odd[:, ::-1],  # a native strided view: taken as it is
    ]
    for item in kinds:
        for at in (0, 1, 3):
            costs = [*base[:at], item, *base[at:]]
            for seq in (costs, tuple(costs), iter(costs)):
                got = linear_sum_assignment_batch(seq, n_threads=1)
                assert len(got) == len(costs)
                for c, (r, k) in zip(costs, got, strict=True):
                    c = np.asarray(c, dtype=np.float64)
                    wr, wk = scipy_lsa(c)
                    assert r.dtype == np.int64 and r.tolist() == sorted(r.tolist())
                    assert c[r, k].sum() == pytest.approx(c[wr, wk].sum(), rel=1e-3)
    with pytest.raises(ValueError, match="batch item 1: expected a matrix"):
        linear_sum_assignment_batch((np.eye(2), np.zeros((2, 2, 2))))


def test_batch_tall_detr_shapes_match_scipy():
    # DETR's Q x T costs (T much smaller than Q), float32 and float64, through one reused
    # set of copy buffers: successive batches of changing shapes, ties, T = 0, 1 and Q.
    rng = np.random.default_rng(6)
    for _ in range(6):
        q = int(rng.integers(1, 120))
        ts = [0, 1, q, *rng.integers(0, q + 1, size=12).tolist()]
        costs = [rng.random((q, t)) for t in ts] + [rng.integers(0, 3, (q, t)) * 1.0 for t in ts]
        costs += [c.astype(np.float32) for c in costs]
        for n_threads in (1, None):
            got = linear_sum_assignment_batch(costs, n_threads=n_threads)
            for c, (r, k) in zip(costs, got, strict=True):
                wr, wk = scipy_lsa(c)
                assert len(r) == min(c.shape) and np.all(np.diff(r) > 0)
                assert len(set(k.tolist())) == len(k)
                assert c[r, k].sum() == pytest.approx(c[wr, wk].sum(), rel=1e-5, abs=1e-6)


def test_batch_padded_with_sizes():
    rng = np.random.default_rng(2)
    sizes = [5, 0, 17, 20, 1]
    padded = rng.random((5, 30, 20)).astype(np.float32)
    for b, n in enumerate(sizes):
        padded[b, :, n:] = np.nan  # padding is never read
    got = linear_sum_assignment_batch(padded, n_cols=sizes)
    for b, n in enumerate(sizes):
        r, k = got[b]
        wr, wk = scipy_lsa(padded[b, :, :n])
        assert len(r) == n
        assert padded[b, r, k].sum() == pytest.approx(padded[b, wr, wk].sum(), rel=1e-5)
    got = linear_sum_assignment_batch(
        torch.from_numpy(padded), n_cols=torch.tensor(sizes), n_rows=[30, 4, 30, 30, 30]
    )
    assert len(got[2][0]) == 17 and len(got[1][0]) == 0
    full = linear_sum_assignment_batch(np.ones((5, 30, 20), dtype=np.float32))
    assert all(r.tolist() == k.tolist() == list(range(20)) for r, k in full)


def test_batch_errors_name_the_item():
    costs = [np.eye(3), np.eye(3), np.eye(3), np.array([[1.0, np.inf], [np.inf, np.inf]])]
    with pytest.raises(ValueError, match="batch item 3: cost matrix is infeasible"):
        linear_sum_assignment_batch(costs)
    costs[1] = np.array([[np.nan]])
    with pytest.raises(ValueError, match="batch item 1: matrix contains invalid numeric entries"):
        linear_sum_assignment_batch(costs, n_threads=2)
    with pytest.raises(ValueError, match="batch item 2: expected a matrix"):
        linear_sum_assignment_batch([np.eye(2), np.eye(2), np.zeros(3)])
    with pytest.raises(ValueError, match="n_cols has 2 entries for a batch of 3"):
        linear_sum_assignment_batch(np.zeros((3, 4, 4)), n_cols=[1, 2])
    with pytest.raises(ValueError, match=r"n_cols\[1\] must be an integer in \[0, 4\]"):
        linear_sum_assignment_batch(np.zeros((2, 4, 4)), n_cols=[1, 5])
    with pytest.raises(ValueError, match="n_threads must be a positive integer or None, got 0"):
        linear_sum_assignment_batch([np.eye(300)] * 4, n_threads=0)


def test_gil_is_released_while_solving():
    cost = np.random.default_rng(3).random((1500, 1500))
    worker = threading.Thread(target=linear_sum_assignment, args=(cost,))
    spins = 0
    worker.start()
    while worker.is_alive():
        spins += 1
    worker.join()
    # Holding the GIL through the solve would leave this thread next to no turns.
    assert spins > 1000


def test_core_takes_native_arrays_and_declines_the_rest():
    # The core solves an aligned float32/float64 ndarray itself and returns None for any
    # other input, which the wrapper then converts (the fast path of single solves).
    from matcher_rs import _core

    base = np.array([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]])
    want = [a.tolist() for a in scipy_lsa(base)]
    unaligned = np.frombuffer(bytearray(8 * 9 + 1), np.float64, offset=1, count=9).reshape(3, 3)
    unaligned[...] = base
    converted = [
        base.tolist(),
        base.astype(np.int64),
        base.astype(np.float16),
        base.astype(">f8"),
        np.ma.masked_array(base),  # a subclass: read as numpy.asarray reads it
        unaligned,
    ]
    for cost in converted:
        assert _core.linear_sum_assignment(cost, False) is None, repr(cost)
        assert [a.tolist() for a in linear_sum_assignment(cost)] == want, repr(cost)
    for cost in (base[None], base.ravel()):
        assert _core.linear_sum_assignment(cost, False) is None
        with pytest.raises(ValueError, match="expected a matrix"):
            linear_sum_assignment(cost)
    for cost in (base, base.astype(np.float32), np.asfortranarray(base), base[::-1][::-1]):
        got = _core.linear_sum_assignment(cost, False)
        assert got is not None and [a.tolist() for a in got] == want
        assert got[0].dtype == got[1].dtype == np.int64

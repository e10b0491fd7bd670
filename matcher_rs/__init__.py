"""Exact linear sum assignment in Rust: a drop-in for scipy's ``linear_sum_assignment``.

``linear_sum_assignment(cost)`` solves one matrix, ``linear_sum_assignment_batch(costs)``
many at once in parallel. Both release the GIL while solving and follow scipy's contract:
``+inf`` forbids a pair (``-inf`` when maximising), NaN and ``-inf`` (``+inf`` when
maximising) raise ``ValueError("matrix contains invalid numeric entries")``, a matrix
without a complete assignment raises ``ValueError("cost matrix is infeasible")``, rows
come back sorted ascending as int64 arrays, and the assignment is optimal (up to rounding)
whatever the magnitudes: costs near the float64 maximum, whose sums overflow, are solved
rescaled by a power of two instead of giving a wrong answer.

The matrices are copied (one pass, which is also the conversion the solver needs) before
the GIL is released, so another thread may write them meanwhile without harm: the answer is
the one for the matrix as it was at the call.

Inputs are read as scipy reads them: numpy arrays of any dtype that casts safely to
float64 (others raise ``TypeError``), and anything else converted element by element to
float64 (nested lists of numbers, big ints, numeric strings, ``Fraction``, ``Decimal``;
``None`` becomes NaN). float32 and float64 arrays are solved in their own precision
(C-ordered, Fortran-ordered or strided views alike), so a float32 matrix is solved
optimally up to float32 rounding. CPU torch tensors are taken too
(also ``bfloat16`` and tensors that require grad, which scipy refuses; complex tensors are
refused, where scipy would drop the imaginary part). CUDA tensors are refused with a
``TypeError``: move the costs to the host yourself, in one transfer for a whole batch (e.g.
``padded.cpu()``), rather than one per matrix. A problem too large to allocate raises
``MemoryError``.
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from matcher_rs import _core
from matcher_rs._core import __version__

__all__ = ["__version__", "linear_sum_assignment", "linear_sum_assignment_batch"]

IndexArray = npt.NDArray[np.int64]

_NATIVE = (np.dtype(np.float32), np.dtype(np.float64))

# Objects numpy reads as arrays (not element by element).
_ARRAY_PROTOCOLS = ("__array__", "__array_interface__", "__array_struct__")


def _is_native(arr: Any) -> bool:
    """Whether the core takes ``arr`` as it is: an aligned float32/float64 ndarray."""
    return type(arr) is np.ndarray and arr.dtype in _NATIVE and bool(arr.flags.aligned)


def _as_array(cost: Any, ndims: tuple[int, ...], what: str) -> np.ndarray:
    """``cost`` as the core reads it: an aligned float32/float64 array, ``ndim`` in ``ndims``."""
    if _is_native(cost) and cost.ndim in ndims:
        return cost
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(cost, torch.Tensor):
        if cost.device.type != "cpu":
            raise TypeError(
                f"matcher_rs solves on the host: got a tensor on {cost.device}; move the costs "
                "with .cpu() first (one transfer for the whole batch)"
            )
        cost = cost.detach().resolve_conj().resolve_neg()
        if cost.dtype == torch.bfloat16:  # numpy has no bfloat16; it widens exactly
            cost = cost.double()
        cost = cost.numpy()
    if isinstance(cost, (np.ndarray, memoryview)) or any(
        hasattr(cost, p) for p in _ARRAY_PROTOCOLS
    ):
        arr = np.asarray(cost)
        if arr.dtype not in _NATIVE:
            # scipy's rule for arrays: a dtype that casts safely to float64 (ints, bools,
            # float16, other byte orders); complex, object, strings raise TypeError.
            arr = arr.astype(np.float64, casting="safe")
    else:
        # scipy converts sequences element by element with float(): big ints, numeric
        # strings, Fraction and Decimal work, None becomes NaN.
        arr = np.asarray(cost, dtype=np.float64)
    if arr.ndim not in ndims:
        raise ValueError(f"expected {what}, got a {arr.ndim} array")
    if not arr.flags.aligned:  # e.g. np.frombuffer at an odd offset; a copy is aligned
        arr = arr.copy()
    return arr


def linear_sum_assignment(cost_matrix: Any, maximize: Any = False) -> tuple[IndexArray, IndexArray]:
    """Solve the linear sum assignment problem (scipy's signature and contract).

    Args:
        cost_matrix: (R, C) costs; ``+inf`` marks a forbidden pair (``-inf`` when maximising).
        maximize: find the assignment of largest total instead (any truthy value, as scipy).

    Returns:
        ``(row_ind, col_ind)``, int64 arrays of length ``min(R, C)``, ``row_ind`` ascending:
        row ``row_ind[k]`` is assigned to column ``col_ind[k]``.

    Raises:
        ValueError: input not 2-D, invalid entries, or no feasible assignment.
        TypeError: a dtype that does not cast safely to float64, or a CUDA tensor.
        MemoryError: the problem is too large to allocate.
    """
    maximize = bool(maximize)
    # The core takes an aligned float32/float64 ndarray as it is and returns None for
    # anything else (cheaper than checking here first); only then is the input converted.
    out = _core.linear_sum_assignment(cost_matrix, maximize)
    if out is None:
        out = _core.linear_sum_assignment(
            _as_array(cost_matrix, (2,), "a matrix (2-D array)"), maximize
        )
        assert out is not None  # _as_array gives the core what it takes
    return out


def linear_sum_assignment_batch(
    costs: Any,
    maximize: Any = False,
    n_threads: int | None = None,
    *,
    n_rows: Iterable[int] | None = None,
    n_cols: Iterable[int] | None = None,
) -> list[tuple[IndexArray, IndexArray]]:
    """Solve many assignment problems in parallel (Rust threads, GIL released).

    Args:
        costs: either a sequence of 2-D cost matrices (shapes may differ), or one padded
            (B, R, C) array or tensor whose item ``b`` is its leading
            ``n_rows[b] x n_cols[b]`` block (padding is never read).
        maximize: find assignments of largest total instead (any truthy value).
        n_threads: the most worker threads to use, a positive integer, or ``None`` for
            all. Every batch runs on one shared pool of one thread per available CPU (or
            ``RAYON_NUM_THREADS``), so a value above the pool's size, or above the number
            of items, is clamped to it: ``min(n_threads, pool size, len(costs))`` items
            are solved at once, and no call ever starts threads of its own. ``1`` solves
            on the calling thread, as do small batches whatever the setting, since waking
            workers would cost more than it saves.
        n_rows: per-item row counts of a padded batch, integers (default: all rows).
        n_cols: per-item column counts of a padded batch, integers (default: all columns).

    Returns:
        One ``(row_ind, col_ind)`` pair per item, as from :func:`linear_sum_assignment`.

    Raises:
        ValueError: as :func:`linear_sum_assignment`, prefixed with the failing item,
            e.g. ``"batch item 3: cost matrix is infeasible"``; bad ``n_threads``,
            ``n_rows`` or ``n_cols``.
        TypeError: as :func:`linear_sum_assignment`, prefixed with the failing item.
        MemoryError: the problem is too large to allocate.
    """
    maximize = bool(maximize)
    threads = _threads(n_threads)
    torch = sys.modules.get("torch")
    if isinstance(costs, np.ndarray) or (torch is not None and isinstance(costs, torch.Tensor)):
        arr = _as_array(costs, (3,), "a padded batch (3-D array)")
        padded = _core.linear_sum_assignment_batch(
            arr,
            maximize,
            threads,
            n_rows=_sizes(n_rows, "n_rows", arr.shape[1]),
            n_cols=_sizes(n_cols, "n_cols", arr.shape[2]),
        )
        assert padded is not None  # a float32/float64 3-D array is always taken
        return padded
    if n_rows is not None or n_cols is not None:
        raise ValueError("n_rows / n_cols apply to a padded 3-D batch only")
    if type(costs) in (list, tuple):
        # The core takes a list of aligned float32/float64 ndarrays as it is and returns
        # None at the first other item (cheaper than checking every item here first); a
        # generator is converted here, since it cannot be read twice.
        out = _core.linear_sum_assignment_batch(costs, maximize, threads)
        if out is not None:
            return out
    items = []
    for k, cost in enumerate(costs):
        try:
            items.append(_as_array(cost, (2,), "a matrix (2-D array)"))
        except (ValueError, TypeError) as err:
            raise type(err)(f"batch item {k}: {err}") from err
    out = _core.linear_sum_assignment_batch(items, maximize, threads)
    assert out is not None  # _as_array gives the core what it takes
    return out


def _threads(n_threads: Any) -> int | None:
    """``n_threads`` checked: ``None`` or a positive integer (clamped to ``sys.maxsize``,
    far above any pool: the core clamps it to the pool's size)."""
    if n_threads is None:
        return None
    try:
        if isinstance(n_threads, bool):
            raise TypeError
        n = operator.index(n_threads)
    except TypeError:
        raise TypeError(
            f"n_threads must be a positive integer or None, got {n_threads!r}"
        ) from None
    if n <= 0:
        raise ValueError(f"n_threads must be a positive integer or None, got {n}")
    return min(n, sys.maxsize)


def _sizes(sizes: Iterable[Any] | None, name: str, padded: int) -> list[int] | None:
    """Per-item sizes as plain ints in ``[0, padded]`` (lists, numpy and torch vectors)."""
    if sizes is None:
        return None
    try:
        items = list(sizes)
    except TypeError:  # not iterable, or a 0-d array or tensor
        raise TypeError(f"{name} must be a sequence of integers, got {sizes!r}") from None
    out = []
    for k, s in enumerate(items):
        try:
            if isinstance(s, bool):
                raise TypeError
            n = operator.index(s)  # refuses floats (1.5, np.float64, float tensors)
        except TypeError:
            raise TypeError(
                f"{name}[{k}] must be an integer, got {s!r} ({type(s).__name__})"
            ) from None
        if not 0 <= n <= padded:
            raise ValueError(
                f"{name}[{k}] must be an integer in [0, {padded}] (the padded size), got {n}"
            )
        out.append(n)
    return out

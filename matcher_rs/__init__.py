"""Exact linear sum assignment in Rust: a drop-in for scipy's ``linear_sum_assignment``.

``linear_sum_assignment(cost)`` solves one matrix, ``linear_sum_assignment_batch(costs)``
many at once in parallel. Both release the GIL while solving and follow scipy's contract:
``+inf`` forbids a pair (``-inf`` when maximising), NaN and ``-inf`` (``+inf`` when
maximising) raise ``ValueError("matrix contains invalid numeric entries")``, a matrix
without a complete assignment raises ``ValueError("cost matrix is infeasible")``, and rows
come back sorted ascending as int64 arrays.

Inputs: numpy arrays of any real dtype, nested sequences, and CPU torch tensors.
float32 and float64 arrays are read in place in their own precision (C-ordered,
Fortran-ordered or strided views alike); other dtypes are converted to float64 as scipy
does. CUDA tensors are refused with a ``TypeError``: move the costs to the host yourself,
in one transfer for a whole batch (e.g. ``padded.cpu()``), rather than one per matrix.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from matcher_rs import _core
from matcher_rs._core import __version__

__all__ = ["__version__", "linear_sum_assignment", "linear_sum_assignment_batch"]

IndexArray = npt.NDArray[np.int64]

_NATIVE = (np.dtype(np.float32), np.dtype(np.float64))


def _as_array(cost: Any, ndims: tuple[int, ...], what: str) -> np.ndarray:
    """``cost`` as an aligned float32/float64 array with one of ``ndims`` dimensions."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(cost, torch.Tensor):
        if cost.device.type != "cpu":
            raise TypeError(
                f"matcher_rs solves on the host: got a tensor on {cost.device}; move the costs "
                "with .cpu() first (one transfer for the whole batch)"
            )
        cost = cost.detach()
        if cost.dtype == torch.bfloat16:  # numpy has no bfloat16; it widens exactly
            cost = cost.double()
        cost = cost.numpy()
    arr = np.asarray(cost)
    if arr.ndim not in ndims:
        raise ValueError(f"expected {what}, got a {arr.ndim} array")
    if arr.dtype not in _NATIVE or not arr.dtype.isnative:
        # scipy's rule: any dtype that casts safely to float64 (ints, bools, float16).
        arr = arr.astype(np.float64, casting="safe")
    elif not arr.flags.aligned:
        arr = np.ascontiguousarray(arr)
    return arr


def linear_sum_assignment(
    cost_matrix: Any, maximize: bool = False
) -> tuple[IndexArray, IndexArray]:
    """Solve the linear sum assignment problem (scipy's signature and contract).

    Args:
        cost_matrix: (R, C) costs; ``+inf`` marks a forbidden pair (``-inf`` when maximising).
        maximize: find the assignment of largest total instead.

    Returns:
        ``(row_ind, col_ind)``, int64 arrays of length ``min(R, C)``, ``row_ind`` ascending:
        row ``row_ind[k]`` is assigned to column ``col_ind[k]``.

    Raises:
        ValueError: input not 2-D, invalid entries, or no feasible assignment.
        TypeError: a dtype that does not convert to float64, or a CUDA tensor.
    """
    if type(cost_matrix) is np.ndarray and cost_matrix.ndim == 2:
        try:  # the fast path: an aligned float32/float64 array, solved in place
            return _core.linear_sum_assignment(cost_matrix, maximize)
        except TypeError:  # another dtype or layout: convert below
            pass
    return _core.linear_sum_assignment(
        _as_array(cost_matrix, (2,), "a matrix (2-D array)"), maximize
    )


def linear_sum_assignment_batch(
    costs: Any,
    maximize: bool = False,
    n_threads: int | None = None,
    *,
    n_rows: Sequence[int] | None = None,
    n_cols: Sequence[int] | None = None,
) -> list[tuple[IndexArray, IndexArray]]:
    """Solve many assignment problems in parallel (Rust threads, GIL released).

    Args:
        costs: either a sequence of 2-D cost matrices (shapes may differ), or one padded
            (B, R, C) array or tensor whose item ``b`` is its leading
            ``n_rows[b] x n_cols[b]`` block (padding is never read).
        maximize: find assignments of largest total instead.
        n_threads: worker threads; ``None`` uses rayon's global pool (one thread per
            core), a number uses a pool of that size (built once, then reused); ``1``
            solves on the calling thread. Small batches are solved on the calling thread
            whatever the setting, since waking workers would cost more than it saves.
        n_rows: per-item row counts of a padded batch (default: all rows).
        n_cols: per-item column counts of a padded batch (default: all columns).

    Returns:
        One ``(row_ind, col_ind)`` pair per item, as from :func:`linear_sum_assignment`.

    Raises:
        ValueError: as :func:`linear_sum_assignment`, prefixed with the failing item,
            e.g. ``"batch item 3: cost matrix is infeasible"``.
    """
    torch = sys.modules.get("torch")
    if isinstance(costs, np.ndarray) or (torch is not None and isinstance(costs, torch.Tensor)):
        arr = _as_array(costs, (3,), "a padded batch (3-D array)")
        return _core.linear_sum_assignment_batch(
            arr, maximize, n_threads, n_rows=_sizes(n_rows), n_cols=_sizes(n_cols)
        )
    if n_rows is not None or n_cols is not None:
        raise ValueError("n_rows / n_cols apply to a padded 3-D batch only")
    if type(costs) is list:
        try:  # the fast path: every item an aligned 2-D float32/float64 array
            return _core.linear_sum_assignment_batch(costs, maximize, n_threads)
        except TypeError:  # some item needs converting: below
            pass
    items = []
    for k, cost in enumerate(costs):
        try:
            items.append(_as_array(cost, (2,), "a matrix (2-D array)"))
        except (ValueError, TypeError) as err:
            raise type(err)(f"batch item {k}: {err}") from err
    return _core.linear_sum_assignment_batch(items, maximize, n_threads)


def _sizes(sizes: Sequence[int] | None) -> list[int] | None:
    """Per-item sizes as plain ints (accepts lists, tuples, numpy and torch vectors)."""
    if sizes is None:
        return None
    out = [int(s) for s in sizes]
    if any(s < 0 for s in out):
        raise ValueError("sizes must be non-negative")
    return out

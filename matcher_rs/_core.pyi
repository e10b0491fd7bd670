"""Type stubs of the Rust extension (use the wrappers in ``matcher_rs``, which accept more inputs)."""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__version__: str

_Index = npt.NDArray[np.int64]
_Float = npt.NDArray[np.float32] | npt.NDArray[np.float64]

def linear_sum_assignment(
    cost_matrix: object, maximize: bool = False
) -> tuple[_Index, _Index] | None:
    """Solve one aligned 2-D float32/float64 ndarray (copied, then solved with the GIL
    released); ``None`` for any other input (the wrapper converts it and calls again)."""

def linear_sum_assignment_batch(
    costs: _Float | Sequence[_Float],
    maximize: bool = False,
    n_threads: int | None = None,
    *,
    n_rows: Sequence[int] | None = None,
    n_cols: Sequence[int] | None = None,
) -> list[tuple[_Index, _Index]] | None:
    """Solve a list of 2-D float arrays or a padded 3-D float array, in parallel (at most
    ``n_threads`` items at once on the shared pool); ``None`` when an item of a sequence is
    anything but an aligned 2-D float32/float64 ndarray (the wrapper converts it and calls
    again)."""

def _panic_for_tests(on_worker: bool) -> None:
    """Panic inside the binding's guard (tests: a RuntimeError must come out)."""

def _set_avx(allowed: bool) -> bool:
    """Allow or forbid the AVX scans (benchmarks); returns the previous setting."""

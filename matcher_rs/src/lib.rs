//! Python bindings for the `lsap` solver: borrow numpy matrices without copying, release
//! the GIL for every solve, solve batches in parallel with rayon, map errors to ValueError
//! (MemoryError when a problem cannot be allocated). The Python wrapper converts every
//! input first, so the core takes only aligned float32/float64 arrays; no Rust panic
//! crosses into Python (see [`guard`]).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, OnceLock};

mod views;

use lsap::{Assignment, LsapError};
use numpy::prelude::*;
use numpy::{PyArray1, PyArray3};
use pyo3::exceptions::{PyMemoryError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;
use rayon::prelude::*;
use views::{views3, AnyView, Borrowed, Native};

/// Below this much estimated work (sum of `rows * cols * min(rows, cols)` over a batch)
/// waking worker threads costs more than it saves: solve on the calling thread.
const PARALLEL_MIN_WORK: usize = 1 << 21;

fn to_numpy<'py>(
    py: Python<'py>,
    a: Assignment,
) -> (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<i64>>) {
    let conv = |v: Vec<usize>| v.into_iter().map(|x| x as i64).collect::<Vec<i64>>();
    (
        PyArray1::from_vec(py, conv(a.rows)),
        PyArray1::from_vec(py, conv(a.cols)),
    )
}

/// A solver error as the Python exception scipy raises in its place, prefixed by `prefix`.
fn solve_error(e: LsapError, prefix: &str) -> PyErr {
    let msg = format!("{prefix}{e}");
    match e {
        LsapError::OutOfMemory { .. } => PyMemoryError::new_err(msg),
        _ => PyValueError::new_err(msg),
    }
}

/// Run a binding's body, turning a Rust panic into a RuntimeError that names it a bug.
///
/// Every failure the solver knows of is an error value; a panic would reach Python as
/// pyo3's `PanicException`, a `BaseException` that `except Exception` misses. Panics on
/// rayon workers are re-raised on the calling thread, and `detach` re-takes the GIL
/// before unwinding further, so one guard around the whole body catches them all.
fn guard<R>(body: impl FnOnce() -> PyResult<R>) -> PyResult<R> {
    std::panic::catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string());
        Err(PyRuntimeError::new_err(format!(
            "matcher_rs internal error (a bug: please report it with the input that \
             caused it): {what}"
        )))
    })
}

type Pair<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<i64>>);

/// Solve one float32/float64 2-D numpy array (no copy; the GIL is released while solving).
#[pyfunction]
#[pyo3(signature = (cost_matrix, maximize = false))]
fn linear_sum_assignment<'py>(
    py: Python<'py>,
    cost_matrix: &Bound<'py, PyAny>,
    maximize: bool,
) -> PyResult<Pair<'py>> {
    guard(|| {
        let borrowed = Borrowed::new(cost_matrix)?;
        let view = borrowed.view()?;
        let result = py.detach(|| view.solve(maximize));
        Ok(to_numpy(py, result.map_err(|e| solve_error(e, ""))?))
    })
}

/// The pool for an explicit thread count, built once per count and kept.
fn pool(n_threads: usize) -> PyResult<Arc<rayon::ThreadPool>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(p) = pools.get(&n_threads) {
        return Ok(p.clone());
    }
    let p = rayon::ThreadPoolBuilder::new()
        .num_threads(n_threads)
        .thread_name(|k| format!("matcher_rs-{k}"))
        .build()
        .map_err(|e| PyValueError::new_err(format!("cannot start {n_threads} threads: {e}")))?;
    let p = Arc::new(p);
    pools.insert(n_threads, p.clone());
    Ok(p)
}

/// Solve every view (in parallel unless the batch is small or `n_threads == 1`).
fn solve_all(
    views: &[AnyView<'_>],
    maximize: bool,
    n_threads: Option<usize>,
) -> PyResult<Vec<Result<Assignment, LsapError>>> {
    let work: usize = views
        .iter()
        .map(|v| v.work())
        .fold(0, usize::saturating_add);
    let serial = views.len() < 2 || work < PARALLEL_MIN_WORK || n_threads == Some(1);
    let run = || -> Vec<_> {
        if serial {
            views.iter().map(|v| v.solve(maximize)).collect()
        } else {
            views
                .par_iter()
                .with_max_len(1)
                .map(|v| v.solve(maximize))
                .collect()
        }
    };
    Ok(match n_threads {
        Some(0) => return Err(PyValueError::new_err("n_threads must be positive")),
        Some(n) if !serial => {
            let p = pool(n)?;
            p.install(run)
        }
        _ => run(),
    })
}

/// Per-item sizes of a padded batch: the given sequence, or the full padded size.
fn sizes(given: Option<Vec<usize>>, batch: usize, full: usize, name: &str) -> PyResult<Vec<usize>> {
    match given {
        None => Ok(vec![full; batch]),
        Some(v) if v.len() == batch => Ok(v),
        Some(v) => Err(PyValueError::new_err(format!(
            "{name} has {} entries for a batch of {batch}",
            v.len()
        ))),
    }
}

/// Solve the leading `n_rows[b] x n_cols[b]` block of every item of a padded batch.
fn solve_padded<T: Native>(
    py: Python<'_>,
    a: &Bound<'_, PyArray3<T>>,
    n_rows: Option<Vec<usize>>,
    n_cols: Option<Vec<usize>>,
    maximize: bool,
    n_threads: Option<usize>,
) -> PyResult<Vec<Result<Assignment, LsapError>>> {
    let ro = a.readonly();
    let shape = ro.shape().to_vec();
    let rows = sizes(n_rows, shape[0], shape[1], "n_rows")?;
    let cols = sizes(n_cols, shape[0], shape[2], "n_cols")?;
    let views: Vec<AnyView<'_>> = views3(&ro, &rows, &cols)?
        .into_iter()
        .map(T::wrap)
        .collect();
    py.detach(|| solve_all(&views, maximize, n_threads))
}

/// Solve a batch: a sequence of 2-D float32/float64 arrays (shapes may differ), or one
/// padded 3-D array whose item `b` is its leading `n_rows[b] x n_cols[b]` block.
#[pyfunction]
#[pyo3(signature = (costs, maximize = false, n_threads = None, *, n_rows = None, n_cols = None))]
fn linear_sum_assignment_batch<'py>(
    py: Python<'py>,
    costs: &Bound<'py, PyAny>,
    maximize: bool,
    n_threads: Option<usize>,
    n_rows: Option<Vec<usize>>,
    n_cols: Option<Vec<usize>>,
) -> PyResult<Bound<'py, PyList>> {
    guard(|| {
        let results = if let Ok(a) = costs.cast::<PyArray3<f64>>() {
            solve_padded(py, a, n_rows, n_cols, maximize, n_threads)?
        } else if let Ok(a) = costs.cast::<PyArray3<f32>>() {
            solve_padded(py, a, n_rows, n_cols, maximize, n_threads)?
        } else {
            if n_rows.is_some() || n_cols.is_some() {
                return Err(PyValueError::new_err(
                    "n_rows / n_cols apply to a padded 3-D array only",
                ));
            }
            let item_error = |k: usize, e: PyErr| {
                PyTypeError::new_err(format!("batch item {k}: {}", e.value(py)))
            };
            let borrowed = costs
                .try_iter()?
                .enumerate()
                .map(|(k, item)| Borrowed::new(&item?).map_err(|e| item_error(k, e)))
                .collect::<PyResult<Vec<_>>>()?;
            let views = borrowed
                .iter()
                .enumerate()
                .map(|(k, b)| b.view().map_err(|e| item_error(k, e)))
                .collect::<PyResult<Vec<_>>>()?;
            py.detach(|| solve_all(&views, maximize, n_threads))?
        };
        let out = PyList::empty(py);
        for (k, r) in results.into_iter().enumerate() {
            let a = r.map_err(|e| solve_error(e, &format!("batch item {k}: ")))?;
            out.append(to_numpy(py, a))?;
        }
        Ok(out)
    })
}

/// Panic inside a guarded call, on the calling thread or on a pool worker: lets the tests
/// check that no panic crosses into Python (every real panic would be a bug).
#[pyfunction]
fn _panic_for_tests(py: Python<'_>, on_worker: bool) -> PyResult<()> {
    guard(|| {
        py.detach(|| {
            if on_worker {
                pool(2)?.install(|| {
                    (0..4usize).into_par_iter().for_each(|k| {
                        assert!(k != 3, "test panic on a worker thread");
                    })
                });
            } else {
                panic!("test panic on the calling thread");
            }
            Ok(())
        })
    })
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(linear_sum_assignment, m)?)?;
    m.add_function(wrap_pyfunction!(linear_sum_assignment_batch, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_for_tests, m)?)?;
    Ok(())
}

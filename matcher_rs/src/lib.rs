//! Python bindings for the `lsap` solver: copy each numpy matrix into an owned, solver-ready
//! buffer while the GIL is held (another Python thread may write the array as soon as the
//! GIL is released), release the GIL for every solve, solve batches in parallel on rayon's
//! pool, map errors to ValueError (MemoryError when a problem cannot be allocated). The
//! Python wrapper converts every input first, so the core takes only aligned
//! float32/float64 arrays; no Rust panic crosses into Python (see [`panics`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

mod panics;
mod views;

use lsap::{Assignment, LsapError};
use numpy::prelude::*;
use numpy::{PyArray1, PyArray3, PyUntypedArray};
use panics::{catch, guard, install_hook, internal_error};
use pyo3::exceptions::{PyMemoryError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;
use rayon::prelude::*;
use views::{views3, AnyPacked, Borrowed, Native};

/// Below this much estimated work (sum of `rows * cols * min(rows, cols)` over a batch)
/// waking worker threads costs more than it saves: solve on the calling thread.
const PARALLEL_MIN_WORK: usize = 1 << 21;

fn to_numpy<'py>(
    py: Python<'py>,
    a: Assignment,
) -> (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<i64>>) {
    (index_array(py, &a.rows), index_array(py, &a.cols))
}

/// A new int64 array holding `v`: written straight into numpy's memory (no intermediate
/// `Vec<i64>`, no owner object to keep a Rust vector alive).
fn index_array<'py>(py: Python<'py>, v: &[usize]) -> Bound<'py, PyArray1<i64>> {
    // SAFETY: `new` gives a fresh C-contiguous array of `v.len()` elements that nothing else
    // references yet; every element is written before the array is returned (an index
    // fits in i64: it is below the length of an allocated matrix dimension).
    unsafe {
        let out = PyArray1::<i64>::new(py, [v.len()], false);
        let data = out.data();
        for (k, &x) in v.iter().enumerate() {
            data.add(k).write(x as i64);
        }
        out
    }
}

/// Why one problem of a batch has no assignment.
enum Failure {
    /// The solver's answer (scipy's error where scipy has one).
    Solve(LsapError),
    /// A panic, described (a bug).
    Panic(String),
}

impl From<LsapError> for Failure {
    fn from(e: LsapError) -> Self {
        Self::Solve(e)
    }
}

/// A failure as the Python exception scipy raises in its place, prefixed by `prefix`.
fn solve_error(e: Failure, prefix: &str) -> PyErr {
    match e {
        Failure::Solve(e @ LsapError::OutOfMemory { .. }) => {
            PyMemoryError::new_err(format!("{prefix}{e}"))
        }
        Failure::Solve(e) => PyValueError::new_err(format!("{prefix}{e}")),
        Failure::Panic(what) => {
            PyRuntimeError::new_err(format!("{prefix}{}", internal_error(&what)))
        }
    }
}

type Pair<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<i64>>);

/// Solve one aligned float32/float64 2-D numpy array (an `ndarray` itself, not a subclass;
/// copied while the GIL is held, then solved with the GIL released), or return `None` for
/// anything else, which the Python wrapper converts first. Recognising the common input
/// here, rather than checking it in Python before the call, saves about 0.4 us a call
/// (1.1 us of fixed cost in all at 100 x 100, where a solve of many ties takes 10 us).
#[pyfunction]
#[pyo3(signature = (cost_matrix, maximize = false))]
fn linear_sum_assignment<'py>(
    py: Python<'py>,
    cost_matrix: &Bound<'py, PyAny>,
    maximize: bool,
) -> PyResult<Option<Pair<'py>>> {
    guard(|| {
        if !cost_matrix.is_exact_instance_of::<PyUntypedArray>() {
            return Ok(None);
        }
        let Ok(borrowed) = Borrowed::new(cost_matrix) else {
            return Ok(None);
        };
        let Ok(view) = borrowed.view() else {
            return Ok(None);
        };
        let packed = view.pack(maximize);
        drop(borrowed);
        // `detach` runs on this thread: the copy buffer goes back to where it came from.
        let result = py.detach(|| {
            let p = packed?;
            let r = p.solve();
            p.recycle();
            r
        });
        Ok(Some(to_numpy(
            py,
            result.map_err(|e| solve_error(e.into(), ""))?,
        )))
    })
}

/// Solve every copy: on the calling thread when the batch is small or one worker is
/// asked for, else by at most `n_threads` tasks on rayon's global pool (one thread per
/// available CPU, or `RAYON_NUM_THREADS`), each taking the next unsolved item. No other
/// pool is ever built, so the process's thread count stays bounded whatever `n_threads`.
fn solve_all(
    items: &[Result<AnyPacked, LsapError>],
    n_threads: Option<usize>,
) -> PyResult<Vec<Result<Assignment, Failure>>> {
    if n_threads == Some(0) {
        return Err(PyValueError::new_err("n_threads must be positive"));
    }
    let solve = |item: &Result<AnyPacked, LsapError>| -> Result<Assignment, Failure> {
        match item {
            Ok(p) => catch(|| p.solve())
                .map_err(Failure::Panic)?
                .map_err(Failure::Solve),
            Err(e) => Err(Failure::Solve(*e)),
        }
    };
    let work: usize = items
        .iter()
        .filter_map(|p| p.as_ref().ok())
        .map(AnyPacked::work)
        .fold(0, usize::saturating_add);
    let workers = rayon::current_num_threads()
        .min(n_threads.unwrap_or(usize::MAX))
        .min(items.len());
    if workers < 2 || work < PARALLEL_MIN_WORK {
        return Ok(items.iter().map(solve).collect());
    }
    let next = AtomicUsize::new(0);
    let slots: Vec<OnceLock<Result<Assignment, Failure>>> =
        items.iter().map(|_| OnceLock::new()).collect();
    rayon::scope(|s| {
        for _ in 0..workers {
            s.spawn(|_| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(k) else { break };
                // Each index is taken once, so each slot is set once.
                let _ = slots[k].set(solve(item));
            });
        }
    });
    Ok(slots
        .into_iter()
        .map(|s| {
            s.into_inner()
                .unwrap_or_else(|| Err(Failure::Panic("an item was not solved".into())))
        })
        .collect())
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
) -> PyResult<Vec<Result<Assignment, Failure>>> {
    let ro = a.readonly();
    let shape = ro.shape().to_vec();
    let rows = sizes(n_rows, shape[0], shape[1], "n_rows")?;
    let cols = sizes(n_cols, shape[0], shape[2], "n_cols")?;
    let packed: Vec<_> = views3(&ro, &rows, &cols)?
        .into_iter()
        .map(|v| T::wrap(v).pack(maximize))
        .collect();
    drop(ro);
    let results = py.detach(|| solve_all(&packed, n_threads));
    recycle(packed);
    results
}

/// Give a batch's copies back to the calling thread's pool (they were taken from it).
fn recycle(packed: Vec<Result<AnyPacked, LsapError>>) {
    packed.into_iter().flatten().for_each(AnyPacked::recycle);
}

/// Solve a batch: a sequence of 2-D float32/float64 arrays (shapes may differ), or one
/// padded 3-D array whose item `b` is its leading `n_rows[b] x n_cols[b]` block. `None`
/// when an item of a sequence is anything but an aligned float32/float64 2-D `ndarray`
/// (the Python wrapper converts the items and calls again).
#[pyfunction]
#[pyo3(signature = (costs, maximize = false, n_threads = None, *, n_rows = None, n_cols = None))]
fn linear_sum_assignment_batch<'py>(
    py: Python<'py>,
    costs: &Bound<'py, PyAny>,
    maximize: bool,
    n_threads: Option<usize>,
    n_rows: Option<Vec<usize>>,
    n_cols: Option<Vec<usize>>,
) -> PyResult<Option<Bound<'py, PyList>>> {
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
            // Every item must be an aligned float32/float64 2-D `ndarray` itself (not a
            // subclass); at the first other item the wrapper converts them all and calls
            // again. Checking here instead of in Python saved 0.3 us an item (a tenth of a
            // 300 x 7 solve).
            let mut borrowed = Vec::new();
            for item in costs.try_iter()? {
                let item = item?;
                if !item.is_exact_instance_of::<PyUntypedArray>() {
                    return Ok(None);
                }
                match Borrowed::new(&item) {
                    Ok(b) => borrowed.push(b),
                    Err(_) => return Ok(None),
                }
            }
            let Ok(views) = borrowed
                .iter()
                .map(Borrowed::view)
                .collect::<PyResult<Vec<_>>>()
            else {
                return Ok(None);
            };
            let packed: Vec<_> = views.into_iter().map(|v| v.pack(maximize)).collect();
            drop(borrowed);
            let results = py.detach(|| solve_all(&packed, n_threads));
            recycle(packed);
            results?
        };
        let out = PyList::empty(py);
        for (k, r) in results.into_iter().enumerate() {
            let a = r.map_err(|e| solve_error(e, &format!("batch item {k}: ")))?;
            out.append(to_numpy(py, a))?;
        }
        Ok(Some(out))
    })
}

/// Panic inside a guarded call, on the calling thread or on a pool worker: lets the tests
/// check that no panic crosses into Python (every real panic would be a bug).
#[pyfunction]
fn _panic_for_tests(py: Python<'_>, on_worker: bool) -> PyResult<()> {
    guard(|| {
        py.detach(|| {
            if on_worker {
                (0..4usize).into_par_iter().for_each(|k| {
                    assert!(k != 3, "test panic on a worker thread");
                });
            } else {
                panic!("test panic on the calling thread");
            }
            Ok(())
        })
    })
}

/// Allow or forbid the AVX copies of the solver's scans (benchmarks measure what they buy;
/// answers are identical either way). Returns the previous setting.
#[pyfunction]
fn _set_avx(allowed: bool) -> bool {
    lsap::set_avx(allowed)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    install_hook();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(linear_sum_assignment, m)?)?;
    m.add_function(wrap_pyfunction!(linear_sum_assignment_batch, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_for_tests, m)?)?;
    m.add_function(wrap_pyfunction!(_set_avx, m)?)?;
    Ok(())
}

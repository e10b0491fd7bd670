//! Borrowed numpy arrays as solver views, in their own precision, with one reusable
//! solver per thread and element type.

use std::cell::RefCell;

use lsap::{Assignment, Float, LsapError, MatrixView, Solver};
use numpy::prelude::*;
use numpy::{Element, PyArray2, PyReadonlyArray2, PyReadonlyArray3};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

/// Work buffers kept above this many elements are released after a solve.
const KEEP_ELEMENTS: usize = 1 << 20;

/// An element type solved natively, with one reusable solver per thread.
pub(crate) trait Native: Float + Element {
    fn with_solver<R>(f: impl FnOnce(&mut Solver<Self>) -> R) -> R;
    fn wrap(v: MatrixView<'_, Self>) -> AnyView<'_>;
}

macro_rules! native {
    ($t:ty, $name:ident, $variant:ident) => {
        thread_local! {
            static $name: RefCell<Solver<$t>> = RefCell::new(Solver::new());
        }
        impl Native for $t {
            fn with_solver<R>(f: impl FnOnce(&mut Solver<Self>) -> R) -> R {
                $name.with(|s| {
                    let mut s = s.borrow_mut();
                    let r = f(&mut s);
                    s.trim(KEEP_ELEMENTS);
                    r
                })
            }
            fn wrap(v: MatrixView<'_, Self>) -> AnyView<'_> {
                AnyView::$variant(v)
            }
        }
    };
}

native!(f32, SOLVER_F32, F32);
native!(f64, SOLVER_F64, F64);

/// One matrix of a batch in its own precision.
#[derive(Clone, Copy)]
pub(crate) enum AnyView<'a> {
    F32(MatrixView<'a, f32>),
    F64(MatrixView<'a, f64>),
}

impl AnyView<'_> {
    pub(crate) fn solve(self, maximize: bool) -> Result<Assignment, LsapError> {
        fn go<T: Native>(v: MatrixView<'_, T>, maximize: bool) -> Result<Assignment, LsapError> {
            T::with_solver(|s| s.solve(v, maximize))
        }
        match self {
            Self::F32(v) => go(v, maximize),
            Self::F64(v) => go(v, maximize),
        }
    }

    pub(crate) fn work(self) -> usize {
        let (r, c) = match self {
            Self::F32(v) => v.shape(),
            Self::F64(v) => v.shape(),
        };
        r.saturating_mul(c).saturating_mul(r.min(c))
    }
}

/// Element strides of an aligned array (numpy gives bytes; aligned implies divisible).
fn element_strides<T>(strides: &[isize]) -> Vec<isize> {
    let size = std::mem::size_of::<T>() as isize;
    strides.iter().map(|s| s / size).collect()
}

/// A TypeError, like every other input the core does not take as is (the Python wrapper
/// copies unaligned arrays before calling it).
fn not_aligned() -> PyErr {
    PyTypeError::new_err("cost matrix must be an aligned array (use matcher_rs, which copies it)")
}

/// A view of a borrowed 2-D array.
fn view2<'a, T: Native>(a: &'a PyReadonlyArray2<'_, T>) -> PyResult<MatrixView<'a, T>> {
    if !a.is_aligned() {
        return Err(not_aligned());
    }
    let (shape, s) = (a.shape(), element_strides::<T>(a.strides()));
    // SAFETY: numpy guarantees every in-range element of an aligned array is a valid `T`;
    // the readonly borrow keeps the array alive (and unborrowed mutably from Rust) for 'a.
    Ok(unsafe { MatrixView::from_raw_parts(a.data(), shape[0], shape[1], s[0], s[1]) })
}

/// Views of the leading `rows[b] x cols[b]` block of each item of a borrowed 3-D array.
pub(crate) fn views3<'a, T: Native>(
    a: &'a PyReadonlyArray3<'_, T>,
    rows: &[usize],
    cols: &[usize],
) -> PyResult<Vec<MatrixView<'a, T>>> {
    if !a.is_aligned() {
        return Err(not_aligned());
    }
    let (shape, s) = (a.shape(), element_strides::<T>(a.strides()));
    (0..shape[0])
        .map(|b| {
            let (r, c) = (rows[b], cols[b]);
            if r > shape[1] || c > shape[2] {
                return Err(PyValueError::new_err(format!(
                    "batch item {b}: size ({r}, {c}) exceeds the padded shape ({}, {})",
                    shape[1], shape[2]
                )));
            }
            // SAFETY: item `b` and the block `r x c` lie inside the array (checked above);
            // the borrow keeps the data alive for 'a.
            Ok(unsafe {
                MatrixView::from_raw_parts(a.data().offset(b as isize * s[0]), r, c, s[1], s[2])
            })
        })
        .collect()
}

/// A borrowed 2-D array of a batch list.
pub(crate) enum Borrowed<'py> {
    F32(PyReadonlyArray2<'py, f32>),
    F64(PyReadonlyArray2<'py, f64>),
}

impl<'py> Borrowed<'py> {
    pub(crate) fn new(a: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(a) = a.cast::<PyArray2<f64>>() {
            Ok(Self::F64(a.readonly()))
        } else if let Ok(a) = a.cast::<PyArray2<f32>>() {
            Ok(Self::F32(a.readonly()))
        } else {
            Err(PyTypeError::new_err(
                "expected an aligned 2-D numpy array of float32 or float64 \
                 (matcher_rs.linear_sum_assignment converts other inputs)",
            ))
        }
    }

    pub(crate) fn view(&self) -> PyResult<AnyView<'_>> {
        match self {
            Self::F32(a) => view2(a).map(AnyView::F32),
            Self::F64(a) => view2(a).map(AnyView::F64),
        }
    }
}

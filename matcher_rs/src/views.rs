//! Borrowed numpy arrays as solver views, in their own precision, copied into owned
//! [`Packed`] matrices while the GIL is held; one reusable solver (and, for single solves,
//! one copy buffer) per thread and element type.

use std::cell::RefCell;

use lsap::{Assignment, Float, LsapError, MatrixView, Packed, Solver};
use numpy::prelude::*;
use numpy::{Element, PyArray2, PyReadonlyArray2, PyReadonlyArray3};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

/// Work buffers kept above this many elements are released after a solve.
const KEEP_ELEMENTS: usize = 1 << 20;

/// Copy buffers are kept for the thread's next solves up to this many elements in all (a
/// 4096 x 4096 matrix: 128 MiB in float64): allocating and faulting in a fresh buffer of
/// that size costs about as much as copying into it.
const KEEP_COPY_ELEMENTS: usize = 1 << 24;

/// At most this many copy buffers are kept per thread and element type (a batch takes one
/// per item).
const KEEP_COPY_BUFFERS: usize = 1024;

/// Copy buffers kept for the next solves on this thread. A batch packs every item before
/// solving; with fresh buffers, the allocator handed the batch's memory back to the system
/// after each call (its total exceeds glibc's trim threshold), and the next call faulted
/// every page in again: 32 float64 300 x 60 copies (4.6 MB) took 1.4x as long as one
/// solve after another.
pub(crate) struct Pool<T> {
    buffers: Vec<Vec<T>>,
    elements: usize,
}

impl<T> Pool<T> {
    const fn new() -> Self {
        Self {
            buffers: Vec::new(),
            elements: 0,
        }
    }

    fn take(&mut self) -> Vec<T> {
        match self.buffers.pop() {
            Some(b) => {
                self.elements -= b.capacity();
                b
            }
            None => Vec::new(),
        }
    }

    fn keep(&mut self, buffer: Vec<T>) {
        let total = self.elements.saturating_add(buffer.capacity());
        if buffer.capacity() > 0
            && total <= KEEP_COPY_ELEMENTS
            && self.buffers.len() < KEEP_COPY_BUFFERS
        {
            self.elements = total;
            self.buffers.push(buffer);
        }
    }
}

/// An element type solved natively, with one reusable solver and copy buffer per thread.
pub(crate) trait Native: Float + Element {
    fn with_solver<R>(f: impl FnOnce(&mut Solver<Self>) -> R) -> R;
    fn take_buffer() -> Vec<Self>;
    fn keep_buffer(buffer: Vec<Self>);
    fn wrap(v: MatrixView<'_, Self>) -> AnyView<'_>;
}

macro_rules! native {
    ($t:ty, $solver:ident, $buffer:ident, $variant:ident) => {
        thread_local! {
            static $solver: RefCell<Solver<$t>> = RefCell::new(Solver::new());
            static $buffer: RefCell<Pool<$t>> = const { RefCell::new(Pool::new()) };
        }
        impl Native for $t {
            fn with_solver<R>(f: impl FnOnce(&mut Solver<Self>) -> R) -> R {
                $solver.with(|s| {
                    let mut s = s.borrow_mut();
                    let r = f(&mut s);
                    s.trim(KEEP_ELEMENTS);
                    r
                })
            }
            fn take_buffer() -> Vec<Self> {
                $buffer.with(|b| b.borrow_mut().take())
            }
            fn keep_buffer(buffer: Vec<Self>) {
                $buffer.with(|b| b.borrow_mut().keep(buffer))
            }
            fn wrap(v: MatrixView<'_, Self>) -> AnyView<'_> {
                AnyView::$variant(v)
            }
        }
    };
}

native!(f32, SOLVER_F32, BUFFER_F32, F32);
native!(f64, SOLVER_F64, BUFFER_F64, F64);

/// One borrowed matrix in its own precision (valid only while the GIL is held).
#[derive(Clone, Copy)]
pub(crate) enum AnyView<'a> {
    F32(MatrixView<'a, f32>),
    F64(MatrixView<'a, f64>),
}

impl AnyView<'_> {
    /// The owned copy the solver reads once the GIL is released (see [`Packed`]), in a
    /// buffer of this thread's pool (give it back with [`AnyPacked::recycle`]).
    pub(crate) fn pack(self, maximize: bool) -> Result<AnyPacked, LsapError> {
        fn go<T: Native>(v: MatrixView<'_, T>, maximize: bool) -> Result<Packed<T>, LsapError> {
            let mut buffer = T::take_buffer();
            let (r, c) = v.shape();
            buffer.clear();
            // On failure `Packed::new` reports the allocation error with the shape.
            if r.checked_mul(c)
                .is_some_and(|n| buffer.try_reserve(n).is_ok())
            {
                advise_huge_pages(&buffer);
            }
            Packed::new(v, maximize, buffer)
        }
        Ok(match self {
            Self::F32(v) => AnyPacked::F32(go(v, maximize)?),
            Self::F64(v) => AnyPacked::F64(go(v, maximize)?),
        })
    }
}

/// Ask Linux to back a large buffer with transparent huge pages, as numpy does for its
/// own large arrays: the solver reads rows all over a large matrix, and with 4 KiB pages
/// the TLB misses make a 1000 x 1000 solve about 20 % slower than on numpy's memory.
fn advise_huge_pages<T>(buffer: &Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = buffer.as_ptr() as usize;
        let end = start + buffer.capacity() * std::mem::size_of::<T>();
        let first = start.next_multiple_of(HUGE);
        let last = end / HUGE * HUGE;
        if last > first {
            // SAFETY: [first, last) lies inside the buffer's allocation and is aligned to
            // every page size; MADV_HUGEPAGE is only a hint about how to back those pages:
            // it neither reads, writes nor unmaps memory. Its result is ignored, since a
            // kernel without huge pages just keeps small ones.
            unsafe {
                libc::madvise(
                    first as *mut libc::c_void,
                    last - first,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buffer;
}

/// One owned copy of a matrix in its own precision.
pub(crate) enum AnyPacked {
    F32(Packed<f32>),
    F64(Packed<f64>),
}

impl AnyPacked {
    pub(crate) fn solve(&self) -> Result<Assignment, LsapError> {
        match self {
            Self::F32(p) => f32::with_solver(|s| s.solve_packed(p)),
            Self::F64(p) => f64::with_solver(|s| s.solve_packed(p)),
        }
    }

    /// Give the copy's memory back to this thread's pool, for the next solves.
    pub(crate) fn recycle(self) {
        match self {
            Self::F32(p) => f32::keep_buffer(p.into_buffer()),
            Self::F64(p) => f64::keep_buffer(p.into_buffer()),
        }
    }

    /// Estimated work, `rows * cols * min(rows, cols)`.
    pub(crate) fn work(&self) -> usize {
        let (r, c) = match self {
            Self::F32(p) => p.shape(),
            Self::F64(p) => p.shape(),
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

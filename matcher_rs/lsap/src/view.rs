//! A borrowed, strided 2-D view: C-ordered, Fortran-ordered and sliced numpy arrays
//! all map onto it without a copy.

use core::marker::PhantomData;

/// A read-only `rows x cols` matrix whose element `(i, j)` lives at
/// `ptr + i * row_stride + j * col_stride` (strides in elements, possibly negative or zero).
///
/// It is `Copy` and behaves like a `&'a [T]`: it never owns or writes the data.
#[derive(Debug)]
pub struct MatrixView<'a, T> {
    ptr: *const T,
    rows: usize,
    cols: usize,
    row_stride: isize,
    col_stride: isize,
    _borrow: PhantomData<&'a [T]>,
}

impl<T> Clone for MatrixView<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for MatrixView<'_, T> {}

// SAFETY: a view is a shared borrow of `T`s, exactly like `&[T]`.
unsafe impl<T: Sync> Send for MatrixView<'_, T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for MatrixView<'_, T> {}

/// Why a slice cannot back a view of the requested shape and strides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfBounds;

impl core::fmt::Display for OutOfBounds {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("view shape and strides reach past the end of the slice")
    }
}

impl std::error::Error for OutOfBounds {}

impl<'a, T> MatrixView<'a, T> {
    /// A row-major (C-ordered) view of `data`, which must hold at least `rows * cols` elements.
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Result<Self, OutOfBounds> {
        Self::strided(data, rows, cols, cols, 1)
    }

    /// A column-major (Fortran-ordered) view of `data`.
    pub fn col_major(data: &'a [T], rows: usize, cols: usize) -> Result<Self, OutOfBounds> {
        Self::strided(data, rows, cols, 1, rows)
    }

    /// A view with non-negative element strides; every element must lie inside `data`.
    pub fn strided(
        data: &'a [T],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self, OutOfBounds> {
        if rows != 0 && cols != 0 {
            let last = (rows - 1)
                .checked_mul(row_stride)
                .and_then(|a| {
                    (cols - 1)
                        .checked_mul(col_stride)
                        .and_then(|b| a.checked_add(b))
                })
                .ok_or(OutOfBounds)?;
            if last >= data.len() || last > isize::MAX as usize {
                return Err(OutOfBounds);
            }
        }
        Ok(Self {
            ptr: data.as_ptr(),
            rows,
            cols,
            // Both fit: each is at most `last` when its dimension exceeds 1.
            row_stride: if rows > 1 { row_stride as isize } else { 0 },
            col_stride: if cols > 1 { col_stride as isize } else { 0 },
            _borrow: PhantomData,
        })
    }

    /// A view over raw memory, e.g. a numpy array's data pointer and its strides
    /// (converted from bytes to elements).
    ///
    /// # Safety
    /// For every `i < rows`, `j < cols`, `ptr.offset(i * row_stride + j * col_stride)` must be
    /// a valid, aligned, initialised `T` for the lifetime `'a`, not written while the view lives.
    pub unsafe fn from_raw_parts(
        ptr: *const T,
        rows: usize,
        cols: usize,
        row_stride: isize,
        col_stride: isize,
    ) -> Self {
        Self {
            ptr,
            rows,
            cols,
            row_stride,
            col_stride,
            _borrow: PhantomData,
        }
    }

    /// Number of rows.
    #[inline]
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    #[inline]
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// `(rows, cols)`.
    #[inline]
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Row stride in elements.
    #[inline]
    pub fn row_stride(&self) -> isize {
        self.row_stride
    }

    /// Column stride in elements.
    #[inline]
    pub fn col_stride(&self) -> isize {
        self.col_stride
    }

    /// The transposed view (no copy).
    #[inline]
    pub fn t(self) -> Self {
        Self {
            ptr: self.ptr,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            _borrow: PhantomData,
        }
    }

    /// Element `(i, j)`; panics when out of range.
    #[inline]
    pub fn get(&self, i: usize, j: usize) -> T
    where
        T: Copy,
    {
        assert!(
            i < self.rows && j < self.cols,
            "index ({i}, {j}) out of range"
        );
        // SAFETY: in range, and the constructors guarantee every in-range element is valid.
        unsafe {
            *self
                .ptr
                .offset(i as isize * self.row_stride + j as isize * self.col_stride)
        }
    }

    /// Row `i` as a slice, when the columns are contiguous (the solver's fast path).
    #[inline]
    pub(crate) fn contiguous_row(&self, i: usize) -> Option<&'a [T]> {
        if i >= self.rows || (self.col_stride != 1 && self.cols > 1) {
            return None;
        }
        // SAFETY: with unit column stride, row `i` is the `cols` consecutive valid elements
        // starting at `ptr + i * row_stride` (constructor contract).
        Some(unsafe {
            core::slice::from_raw_parts(self.ptr.offset(i as isize * self.row_stride), self.cols)
        })
    }

    /// Whether every row is one contiguous slice.
    #[inline]
    pub(crate) fn has_contiguous_rows(&self) -> bool {
        self.col_stride == 1 || self.cols <= 1
    }
}

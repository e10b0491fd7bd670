//! Exact linear sum assignment for dense rectangular matrices.
//!
//! Given an `n x m` cost matrix, find a set of `min(n, m)` pairs `(row, col)`, no row
//! or column used twice, with the smallest (or largest, `maximize`) total cost. The
//! contract is scipy's `linear_sum_assignment`:
//!
//! * `+inf` marks a forbidden pair (`-inf` when maximising);
//! * NaN, and `-inf` when minimising (`+inf` when maximising), give
//!   [`LsapError::InvalidEntries`];
//! * no complete assignment without forbidden pairs gives [`LsapError::Infeasible`];
//! * rows come back sorted ascending; an empty matrix gives an empty assignment;
//! * the answer is optimal (up to rounding) or an error, never a wrong assignment: costs
//!   so large that the dual variables would overflow (magnitudes near the type's maximum)
//!   are detected and solved again rescaled by a power of two, which is exact.
//!
//! `f32` and `f64` are solved natively (no conversion), and the input is a strided
//! [`MatrixView`], so C-ordered, Fortran-ordered and sliced buffers need no copy (a
//! matrix with more rows than columns is solved on its transpose; when that transpose
//! has strided rows, one working copy is made). The arithmetic is in the input type, so
//! an `f32` matrix is optimal up to `f32` rounding.
//!
//! The algorithm: row reduction (on a square matrix, then the free columns' duals raised
//! as far as the assigned rows allow) and Jonker-Volgenant's augmenting row reduction
//! assign most rows cheaply; each remaining row is assigned by a shortest augmenting path
//! (Dijkstra over reduced costs with dual variables), O(rows^2 * cols) in the worst case.
//! The dense scans are safe Rust in lane blocks, also compiled for AVX and picked at run
//! time when the CPU has it.
//!
//! ```
//! use lsap::{linear_sum_assignment, MatrixView};
//! let cost = [4.0_f64, 1.0, 3.0, 2.0, 0.0, 5.0, 3.0, 2.0, 2.0];
//! let a = linear_sum_assignment(MatrixView::row_major(&cost, 3, 3).unwrap(), false).unwrap();
//! assert_eq!(a.rows, [0, 1, 2]);
//! assert_eq!(a.cols, [1, 0, 2]);
//! ```

mod float;
#[doc(hidden)]
pub mod fuzz_input;
mod packed;
mod scan;
mod solver;
mod view;

#[cfg(test)]
mod tests;

pub use float::Float;
pub use packed::Packed;
pub use scan::set_avx;
pub use solver::Solver;
pub use view::{MatrixView, OutOfBounds};

/// Why a matrix has no solution; `Display` gives scipy's exact messages where scipy has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LsapError {
    /// A NaN, or an infinity of the wrong sign for the direction of optimisation.
    InvalidEntries,
    /// Every complete assignment uses a forbidden pair.
    Infeasible,
    /// The dual variables overflow even after the costs are rescaled by a power of two
    /// (never seen in tests; reported rather than returning a possibly wrong answer).
    TooLarge,
    /// The work buffers for a `rows x cols` problem could not be allocated.
    OutOfMemory {
        /// Rows of the cost matrix.
        rows: usize,
        /// Columns of the cost matrix.
        cols: usize,
    },
}

impl core::fmt::Display for LsapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::InvalidEntries => f.write_str("matrix contains invalid numeric entries"),
            Self::Infeasible => f.write_str("cost matrix is infeasible"),
            Self::TooLarge => f.write_str(
                "cost matrix entries too large to solve exactly (the dual variables overflow); \
                 scale the costs down",
            ),
            Self::OutOfMemory { rows, cols } => write!(
                f,
                "cannot allocate the work memory to solve a {rows} x {cols} cost matrix"
            ),
        }
    }
}

impl std::error::Error for LsapError {}

/// An optimal assignment: `cols[k]` is the column of row `rows[k]`; `rows` ascending.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    /// Assigned rows, ascending.
    pub rows: Vec<usize>,
    /// The column of each assigned row.
    pub cols: Vec<usize>,
}

impl Assignment {
    /// Total cost of the assignment under `cost` (summed in `f64`).
    pub fn total<T: Float>(&self, cost: MatrixView<'_, T>) -> f64 {
        self.rows
            .iter()
            .zip(&self.cols)
            .map(|(&i, &j)| cost.get(i, j).to_f64())
            .sum()
    }
}

/// Solve one problem with fresh buffers (use a [`Solver`] to reuse them across calls).
pub fn linear_sum_assignment<T: Float>(
    cost: MatrixView<'_, T>,
    maximize: bool,
) -> Result<Assignment, LsapError> {
    Solver::new().solve(cost, maximize)
}

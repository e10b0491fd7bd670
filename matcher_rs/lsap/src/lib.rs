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
//! * rows come back sorted ascending; an empty matrix gives an empty assignment.
//!
//! `f32` and `f64` are solved natively (no conversion), and the input is a strided
//! [`MatrixView`], so C-ordered, Fortran-ordered and sliced buffers need no copy (a
//! matrix with more rows than columns is solved on its transpose; when that transpose
//! has strided rows, one working copy is made). The arithmetic is in the input type:
//! `f32` entries whose differences overflow `f32` (magnitudes near 1.7e38) may be
//! reported infeasible, where scipy, working in `f64`, would not.
//!
//! The algorithm: row reduction and Jonker-Volgenant's augmenting row reduction assign
//! most rows cheaply; each remaining row is assigned by a shortest augmenting path
//! (Dijkstra over reduced costs with dual variables), O(rows^2 * cols) in the worst case.
//! The dense scans use AVX when the CPU has it (detected at run time).
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
mod scan;
mod solver;
mod view;

#[cfg(test)]
mod tests;

pub use float::Float;
pub use solver::Solver;
pub use view::{MatrixView, OutOfBounds};

/// Why a matrix has no solution; `Display` gives scipy's exact messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LsapError {
    /// A NaN, or an infinity of the wrong sign for the direction of optimisation.
    InvalidEntries,
    /// Every complete assignment uses a forbidden pair.
    Infeasible,
}

impl core::fmt::Display for LsapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::InvalidEntries => "matrix contains invalid numeric entries",
            Self::Infeasible => "cost matrix is infeasible",
        })
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

//! The shortest-augmenting-path solver (Jonker-Volgenant family) with reusable buffers.
//!
//! The matrix is solved with `rows <= cols` (a taller matrix is transposed logically).
//! Dual variables `u` (rows) and `v` (columns) are kept so that every reduced cost
//! `c[i][j] - u[i] - v[j]` is non-negative, assigned pairs have reduced cost zero, and
//! `v[j] == 0` for every unassigned column; the last condition makes the rectangular
//! solution optimal, not only the square one. A cheap start (row reduction plus
//! Jonker-Volgenant's augmenting row reduction) assigns most rows; each remaining row is
//! then assigned by one Dijkstra search over reduced costs (O(rows * cols) per row).
//!
//! A square problem needs no `v == 0` at unassigned columns (there are none at the end),
//! so after the row reduction its free columns' `v` are raised as far as the assigned rows
//! allow (one more pass over the matrix): each free column becomes tight with some row,
//! which the augmenting row reduction then moves onto it, and the searches reach free
//! columns sooner. At 4000 x 4000 this halves the rows scanned by the searches on uniform
//! and integer costs; it is skipped when the row reduction left few rows free.
//!
//! The duals are sums of costs along alternating paths, so with costs near the type's
//! maximum they overflow. Overflow never passes silently: a solve whose duals end up
//! non-finite (or near the maximum), or that finds no path where Hall's condition holds,
//! is repeated on a copy scaled down by a power of two (exact, optimum unchanged).

use crate::packed::{invalid, pack, packed_view, rescale, OOM};
use crate::scan::at;
use crate::{Assignment, Float, LsapError, MatrixView, Packed};

const NONE: usize = usize::MAX;

/// Augmenting-row-reduction steps allowed per row and pass before the remaining rows
/// are left to the exact search (the heuristic only has to be cheap, never complete): one
/// per `ARR_COLS_PER_STEP` columns, between `ARR_STEPS` bounds. A step and a search's row
/// scan cost alike, but the searches grow longer with the size (the last ones scan a good
/// part of the rows), so larger problems afford more steps. Measured against laprust
/// (thread CPU time, uniform and DETR-like costs): 2 steps beat 8 by 1.2-1.4x at 100 to
/// 300 square, 8 beat 2 by 1.07-1.17x at 2000 to 4000 (16 or 32 gained nothing).
const ARR_STEPS: (usize, usize) = (2, 8);
const ARR_COLS_PER_STEP: usize = 256;

/// Passes of the augmenting row reduction over the free rows at most (it stops early once
/// a pass assigns nothing; rows evicted at a tie wait for the next pass). Against
/// Jonker-Volgenant's two: 0.94-1.18x (median 1.04x, within this machine's noise) at 300
/// to 4000 square, uniform, integer and DETR-like costs, laprust as the anchor.
const ARR_PASSES: usize = 4;

/// The square start raises the free columns' duals (one more pass over the matrix) only
/// when more than one row in this many is left free by the row reduction.
const RAISE_FREE_RATIO: usize = 8;

/// A linear-assignment solver owning its work buffers, so repeated solves of
/// similar sizes do not allocate.
#[derive(Debug)]
pub struct Solver<T> {
    packed: Vec<T>,
    u: Vec<T>,
    v: Vec<T>,
    dist: Vec<T>,
    col4row: Vec<usize>,
    row4col: Vec<usize>,
    scanned: Vec<(usize, T)>,
    scan_rows: Vec<(usize, T)>,
    free: Vec<usize>,
    next_free: Vec<usize>,
    free_cols: Vec<usize>,
    /// Whether `free_cols` is kept (see `run`).
    track_free_cols: bool,
}

impl<T> Default for Solver<T> {
    fn default() -> Self {
        Self {
            packed: Vec::new(),
            u: Vec::new(),
            v: Vec::new(),
            dist: Vec::new(),
            col4row: Vec::new(),
            row4col: Vec::new(),
            scanned: Vec::new(),
            scan_rows: Vec::new(),
            free: Vec::new(),
            next_free: Vec::new(),
            free_cols: Vec::new(),
            track_free_cols: false,
        }
    }
}

impl<T: Float> Solver<T> {
    /// A solver with empty buffers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Drop buffers grown past `max_elements` (a huge one-off problem need not keep
    /// its memory for the lifetime of a thread).
    pub fn trim(&mut self, max_elements: usize) {
        if self.packed.capacity() > max_elements {
            self.packed = Vec::new();
        }
        if self.v.capacity() > max_elements {
            *self = Self::new();
        }
    }

    /// Solve and return the assignment (see [`Solver::solve_into`]).
    pub fn solve(
        &mut self,
        cost: MatrixView<'_, T>,
        maximize: bool,
    ) -> Result<Assignment, LsapError> {
        let mut out = Assignment::default();
        self.solve_into(cost, maximize, &mut out.rows, &mut out.cols)?;
        Ok(out)
    }

    /// Solve the assignment problem for `cost`, writing `min(rows, cols)` pairs into
    /// `rows_out` / `cols_out` (cleared first), sorted by row.
    ///
    /// `+inf` (or `-inf` when maximising) marks a forbidden pair; NaN and `-inf`
    /// (`+inf` when maximising) give [`LsapError::InvalidEntries`]; when no assignment
    /// of every row (or every column, whichever is fewer) avoids forbidden pairs,
    /// [`LsapError::Infeasible`].
    ///
    /// A view with contiguous rows is read in place: it must not change while solving
    /// (the borrow guarantees it for Rust data; see [`Packed`] for memory others may write).
    pub fn solve_into(
        &mut self,
        cost: MatrixView<'_, T>,
        maximize: bool,
        rows_out: &mut Vec<usize>,
        cols_out: &mut Vec<usize>,
    ) -> Result<(), LsapError> {
        rows_out.clear();
        cols_out.clear();
        let (nr, nc) = cost.shape();
        if nr == 0 || nc == 0 {
            return Ok(());
        }
        let transposed = nr > nc;
        let m = if transposed { cost.t() } else { cost };
        let mut packed = core::mem::take(&mut self.packed);
        let result = self.solve_oriented(m, maximize, &mut packed);
        self.packed = packed;
        self.write_out(result, (nr, nc), transposed, rows_out, cols_out)
    }

    /// Solve a [`Packed`] copy (the original matrix's assignment, as [`Solver::solve`]).
    pub fn solve_packed(&mut self, cost: &Packed<T>) -> Result<Assignment, LsapError> {
        let mut out = Assignment::default();
        let (nr, nc) = cost.shape();
        if nr == 0 || nc == 0 {
            return Ok(out);
        }
        let m = cost.oriented();
        let mut packed = core::mem::take(&mut self.packed);
        let mut result = self.run::<false>(m);
        if result == Err(LsapError::TooLarge) {
            result = pack(m, rescale(m), &mut packed)
                .and_then(|()| self.run::<false>(packed_view(&packed, m.rows(), m.cols())));
        }
        self.packed = packed;
        self.write_out(
            result,
            (nr, nc),
            cost.transposed(),
            &mut out.rows,
            &mut out.cols,
        )?;
        Ok(out)
    }

    /// The assignment of the original `shape` from the oriented solve's `result`.
    fn write_out(
        &self,
        result: Result<(), LsapError>,
        shape: (usize, usize),
        transposed: bool,
        rows_out: &mut Vec<usize>,
        cols_out: &mut Vec<usize>,
    ) -> Result<(), LsapError> {
        let oom = LsapError::OutOfMemory {
            rows: shape.0,
            cols: shape.1,
        };
        result.map_err(|e| match e {
            LsapError::OutOfMemory { .. } => oom,
            e => e,
        })?;
        let k = shape.0.min(shape.1);
        // One spare slot: the branch-free transposed write-out below writes one past.
        rows_out.try_reserve(k + 1).map_err(|_| oom)?;
        cols_out.try_reserve(k + 1).map_err(|_| oom)?;
        if transposed {
            // The original rows are the oriented columns, in ascending order: one pass over
            // the columns that writes every column's pair and advances past the assigned
            // ones only (branch-free: a taken column is rare on a tall matrix, and the
            // branch per column was a tenth of a 7 x 300 solve).
            rows_out.resize(k + 1, 0);
            cols_out.resize(k + 1, 0);
            let mut n = 0;
            for (j, &i) in self.row4col.iter().enumerate() {
                rows_out[n] = j;
                cols_out[n] = i;
                // Exactly `k` columns are assigned; the clamp only keeps the writes after
                // the last of them in the spare slot.
                n = (n + usize::from(i != NONE)).min(k);
            }
            debug_assert_eq!(n, k);
            rows_out.truncate(k);
            cols_out.truncate(k);
        } else {
            rows_out.extend(0..shape.0);
            cols_out.extend_from_slice(&self.col4row);
        }
        Ok(())
    }

    /// Solve `m` (rows <= cols); when the dual variables overflow, solve again on a copy
    /// scaled down by a power of two. Scaling by `2^-s` is exact (unless an entry becomes
    /// subnormal, which only entries below `2^(s - 1022)` times the smallest normal can,
    /// negligible beside the largest) and leaves the optimal assignments unchanged.
    fn solve_oriented(
        &mut self,
        m: MatrixView<'_, T>,
        maximize: bool,
        packed: &mut Vec<T>,
    ) -> Result<(), LsapError> {
        let sign = if maximize { -T::exp2i(0) } else { T::exp2i(0) };
        let first = if m.has_contiguous_rows() {
            if maximize {
                self.validate_and_run::<true>(m)
            } else {
                self.validate_and_run::<false>(m)
            }
        } else {
            // Strided columns (e.g. the transposed view of a C-ordered matrix): one
            // packing pass makes every later row scan contiguous.
            pack(m, sign, packed)?;
            self.run::<false>(packed_view(packed, m.rows(), m.cols()))
        };
        if first != Err(LsapError::TooLarge) {
            return first;
        }
        pack(m, sign * rescale(m), packed)?;
        self.run::<false>(packed_view(packed, m.rows(), m.cols()))
    }

    /// Solve `m` (rows <= cols, contiguous rows, negated when `NEG`). Returns
    /// [`LsapError::TooLarge`] when the dual variables came near overflow: intermediate
    /// overflow gives `+-inf` or NaN, and those stay non-finite under the `+` and `-`
    /// updates, so a final check of the duals catches every overflow that could have
    /// steered the search (an overflow to `+inf` in a distance only hides a column
    /// whose true distance exceeds every finite one; `augment` checks the infeasible case).
    fn validate_and_run<const NEG: bool>(&mut self, m: MatrixView<'_, T>) -> Result<(), LsapError> {
        let rows = Rows::new(m);
        for i in 0..m.rows() {
            if rows
                .row(i)
                .iter()
                .fold(false, |bad, &x| bad | invalid(at::<T, NEG>(x)))
            {
                return Err(LsapError::InvalidEntries);
            }
        }
        self.run::<NEG>(m)
    }

    /// Solve `m` (rows <= cols, contiguous rows, negated when `NEG`, entries already
    /// validated); [`LsapError::TooLarge`] as [`Solver::validate_and_run`].
    fn run<const NEG: bool>(&mut self, m: MatrixView<'_, T>) -> Result<(), LsapError> {
        let rows = Rows::new(m);
        self.reset(m.rows(), m.cols())?;
        self.reduce_rows::<NEG>(rows)?;
        // Square only (see `raise_free_cols`), and only when the searches ahead are many:
        // with few free rows (many ties) the extra pass over the matrix costs more.
        if m.rows() == m.cols() && self.free.len() * RAISE_FREE_RATIO > m.rows() {
            self.raise_free_cols::<NEG>(rows);
        }
        for _pass in 0..ARR_PASSES {
            let before = self.free.len();
            if before == 0 {
                break;
            }
            self.augmenting_row_reduction::<NEG>(rows);
            if self.free.len() == before {
                break;
            }
        }
        for i in 0..m.rows() {
            let j = self.col4row[i];
            if j != NONE {
                self.u[i] = at::<T, NEG>(rows.row(i)[j]) - self.v[j];
            }
        }
        // The free columns are listed only where `augment` may consult them (few beside
        // a row): a wide problem always keeps at least `cols - rows` free, and on a tall
        // DETR matrix (7 x 300 transposed) building the list was a third of the solve.
        self.free_cols.clear();
        self.track_free_cols = (m.cols() - m.rows()) * 4 <= m.cols();
        if self.track_free_cols {
            let unassigned = (0..m.cols()).filter(|&j| self.row4col[j] == NONE);
            self.free_cols.extend(unassigned);
        }
        let free = core::mem::take(&mut self.free);
        let result = free.iter().try_for_each(|&i| self.augment::<NEG>(rows, i));
        self.free = free;
        result?;
        // A margin of 16 below the maximum: duals that large mean some intermediate sum
        // may have come near it (the check is O(rows + cols), negligible beside the solve).
        // Branch-free (a fold, not a short-circuiting `any`), so it vectorises: with `any`
        // this O(cols) check was a sixth of a 7 x 300 solve.
        let limit = T::MAX * T::exp2i(-4);
        let near_overflow = |bad: bool, &x: &T| bad | x.is_nan() | (x.abs() > limit);
        if self.u.iter().fold(false, near_overflow) | self.v.iter().fold(false, near_overflow) {
            return Err(LsapError::TooLarge);
        }
        Ok(())
    }

    /// Size every buffer for an `nr x nc` problem up front, so that no later push
    /// allocates (an allocation failure is an error here, not an abort mid-solve).
    fn reset(&mut self, nr: usize, nc: usize) -> Result<(), LsapError> {
        fn fill<X: Copy>(buf: &mut Vec<X>, n: usize, x: X) -> Result<(), LsapError> {
            buf.clear();
            buf.try_reserve(n).map_err(|_| OOM)?;
            buf.resize(n, x);
            Ok(())
        }
        fn room<X>(buf: &mut Vec<X>, n: usize) -> Result<(), LsapError> {
            buf.clear();
            buf.try_reserve(n).map_err(|_| OOM)
        }
        fill(&mut self.u, nr, T::ZERO)?;
        fill(&mut self.v, nc, T::ZERO)?;
        fill(&mut self.dist, nc, T::INFINITY)?;
        fill(&mut self.col4row, nr, NONE)?;
        fill(&mut self.row4col, nc, NONE)?;
        // At most one entry per row in each (every scanned column is assigned to a row).
        room(&mut self.scanned, nr)?;
        room(&mut self.scan_rows, nr)?;
        room(&mut self.free, nr)?;
        room(&mut self.next_free, nr)?;
        room(&mut self.free_cols, nc)
    }

    /// Square problems only: raise `v` of every unassigned column to the largest value that
    /// keeps the reduced costs of the assigned rows non-negative, `min_i (c[i][j] - u[i])`
    /// over assigned rows `i` (read row by row, never down a column). Free rows' `u` is
    /// only an offset for their search, so it needs no bound; a column no assigned row
    /// may take keeps `v == 0`.
    fn raise_free_cols<const NEG: bool>(&mut self, rows: Rows<'_, T>) {
        let nc = rows.n_cols;
        let mins = &mut self.dist[..nc];
        mins.fill(T::INFINITY);
        for i in 0..rows.n_rows {
            if self.col4row[i] != NONE {
                T::col_min::<NEG>(rows.row(i), self.u[i], mins);
            }
        }
        let cols = self.v[..nc].iter_mut().zip(&*mins).zip(&self.row4col);
        for ((v, &lowest), &owner) in cols {
            if owner == NONE && lowest != T::INFINITY {
                *v = lowest;
            }
        }
    }

    /// `u[i] = min_j c[i][j]` with `v = 0`; a row whose cheapest column is still free
    /// takes it (the first free one among ties, so a constant matrix gives the identity).
    ///
    /// The columns taken gather at the front (each row takes its first free tie), so the
    /// search for a free tie starts at the first free column: the same column is found,
    /// reading 3300 entries instead of 5800 on 100 x 100 costs in [0, 8), 36 000 instead
    /// of 508 000 at 1000 x 1000.
    fn reduce_rows<const NEG: bool>(&mut self, rows: Rows<'_, T>) -> Result<(), LsapError> {
        let mut first_free = 0;
        for i in 0..rows.n_rows {
            let row = rows.row(i);
            let best = T::row_min::<NEG>(row);
            if best == T::INFINITY {
                return Err(LsapError::Infeasible);
            }
            self.u[i] = best;
            // Stored values equal to the minimum (negation is exact), in a free column:
            // `v` is 0 at free columns and `-inf` at taken ones while this runs, so one
            // vectorised pass finds the first free tie.
            while first_free < rows.n_cols && self.row4col[first_free] != NONE {
                first_free += 1;
            }
            let from = first_free;
            let j = match T::position_reduced::<NEG>(&row[from..], &self.v[from..], best) {
                NONE => NONE,
                p => from + p,
            };
            if j != NONE {
                self.col4row[i] = j;
                self.row4col[j] = i;
                self.v[j] = T::NEG_INFINITY;
            } else {
                self.free.push(i);
            }
        }
        self.v[..rows.n_cols].fill(T::ZERO);
        Ok(())
    }

    /// Jonker-Volgenant's augmenting row reduction: a free row takes its cheapest
    /// column (by `c - v`), lowering that column's `v` so the row is indifferent between
    /// it and its second choice; the evicted row is retried at once. Only `v` of a column
    /// that ends up assigned ever drops, so the invariants hold at every step.
    fn augmenting_row_reduction<const NEG: bool>(&mut self, rows: Rows<'_, T>) {
        let list = core::mem::take(&mut self.free);
        let mut next = core::mem::take(&mut self.next_free);
        next.clear();
        let per_row = (rows.n_cols / ARR_COLS_PER_STEP).clamp(ARR_STEPS.0, ARR_STEPS.1);
        let mut budget = per_row * list.len();
        let mut pending = NONE;
        let mut k = 0;
        loop {
            let i = if pending != NONE {
                core::mem::replace(&mut pending, NONE)
            } else if k < list.len() {
                k += 1;
                list[k - 1]
            } else {
                break;
            };
            let row = rows.row(i);
            let (u1, u2) = T::top2::<NEG>(row, &self.v);
            if u1 == T::INFINITY {
                // Every pair of this row is forbidden: the exact search reports it.
                next.push(i);
                continue;
            }
            let j1 = T::position_reduced::<NEG>(row, &self.v, u1);
            // The runner-up column matters only on a tie (the first other column at u1).
            let j2 = if u2 == u1 {
                match T::position_reduced::<NEG>(&row[j1 + 1..], &self.v[j1 + 1..], u2) {
                    NONE => NONE,
                    p => j1 + 1 + p,
                }
            } else {
                NONE
            };
            let mut j = j1;
            let mut evicted = self.row4col[j1];
            let strict = u1 < u2 && u2 != T::INFINITY;
            if strict {
                self.v[j1] = self.v[j1] - (u2 - u1);
            } else if evicted != NONE && j2 != NONE && u2 == u1 {
                j = j2;
                evicted = self.row4col[j2];
            }
            self.row4col[j] = i;
            self.col4row[i] = j;
            if evicted != NONE {
                self.col4row[evicted] = NONE;
                if strict && budget > 0 {
                    budget -= 1;
                    pending = evicted;
                } else {
                    next.push(evicted);
                }
            }
        }
        self.free = next;
        self.next_free = list;
    }

    /// Assign `cur` (a free row) by the shortest augmenting path to a free column:
    /// Dijkstra over reduced costs, one dense pass per scanned row.
    fn augment<const NEG: bool>(&mut self, rows: Rows<'_, T>, cur: usize) -> Result<(), LsapError> {
        let nc = rows.n_cols;
        let dist = &mut self.dist[..nc];
        let v = &self.v[..nc];
        dist.fill(T::INFINITY);
        self.scanned.clear();
        self.scan_rows.clear();
        let mut min_val = T::ZERO;
        let mut i = cur;
        let sink = loop {
            let base = min_val - self.u[i];
            self.scan_rows.push((i, base));
            let lowest = T::relax::<NEG>(rows.row(i), v, dist, base);
            if lowest == T::INFINITY {
                return Err(self.why_unreachable::<NEG>(rows));
            }
            let mut j = T::position(dist, lowest);
            min_val = lowest;
            // Among columns tied at the lowest distance, a free one ends the search at once
            // (with many ties, the first tied column is rarely free). Worth a look only
            // while the free columns are few beside a row.
            if self.track_free_cols && self.row4col[j] != NONE && self.free_cols.len() * 4 <= nc {
                if let Some(&f) = self.free_cols.iter().find(|&&f| dist[f] == lowest) {
                    j = f;
                }
            }
            if self.row4col[j] == NONE {
                if !self.track_free_cols {
                    break j;
                }
                if let Some(k) = self.free_cols.iter().position(|&f| f == j) {
                    self.free_cols.swap_remove(k);
                }
                break j;
            }
            // Scanned: NaN keeps the column out of every later update and minimum.
            dist[j] = T::NAN;
            self.scanned.push((j, lowest));
            i = self.row4col[j];
        };
        // Walk back from the sink. The predecessor of a column settled after scan `t` is
        // the first of rows 0..=t whose relaxation produced its distance (recomputed
        // exactly as in the scan, so equality is exact); row `s > 0` was reached through
        // the column settled after scan `s - 1`. Finding predecessors afterwards keeps the
        // dense scan free of index stores, at O(path length * scans) extra work.
        let (mut j, mut d, mut t) = (sink, min_val, self.scan_rows.len() - 1);
        loop {
            let s = (0..=t)
                .find(|&s| {
                    let (r, base) = self.scan_rows[s];
                    base + at::<T, NEG>(rows.row(r)[j]) - self.v[j] == d
                })
                .unwrap_or(t);
            let r = self.scan_rows[s].0;
            self.row4col[j] = r;
            self.col4row[r] = j;
            if s == 0 {
                break;
            }
            (j, d) = self.scanned[s - 1];
            t = s - 1;
        }
        // Dual update over the settled rows and columns (row `t + 1` came from column `t`).
        self.u[cur] = self.u[cur] + min_val;
        for (&(j, d), &(r, _)) in self.scanned.iter().zip(&self.scan_rows[1..]) {
            let delta = min_val - d;
            self.u[r] = self.u[r] + delta;
            self.v[j] = self.v[j] - delta;
        }
        Ok(())
    }

    /// Every unsettled column is at distance `+inf` from the rows scanned so far: the
    /// matrix is infeasible when those rows have no allowed pair outside the settled
    /// columns (Hall's condition fails); otherwise a distance overflowed to `+inf`.
    fn why_unreachable<const NEG: bool>(&self, rows: Rows<'_, T>) -> LsapError {
        let dist = &self.dist[..rows.n_cols];
        let reachable = self.scan_rows.iter().any(|&(r, _)| {
            let row = rows.row(r);
            row.iter()
                .zip(dist)
                .any(|(&c, d)| !d.is_nan() && at::<T, NEG>(c) != T::INFINITY)
        });
        if reachable {
            LsapError::TooLarge
        } else {
            LsapError::Infeasible
        }
    }
}

/// Row access for a view whose rows are contiguous.
#[derive(Clone, Copy)]
struct Rows<'a, T> {
    view: MatrixView<'a, T>,
    n_rows: usize,
    n_cols: usize,
}

impl<'a, T> Rows<'a, T> {
    fn new(view: MatrixView<'a, T>) -> Self {
        debug_assert!(view.has_contiguous_rows());
        Self {
            view,
            n_rows: view.rows(),
            n_cols: view.cols(),
        }
    }

    #[inline(always)]
    fn row(&self, i: usize) -> &'a [T] {
        self.view
            .contiguous_row(i)
            .expect("row index in range and rows contiguous")
    }
}

//! Owned, solver-ready copies of cost matrices: oriented with rows <= cols, row-major,
//! negated when maximising, validated while copied, and scaled by a power of two when the
//! dual variables would overflow.

use crate::{Float, LsapError, MatrixView};

/// An allocation failure (callers fill in the problem's shape).
pub(crate) const OOM: LsapError = LsapError::OutOfMemory { rows: 0, cols: 0 };

/// An owned copy of a cost matrix, laid out as the solver reads it.
///
/// Made while the caller can still guarantee that nobody writes the source (e.g. while a
/// Python binding holds the GIL); solving it afterwards reads only this copy, so a source
/// written meanwhile can neither corrupt the search nor make it panic. The copy is also the
/// only conversion step: a taller matrix is stored transposed, a maximisation negated.
#[derive(Debug, Clone)]
pub struct Packed<T> {
    data: Vec<T>,
    rows: usize,
    cols: usize,
    transposed: bool,
}

impl<T: Float> Packed<T> {
    /// Copy `cost` into `buffer`'s memory (its contents are discarded, its capacity reused).
    ///
    /// Gives [`LsapError::InvalidEntries`] for a NaN, or an infinity of the wrong sign for
    /// the direction of optimisation, and [`LsapError::OutOfMemory`] when the copy cannot
    /// be allocated.
    pub fn new(cost: MatrixView<'_, T>, maximize: bool, buffer: Vec<T>) -> Result<Self, LsapError> {
        let (nr, nc) = cost.shape();
        let transposed = nr > nc;
        let m = if transposed { cost.t() } else { cost };
        let mut data = buffer;
        let scale = if maximize { -T::exp2i(0) } else { T::exp2i(0) };
        pack(m, scale, &mut data).map_err(|e| match e {
            LsapError::OutOfMemory { .. } => LsapError::OutOfMemory { rows: nr, cols: nc },
            e => e,
        })?;
        Ok(Self {
            data,
            rows: m.rows(),
            cols: m.cols(),
            transposed,
        })
    }

    /// The memory of the copy, to reuse for the next one.
    pub fn into_buffer(self) -> Vec<T> {
        self.data
    }

    /// `(rows, cols)` of the original matrix.
    pub fn shape(&self) -> (usize, usize) {
        if self.transposed {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        }
    }

    /// The copy as the solver reads it (rows <= cols, minimising).
    pub(crate) fn oriented(&self) -> MatrixView<'_, T> {
        packed_view(&self.data, self.rows, self.cols)
    }

    /// Whether the copy is the transpose of the original matrix.
    pub(crate) fn transposed(&self) -> bool {
        self.transposed
    }
}

/// A row-major `rows x cols` view of a packed buffer.
pub(crate) fn packed_view<T>(packed: &[T], rows: usize, cols: usize) -> MatrixView<'_, T> {
    MatrixView::row_major(packed, rows, cols).expect("packed buffer holds rows * cols elements")
}

/// Copy a view row by row into `out`, times `scale` (a power of two, negative when
/// maximising). Gives [`LsapError::InvalidEntries`] when a copied value is NaN or `-inf`
/// (checked on the copy, so a source written meanwhile cannot slip one past the check).
pub(crate) fn pack<T: Float>(
    m: MatrixView<'_, T>,
    scale: T,
    out: &mut Vec<T>,
) -> Result<(), LsapError> {
    #[cfg(target_arch = "x86_64")]
    if crate::scan::use_avx() {
        // SAFETY: `use_avx` checked at run time that the CPU supports AVX, the only
        // requirement of `pack_avx`.
        return unsafe { pack_avx(m, scale, out) };
    }
    pack_body(m, scale, out)
}

/// [`pack_body`] compiled with AVX (the copy is as the scans, see `scan`): four f64 per
/// operation instead of two; at 100 x 100 float64 the copy is a third of a solve with
/// many ties.
///
/// # Safety
/// The CPU must support AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn pack_avx<T: Float>(
    m: MatrixView<'_, T>,
    scale: T,
    out: &mut Vec<T>,
) -> Result<(), LsapError> {
    pack_body(m, scale, out)
}

#[inline(always)]
fn pack_body<T: Float>(m: MatrixView<'_, T>, scale: T, out: &mut Vec<T>) -> Result<(), LsapError> {
    // Blocks of rows keep the row-major writes in cache while the (usually contiguous,
    // since this is mostly a transposed C array) columns are read.
    const BLOCK: usize = 64;
    let (nr, nc) = m.shape();
    out.clear();
    // A view may repeat memory (zero strides) and be far larger than its data.
    let len = nr.checked_mul(nc).ok_or(OOM)?;
    out.try_reserve(len).map_err(|_| OOM)?;
    let mut bad = false;
    if m.has_contiguous_rows() {
        for i in 0..nr {
            let row = m.contiguous_row(i).expect("row index in range");
            out.extend(row.iter().map(|&x| {
                let y = x * scale;
                bad |= invalid(y);
                y
            }));
        }
    } else if m.t().has_contiguous_rows() {
        // The view's columns are contiguous (a tall C array, transposed to put rows <= cols):
        // tiles of TILE columns, so that each output row receives whole cache lines while
        // the tile's columns (TILE short source rows) stay in L1; no zero fill first. Then
        // the copy is checked in one branch-free pass. DETR's Q x T costs are of this kind.
        const TILE: usize = 8;
        let columns = m.t();
        let spare = &mut out.spare_capacity_mut()[..len];
        for j0 in (0..nc).step_by(TILE) {
            let j1 = (j0 + TILE).min(nc);
            let tile: [&[T]; TILE] = core::array::from_fn(|k| {
                columns
                    .contiguous_row((j0 + k).min(j1 - 1))
                    .expect("column in range")
            });
            for (i, row) in spare.chunks_exact_mut(nc).enumerate() {
                for (k, dst) in row[j0..j1].iter_mut().enumerate() {
                    dst.write(tile[k][i] * scale);
                }
            }
        }
        // SAFETY: the tiles cover every column of every row, so all `len` elements of the
        // spare capacity (reserved above) were written.
        unsafe { out.set_len(len) };
        bad = out.iter().fold(false, |b, &y| b | invalid(y));
    } else {
        out.resize(len, T::ZERO);
        for i0 in (0..nr).step_by(BLOCK) {
            let block = &mut out[i0 * nc..(i0 + BLOCK).min(nr) * nc];
            for j in 0..nc {
                for (r, dst) in block.chunks_exact_mut(nc).enumerate() {
                    let y = m.get(i0 + r, j) * scale;
                    bad |= invalid(y);
                    dst[j] = y;
                }
            }
        }
    }
    if bad {
        return Err(LsapError::InvalidEntries);
    }
    Ok(())
}

/// Whether a cost (already negated when maximising) is NaN or `-inf`.
#[inline(always)]
pub(crate) fn invalid<T: Float>(x: T) -> bool {
    x.is_nan() | (x == T::NEG_INFINITY)
}

/// The power of two to scale `m` by so that its largest finite magnitude stays far from
/// overflow: the duals are sums along alternating paths, so they grow at most about
/// `rows + cols` times the largest cost (squared here for a wide margin).
pub(crate) fn rescale<T: Float>(m: MatrixView<'_, T>) -> T {
    let (nr, nc) = m.shape();
    let mut largest = T::ZERO;
    for i in 0..nr {
        for j in 0..nc {
            let x = m.get(i, j).abs();
            if x > largest && x != T::INFINITY {
                largest = x;
            }
        }
    }
    let bits = |x: usize| (usize::BITS - x.leading_zeros()) as i32;
    let headroom = 2 * bits(nr + nc) + 8;
    // log2 of the largest magnitude, from its f64 exponent (exact for both types).
    let exponent = ((largest.to_f64().to_bits() >> 52) & 0x7ff) as i32 - 1023;
    let top = (T::MAX.to_f64().to_bits() >> 52 & 0x7ff) as i32 - 1023;
    T::exp2i((top - headroom - exponent).min(0))
}

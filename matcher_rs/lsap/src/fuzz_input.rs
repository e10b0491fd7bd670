//! Arbitrary bytes to a solver input, shared by the cargo-fuzz target and the
//! "never panics" property test (not part of the stable API).
//!
//! Layout: byte 0 = rows (mod 17), byte 1 = cols (mod 17), byte 2 = flags
//! (bit 0: f64, bit 1: maximize, bit 2: column-major storage, bit 3: small values),
//! then the entries: raw little-endian `f32`/`f64` bit patterns (NaN, infinities and
//! subnormals included), or with "small values" one byte each, `b % 8` or a forbidden
//! entry when `b >= 224` (many ties and infeasible cases). Missing bytes read as zero.

use crate::{Float, LsapError, MatrixView, Packed, Solver};

/// A decoded fuzz input.
#[derive(Debug, Clone)]
pub struct FuzzCase {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Solve for the maximum.
    pub maximize: bool,
    /// Column-major storage.
    pub col_major: bool,
    /// The entries, in storage order.
    pub data: FuzzData,
}

/// Entries of a [`FuzzCase`] in either precision.
#[derive(Debug, Clone)]
pub enum FuzzData {
    /// Single precision.
    F32(Vec<f32>),
    /// Double precision.
    F64(Vec<f64>),
}

/// Decode `bytes` (any length) into a case.
pub fn case_from_bytes(bytes: &[u8]) -> FuzzCase {
    let byte = |k: usize| bytes.get(k).copied().unwrap_or(0);
    let rows = usize::from(byte(0) % 17);
    let cols = usize::from(byte(1) % 17);
    let flags = byte(2);
    let (double, maximize, col_major, small) = (
        flags & 1 != 0,
        flags & 2 != 0,
        flags & 4 != 0,
        flags & 8 != 0,
    );
    let n = rows * cols;
    let body = bytes.get(3..).unwrap_or(&[]);
    let chunk = |k: usize, width: usize| -> [u8; 8] {
        let mut out = [0u8; 8];
        for (b, o) in out.iter_mut().take(width).enumerate() {
            *o = body.get(k * width + b).copied().unwrap_or(0);
        }
        out
    };
    let small_value = |k: usize| -> f64 {
        let b = body.get(k).copied().unwrap_or(0);
        let forbidden = if maximize {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
        if b >= 224 {
            forbidden
        } else {
            f64::from(b % 8)
        }
    };
    let data = if double {
        FuzzData::F64(
            (0..n)
                .map(|k| {
                    if small {
                        small_value(k)
                    } else {
                        f64::from_le_bytes(chunk(k, 8))
                    }
                })
                .collect(),
        )
    } else {
        FuzzData::F32(
            (0..n)
                .map(|k| {
                    if small {
                        small_value(k) as f32
                    } else {
                        let c = chunk(k, 4);
                        f32::from_le_bytes([c[0], c[1], c[2], c[3]])
                    }
                })
                .collect(),
        )
    };
    FuzzCase {
        rows,
        cols,
        maximize,
        col_major,
        data,
    }
}

/// Solve the case and panic unless the result is a valid assignment or a proper error.
pub fn check_bytes(bytes: &[u8]) {
    let case = case_from_bytes(bytes);
    match &case.data {
        FuzzData::F32(d) => check(&case, d),
        FuzzData::F64(d) => check(&case, d),
    }
}

fn check<T: Float>(case: &FuzzCase, data: &[T]) {
    let view = if case.col_major {
        MatrixView::col_major(data, case.rows, case.cols)
    } else {
        MatrixView::row_major(data, case.rows, case.cols)
    }
    .expect("data holds rows * cols entries");
    let bad = |x: T| {
        x.is_nan()
            || x == if case.maximize {
                T::INFINITY
            } else {
                T::NEG_INFINITY
            }
    };
    let has_invalid = data.iter().any(|&x| bad(x));
    let result = Solver::new().solve(view, case.maximize);
    let packed = Packed::new(view, case.maximize, Vec::new());
    assert_eq!(
        packed.and_then(|p| Solver::new().solve_packed(&p)),
        result,
        "the packed copy solves differently"
    );
    match result {
        Ok(a) => {
            assert!(!has_invalid, "invalid entries accepted");
            let k = case.rows.min(case.cols);
            assert_eq!(a.rows.len(), k);
            assert_eq!(a.cols.len(), k);
            assert!(
                a.rows.windows(2).all(|w| w[0] < w[1]),
                "rows not strictly ascending"
            );
            assert!(a.rows.iter().all(|&i| i < case.rows));
            let mut seen = vec![false; case.cols];
            for (&i, &j) in a.rows.iter().zip(&a.cols) {
                assert!(
                    j < case.cols && !seen[j],
                    "column used twice or out of range"
                );
                seen[j] = true;
                let x = view.get(i, j);
                let forbidden = if case.maximize {
                    T::NEG_INFINITY
                } else {
                    T::INFINITY
                };
                assert!(x != forbidden, "forbidden pair ({i}, {j}) assigned");
            }
        }
        Err(LsapError::InvalidEntries) => assert!(has_invalid, "valid matrix rejected"),
        Err(LsapError::Infeasible) => assert!(!has_invalid, "invalid entries not reported"),
        // Rescaling by a power of two keeps the duals finite for any magnitudes, and these
        // matrices are tiny.
        Err(e @ (LsapError::TooLarge | LsapError::OutOfMemory { .. })) => {
            panic!("unexpected error: {e}")
        }
    }
}

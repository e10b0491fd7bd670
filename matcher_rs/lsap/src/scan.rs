//! The dense loops the solver spends its time in, in safe Rust written in fixed-width lane
//! blocks that the compiler vectorises. On x86-64 each loop is compiled twice, for the
//! baseline (SSE2) and for AVX, and the AVX copy is picked at run time when the CPU has it
//! (the wheel stays portable). `benchmarks/results/matcher_cpu.json` records what the AVX
//! copy buys (`avx_speedup`, against `matcher_rs_noavx_s`) at 100 to 4000 square: 1.19-2.52x
//! on uniform, integer, DETR-like and low-rank costs (one 1.08x, uniform 4000 float64: a
//! single repeat, where the AVX run, timed first, also pays for growing the copy buffer),
//! 0.74-1.32x with many ties, where scans are a small part of the solve.
//!
//! Every version computes reduced costs with the same IEEE operations in the same order
//! (no fused multiply-add; a minimum is `a < b ? a : b`, which is what the min
//! instructions compute), so a value found by one loop can be searched for, exactly, by
//! another. Inputs never hold NaN except where a loop says so.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::Float;

/// Lanes per block: two AVX registers of `f32`, four of `f64` (the independent
/// accumulators also shorten the dependency chain through `min`). Measured against 8
/// lanes (thread CPU time, uniform and DETR-like costs): 1.06-1.28x in `f32` at 300 to
/// 2000 square, 0.94-1.17x in `f64`.
const LANES: usize = 16;

/// Read a cost, negated when maximising (monomorphised, so free when not).
#[inline(always)]
pub(crate) fn at<T: Float, const NEG: bool>(x: T) -> T {
    if NEG {
        -x
    } else {
        x
    }
}

#[inline(always)]
fn min<T: Float>(a: T, b: T) -> T {
    if a < b {
        a
    } else {
        b
    }
}

/// The smallest lane of a block.
#[inline(always)]
fn min_of<T: Float>(acc: [T; LANES], init: T) -> T {
    let a: [T; 8] = core::array::from_fn(|l| min(acc[l], acc[l + 8]));
    let b: [T; 4] = core::array::from_fn(|l| min(a[l], a[l + 4]));
    min(min(min(b[0], b[2]), min(b[1], b[3])), init)
}

/// Element types with the solver's scans (a supertrait of [`Float`]; public in a private
/// module, so it also seals `Float`).
pub trait Scan: Sized {
    /// Relax every unscanned column from one row, `dist[j] = min(base + c[j] - v[j], dist[j])`
    /// (scanned columns hold NaN and keep it), and return the smallest distance.
    fn relax<const NEG: bool>(row: &[Self], v: &[Self], dist: &mut [Self], base: Self) -> Self;

    /// The first index of `x` in `a` (`usize::MAX` when absent).
    fn position(a: &[Self], x: Self) -> usize;

    /// The smallest of `row` (negated when `NEG`); `+inf` for an empty row.
    fn row_min<const NEG: bool>(row: &[Self]) -> Self;

    /// The smallest and second smallest of `c[j] - v[j]` (`+inf` where absent).
    fn top2<const NEG: bool>(row: &[Self], v: &[Self]) -> (Self, Self);

    /// The first `j` with `c[j] - v[j] == x` (`usize::MAX` when absent).
    fn position_reduced<const NEG: bool>(row: &[Self], v: &[Self], x: Self) -> usize;
    /// Fold one row into running column minima, `mins[j] = min(c[j] - u, mins[j])`, and
    /// return the smallest of them.
    fn col_min<const NEG: bool>(row: &[Self], u: Self, mins: &mut [Self]) -> Self;
}

/// The loops, generic over the element type; each dispatcher below instantiates them
/// once for the baseline target and once inside an AVX-enabled function.
mod lanes {
    use super::{at, min, min_of, LANES};
    use crate::Float;

    #[inline(always)]
    pub(super) fn relax<T: Float, const NEG: bool>(
        row: &[T],
        v: &[T],
        dist: &mut [T],
        base: T,
    ) -> T {
        let n = row.len();
        let (v, dist) = (&v[..n], &mut dist[..n]);
        let mut acc = [T::INFINITY; LANES];
        let blocks = row
            .chunks_exact(LANES)
            .zip(v.chunks_exact(LANES))
            .zip(dist.chunks_exact_mut(LANES));
        for ((r, vj), d) in blocks {
            for l in 0..LANES {
                d[l] = min(base + at::<T, NEG>(r[l]) - vj[l], d[l]);
                acc[l] = min(d[l], acc[l]);
            }
        }
        let split = n - n % LANES;
        let mut lowest = min_of(acc, T::INFINITY);
        for j in split..n {
            dist[j] = min(base + at::<T, NEG>(row[j]) - v[j], dist[j]);
            lowest = min(dist[j], lowest);
        }
        lowest
    }

    #[inline(always)]
    pub(super) fn position<T: Float>(a: &[T], x: T) -> usize {
        for (k, block) in a.chunks_exact(LANES).enumerate() {
            // A branch-free test per block vectorises; the exact lane is found only once.
            if block.iter().fold(false, |hit, &y| hit | (y == x)) {
                return k * LANES + block.iter().position(|&y| y == x).unwrap_or(0);
            }
        }
        let split = a.len() - a.len() % LANES;
        a[split..]
            .iter()
            .position(|&y| y == x)
            .map_or(usize::MAX, |p| split + p)
    }

    #[inline(always)]
    pub(super) fn row_min<T: Float, const NEG: bool>(row: &[T]) -> T {
        let mut acc = [T::INFINITY; LANES];
        for block in row.chunks_exact(LANES) {
            for l in 0..LANES {
                acc[l] = min(at::<T, NEG>(block[l]), acc[l]);
            }
        }
        let split = row.len() - row.len() % LANES;
        row[split..]
            .iter()
            .fold(min_of(acc, T::INFINITY), |m, &x| min(at::<T, NEG>(x), m))
    }

    /// Fold `h` into the two smallest so far, `(m1, m2)` with `m1 <= m2`: the second
    /// smallest of `{m1, m2, h}` is `min(m2, max(h, m1))`.
    #[inline(always)]
    fn push2<T: Float>((m1, m2): (T, T), h: T) -> (T, T) {
        (min(h, m1), min(m2, if h < m1 { m1 } else { h }))
    }

    /// The two smallest of two multisets, each given by its two smallest (`x1 <= x2`).
    #[inline(always)]
    fn merge2<T: Float>((a1, a2): (T, T), (b1, b2): (T, T)) -> (T, T) {
        let larger_first = if a1 < b1 { b1 } else { a1 };
        (min(a1, b1), min(min(a2, b2), larger_first))
    }

    #[inline(always)]
    pub(super) fn top2<T: Float, const NEG: bool>(row: &[T], v: &[T]) -> (T, T) {
        let n = row.len();
        let v = &v[..n];
        let (mut m1, mut m2) = ([T::INFINITY; LANES], [T::INFINITY; LANES]);
        for (r, vj) in row.chunks_exact(LANES).zip(v.chunks_exact(LANES)) {
            for l in 0..LANES {
                (m1[l], m2[l]) = push2((m1[l], m2[l]), at::<T, NEG>(r[l]) - vj[l]);
            }
        }
        // The two smallest overall are among the lanes' two smallest: merge lanes pairwise,
        // halving (a dependency chain of 4 merges instead of 32 pushes).
        let lane = |l: usize| (m1[l], m2[l]);
        let a: [(T, T); 8] = core::array::from_fn(|l| merge2(lane(l), lane(l + 8)));
        let b: [(T, T); 4] = core::array::from_fn(|l| merge2(a[l], a[l + 4]));
        let m = merge2(merge2(b[0], b[2]), merge2(b[1], b[3]));
        let split = n - n % LANES;
        row[split..]
            .iter()
            .zip(&v[split..])
            .fold(m, |m, (&c, &vj)| push2(m, at::<T, NEG>(c) - vj))
    }

    #[inline(always)]
    pub(super) fn position_reduced<T: Float, const NEG: bool>(row: &[T], v: &[T], x: T) -> usize {
        let n = row.len();
        let v = &v[..n];
        let hit = |c: T, vj: T| at::<T, NEG>(c) - vj == x;
        for (k, (r, vj)) in row
            .chunks_exact(LANES)
            .zip(v.chunks_exact(LANES))
            .enumerate()
        {
            if r.iter()
                .zip(vj)
                .fold(false, |any, (&c, &w)| any | hit(c, w))
            {
                let p = r.iter().zip(vj).position(|(&c, &w)| hit(c, w));
                return k * LANES + p.unwrap_or(0);
            }
        }
        let split = n - n % LANES;
        row[split..]
            .iter()
            .zip(&v[split..])
            .position(|(&c, &vj)| hit(c, vj))
            .map_or(usize::MAX, |p| split + p)
    }
    #[inline(always)]
    pub(super) fn col_min<T: Float, const NEG: bool>(row: &[T], u: T, mins: &mut [T]) -> T {
        let n = row.len();
        let mins = &mut mins[..n];
        // The smallest of the new minima is returned only so that each block's minima are
        // needed in registers: written as `m[l] = min(.., m[l])` alone, the compiler makes
        // each store conditional (masked stores, several times slower on AMD).
        let mut acc = [T::INFINITY; LANES];
        for (r, m) in row.chunks_exact(LANES).zip(mins.chunks_exact_mut(LANES)) {
            for l in 0..LANES {
                m[l] = min(at::<T, NEG>(r[l]) - u, m[l]);
                acc[l] = min(m[l], acc[l]);
            }
        }
        let split = n - n % LANES;
        let mut lowest = min_of(acc, T::INFINITY);
        for j in split..n {
            mins[j] = min(at::<T, NEG>(row[j]) - u, mins[j]);
            lowest = min(mins[j], lowest);
        }
        lowest
    }
}

/// Whether the AVX copies may be used (benchmarks turn them off to measure what they buy).
static AVX_ALLOWED: AtomicBool = AtomicBool::new(true);

/// Allow or forbid the AVX copies of the scans (process-wide; results are identical
/// either way). Returns the previous setting. For benchmarks.
pub fn set_avx(allowed: bool) -> bool {
    AVX_ALLOWED.swap(allowed, Ordering::Relaxed)
}

/// Whether the AVX copies run: allowed, and the CPU has AVX.
#[inline(always)]
pub(crate) fn use_avx() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        AVX_ALLOWED.load(Ordering::Relaxed) && std::arch::is_x86_feature_detected!("avx")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The AVX-compiled copies: the same safe bodies, compiled with AVX enabled.
#[cfg(target_arch = "x86_64")]
mod avx {
    use super::lanes;
    use crate::Float;

    /// # Safety
    /// The CPU must support AVX (as for every function of this module).
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn relax<T: Float, const NEG: bool>(
        row: &[T],
        v: &[T],
        dist: &mut [T],
        base: T,
    ) -> T {
        lanes::relax::<T, NEG>(row, v, dist, base)
    }

    /// # Safety
    /// The CPU must support AVX.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn position<T: Float>(a: &[T], x: T) -> usize {
        lanes::position(a, x)
    }

    /// # Safety
    /// The CPU must support AVX.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn row_min<T: Float, const NEG: bool>(row: &[T]) -> T {
        lanes::row_min::<T, NEG>(row)
    }

    /// # Safety
    /// The CPU must support AVX.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn top2<T: Float, const NEG: bool>(row: &[T], v: &[T]) -> (T, T) {
        lanes::top2::<T, NEG>(row, v)
    }

    /// # Safety
    /// The CPU must support AVX.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn position_reduced<T: Float, const NEG: bool>(
        row: &[T],
        v: &[T],
        x: T,
    ) -> usize {
        lanes::position_reduced::<T, NEG>(row, v, x)
    }

    /// # Safety
    /// The CPU must support AVX.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn col_min<T: Float, const NEG: bool>(row: &[T], u: T, mins: &mut [T]) -> T {
        lanes::col_min::<T, NEG>(row, u, mins)
    }
}

/// Call the AVX copy of a loop when [`use_avx`], else the baseline one.
macro_rules! dispatch {
    ($name:ident $(::<$($g:ty),*>)?, $($arg:expr),*) => {{
        #[cfg(target_arch = "x86_64")]
        if use_avx() {
            // SAFETY: `use_avx` checked at run time that the CPU supports AVX, the only
            // requirement of the `avx` module's functions (their bodies are safe code).
            return unsafe { avx::$name $(::<$($g),*>)? ($($arg),*) };
        }
        lanes::$name $(::<$($g),*>)? ($($arg),*)
    }};
}

macro_rules! impl_scan {
    ($t:ty) => {
        impl Scan for $t {
            #[inline(always)]
            fn relax<const NEG: bool>(
                row: &[Self],
                v: &[Self],
                dist: &mut [Self],
                base: Self,
            ) -> Self {
                dispatch!(relax::<Self, NEG>, row, v, dist, base)
            }

            #[inline(always)]
            fn position(a: &[Self], x: Self) -> usize {
                dispatch!(position::<Self>, a, x)
            }

            #[inline(always)]
            fn row_min<const NEG: bool>(row: &[Self]) -> Self {
                dispatch!(row_min::<Self, NEG>, row)
            }

            #[inline(always)]
            fn top2<const NEG: bool>(row: &[Self], v: &[Self]) -> (Self, Self) {
                dispatch!(top2::<Self, NEG>, row, v)
            }

            #[inline(always)]
            fn position_reduced<const NEG: bool>(row: &[Self], v: &[Self], x: Self) -> usize {
                dispatch!(position_reduced::<Self, NEG>, row, v, x)
            }

            #[inline(always)]
            fn col_min<const NEG: bool>(row: &[Self], u: Self, mins: &mut [Self]) -> Self {
                dispatch!(col_min::<Self, NEG>, row, u, mins)
            }
        }
    };
}

impl_scan!(f32);
impl_scan!(f64);

#[cfg(test)]
mod tests {
    use super::*;

    fn same<T: Float>(a: T, b: T) -> bool {
        a == b || (a.is_nan() && b.is_nan())
    }

    /// Plain one-element-at-a-time loops: the specification of each scan.
    fn plain_relax<T: Float, const NEG: bool>(row: &[T], v: &[T], d: &mut [T], base: T) -> T {
        let mut lowest = T::INFINITY;
        for ((&c, &vj), d) in row.iter().zip(v).zip(d) {
            *d = min(base + at::<T, NEG>(c) - vj, *d);
            lowest = min(*d, lowest);
        }
        lowest
    }

    /// The AVX and baseline copies agree exactly with plain loops (NaN included).
    fn check<T: Float + Scan>(cast: fn(f64) -> T) {
        for n in [0usize, 1, 3, 4, 7, 8, 9, 15, 16, 17, 31, 64, 100] {
            let row: Vec<T> = (0..n).map(|k| cast(((k * 37) % 11) as f64 - 3.0)).collect();
            let v: Vec<T> = (0..n).map(|k| cast(-(((k * 13) % 7) as f64))).collect();
            let init: Vec<T> = (0..n)
                .map(|k| {
                    if k % 5 == 0 {
                        T::NAN
                    } else {
                        cast((k % 9) as f64)
                    }
                })
                .collect();
            for avx in [true, false] {
                set_avx(avx);
                let (mut a, mut b) = (init.clone(), init.clone());
                let la = T::relax::<true>(&row, &v, &mut a, cast(0.5));
                let lb = plain_relax::<T, true>(&row, &v, &mut b, cast(0.5));
                assert!(same(la, lb) && a.iter().zip(&b).all(|(&x, &y)| same(x, y)));
                let (mut a, mut b) = (init.clone(), init.clone());
                let la = T::relax::<false>(&row, &v, &mut a, cast(0.5));
                let lb = plain_relax::<T, false>(&row, &v, &mut b, cast(0.5));
                assert!(same(la, lb) && a.iter().zip(&b).all(|(&x, &y)| same(x, y)));
                let plain_min = row.iter().fold(T::INFINITY, |m, &x| min(x, m));
                assert!(same(T::row_min::<false>(&row), plain_min));
                let plain_max = row.iter().fold(T::INFINITY, |m, &x| min(-x, m));
                assert!(same(T::row_min::<true>(&row), plain_max));
                // The brute-force two smallest of c - v (and of -c - v).
                for neg in [false, true] {
                    let mut h: Vec<f64> = row
                        .iter()
                        .zip(&v)
                        .map(|(&c, &vj)| (if neg { -c } else { c } - vj).to_f64())
                        .collect();
                    h.sort_by(f64::total_cmp);
                    let t = if neg {
                        T::top2::<true>(&row, &v)
                    } else {
                        T::top2::<false>(&row, &v)
                    };
                    assert_eq!(t.0.to_f64(), h.first().copied().unwrap_or(f64::INFINITY));
                    assert_eq!(t.1.to_f64(), h.get(1).copied().unwrap_or(f64::INFINITY));
                    for x in [t.0, t.1, cast(100.0)] {
                        let want = h_position(&row, &v, x, neg);
                        let got = if neg {
                            T::position_reduced::<true>(&row, &v, x)
                        } else {
                            T::position_reduced::<false>(&row, &v, x)
                        };
                        assert_eq!(got, want);
                    }
                }
                for x in [la, cast(100.0)] {
                    let want = a.iter().position(|&y| y == x).unwrap_or(usize::MAX);
                    assert_eq!(T::position(&a, x), want);
                }
            }
            set_avx(true);
        }
    }

    fn h_position<T: Float>(row: &[T], v: &[T], x: T, neg: bool) -> usize {
        row.iter()
            .zip(v)
            .position(|(&c, &vj)| (if neg { -c } else { c }) - vj == x)
            .unwrap_or(usize::MAX)
    }

    #[test]
    fn scans_match_plain_loops() {
        check::<f32>(|x| x as f32);
        check::<f64>(|x| x);
    }
}

//! The dense loops the solver spends its time in, with AVX versions picked at run time on
//! x86-64 (the wheel stays portable) and portable fallbacks elsewhere.
//!
//! Every version computes reduced costs with the same IEEE operations in the same order
//! (no fused multiply-add), so a value found by one loop can be searched for, exactly, by
//! another. Inputs never hold NaN except where a loop says so.

use crate::Float;

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

/// Element types with vectorised scans (a supertrait of [`Float`]; public in a private
/// module, so it also seals `Float`).
pub trait Scan: Sized {
    /// Relax every unscanned column from one row, `dist[j] = min(dist[j], base + c[j] - v[j])`
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
}

/// The portable loops, also the tails of the vector ones.
mod portable {
    use super::{at, min};
    use crate::Float;

    #[inline(always)]
    pub(super) fn relax<T: Float, const NEG: bool>(
        row: &[T],
        v: &[T],
        dist: &mut [T],
        base: T,
        mut lowest: T,
    ) -> T {
        for ((&c, &vj), d) in row.iter().zip(v).zip(dist) {
            *d = min(base + at::<T, NEG>(c) - vj, *d);
            lowest = min(*d, lowest);
        }
        lowest
    }

    #[inline(always)]
    pub(super) fn position<T: Float>(a: &[T], x: T) -> usize {
        a.iter().position(|&y| y == x).unwrap_or(usize::MAX)
    }

    #[inline(always)]
    pub(super) fn row_min<T: Float, const NEG: bool>(row: &[T], init: T) -> T {
        row.iter().fold(init, |m, &x| min(at::<T, NEG>(x), m))
    }

    /// Fold `c - v` into the two smallest so far, `(m1, m2)` with `m1 <= m2`.
    #[inline(always)]
    pub(super) fn top2<T: Float, const NEG: bool>(row: &[T], v: &[T], m: (T, T)) -> (T, T) {
        row.iter().zip(v).fold(m, |(m1, m2), (&c, &vj)| {
            let h = at::<T, NEG>(c) - vj;
            (min(h, m1), min(m2, if h < m1 { m1 } else { h }))
        })
    }

    #[inline(always)]
    pub(super) fn position_reduced<T: Float, const NEG: bool>(row: &[T], v: &[T], x: T) -> usize {
        row.iter()
            .zip(v)
            .position(|(&c, &vj)| at::<T, NEG>(c) - vj == x)
            .unwrap_or(usize::MAX)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::{min, portable};
    use crate::Float;
    use core::arch::x86_64::*;

    /// One AVX register of lanes. Every method needs AVX (the callers enable it).
    pub(super) trait Vector: Copy {
        type T: Float;
        const LANES: usize;
        unsafe fn splat(x: Self::T) -> Self;
        unsafe fn load(p: *const Self::T) -> Self;
        unsafe fn store(self, p: *mut Self::T);
        unsafe fn add(self, o: Self) -> Self;
        unsafe fn sub(self, o: Self) -> Self;
        /// `self < o ? self : o` (so a NaN in `self` yields `o`, a NaN in `o` stays).
        unsafe fn min(self, o: Self) -> Self;
        /// `self > o ? self : o`.
        unsafe fn max(self, o: Self) -> Self;
        unsafe fn neg(self) -> Self;
        /// Bit `l` set where lane `l` of `self` equals `o`'s.
        unsafe fn eq_mask(self, o: Self) -> u32;
    }

    macro_rules! vector {
        ($v:ty, $t:ty, $lanes:expr, $set1:ident, $loadu:ident, $storeu:ident, $add:ident,
         $sub:ident, $min:ident, $max:ident, $xor:ident, $cmp:ident, $movemask:ident) => {
            impl Vector for $v {
                type T = $t;
                const LANES: usize = $lanes;
                #[inline(always)]
                unsafe fn splat(x: $t) -> Self {
                    unsafe { $set1(x) }
                }
                #[inline(always)]
                unsafe fn load(p: *const $t) -> Self {
                    unsafe { $loadu(p) }
                }
                #[inline(always)]
                unsafe fn store(self, p: *mut $t) {
                    unsafe { $storeu(p, self) }
                }
                #[inline(always)]
                unsafe fn add(self, o: Self) -> Self {
                    unsafe { $add(self, o) }
                }
                #[inline(always)]
                unsafe fn sub(self, o: Self) -> Self {
                    unsafe { $sub(self, o) }
                }
                #[inline(always)]
                unsafe fn min(self, o: Self) -> Self {
                    unsafe { $min(self, o) }
                }
                #[inline(always)]
                unsafe fn max(self, o: Self) -> Self {
                    unsafe { $max(self, o) }
                }
                #[inline(always)]
                unsafe fn neg(self) -> Self {
                    unsafe { $xor(self, $set1(-0.0)) }
                }
                #[inline(always)]
                unsafe fn eq_mask(self, o: Self) -> u32 {
                    unsafe { $movemask($cmp::<_CMP_EQ_OQ>(self, o)) as u32 }
                }
            }
        };
    }

    #[rustfmt::skip]
    vector!(__m256, f32, 8, _mm256_set1_ps, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_add_ps,
        _mm256_sub_ps, _mm256_min_ps, _mm256_max_ps, _mm256_xor_ps, _mm256_cmp_ps,
        _mm256_movemask_ps);
    #[rustfmt::skip]
    vector!(__m256d, f64, 4, _mm256_set1_pd, _mm256_loadu_pd, _mm256_storeu_pd, _mm256_add_pd,
        _mm256_sub_pd, _mm256_min_pd, _mm256_max_pd, _mm256_xor_pd, _mm256_cmp_pd,
        _mm256_movemask_pd);

    /// The lanes of `x` in memory (at most 8 are used).
    #[inline(always)]
    unsafe fn lanes<V: Vector>(x: V) -> [V::T; 8] {
        let mut out = [V::T::ZERO; 8];
        // SAFETY: `out` holds at least LANES elements.
        unsafe { x.store(out.as_mut_ptr()) };
        out
    }

    #[inline(always)]
    unsafe fn cost<V: Vector, const NEG: bool>(p: *const V::T) -> V {
        // SAFETY: the caller guarantees LANES readable elements at `p`.
        unsafe {
            let c = V::load(p);
            if NEG {
                c.neg()
            } else {
                c
            }
        }
    }

    /// See [`super::Scan::relax`].
    ///
    /// # Safety
    /// The CPU must support AVX.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn relax<V: Vector, const NEG: bool>(
        row: &[V::T],
        v: &[V::T],
        dist: &mut [V::T],
        base: V::T,
    ) -> V::T {
        let n = row.len();
        let (v, dist) = (&v[..n], &mut dist[..n]);
        let split = n - n % V::LANES;
        let mut k = 0;
        // SAFETY (whole block): k + LANES <= split <= n for all three slices.
        unsafe {
            let b = V::splat(base);
            let (rp, vp, dp) = (row.as_ptr(), v.as_ptr(), dist.as_mut_ptr());
            let step = |k: usize| {
                let r = b.add(cost::<V, NEG>(rp.add(k))).sub(V::load(vp.add(k)));
                let d = r.min(V::load(dp.add(k)));
                d.store(dp.add(k));
                d
            };
            // Two accumulators halve the dependency chain through `min`.
            let (mut m0, mut m1) = (V::splat(V::T::INFINITY), V::splat(V::T::INFINITY));
            while k + 2 * V::LANES <= split {
                m0 = step(k).min(m0);
                m1 = step(k + V::LANES).min(m1);
                k += 2 * V::LANES;
            }
            if k < split {
                m0 = step(k).min(m0);
            }
            let lowest = lanes(m0.min(m1))[..V::LANES]
                .iter()
                .fold(V::T::INFINITY, |a, &x| min(x, a));
            portable::relax::<V::T, NEG>(
                &row[split..],
                &v[split..],
                &mut dist[split..],
                base,
                lowest,
            )
        }
    }

    /// See [`super::Scan::position`].
    ///
    /// # Safety
    /// The CPU must support AVX.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn position<V: Vector>(a: &[V::T], x: V::T) -> usize {
        let split = a.len() - a.len() % V::LANES;
        let mut k = 0;
        // SAFETY: k + LANES <= a.len().
        unsafe {
            let xv = V::splat(x);
            while k < split {
                let mask = V::load(a.as_ptr().add(k)).eq_mask(xv);
                if mask != 0 {
                    return k + mask.trailing_zeros() as usize;
                }
                k += V::LANES;
            }
        }
        match portable::position(&a[split..], x) {
            usize::MAX => usize::MAX,
            p => split + p,
        }
    }

    /// See [`super::Scan::row_min`].
    ///
    /// # Safety
    /// The CPU must support AVX.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn row_min<V: Vector, const NEG: bool>(row: &[V::T]) -> V::T {
        let split = row.len() - row.len() % V::LANES;
        let mut k = 0;
        // SAFETY: k + LANES <= row.len().
        unsafe {
            let (mut m0, mut m1) = (V::splat(V::T::INFINITY), V::splat(V::T::INFINITY));
            while k + 2 * V::LANES <= split {
                m0 = cost::<V, NEG>(row.as_ptr().add(k)).min(m0);
                m1 = cost::<V, NEG>(row.as_ptr().add(k + V::LANES)).min(m1);
                k += 2 * V::LANES;
            }
            if k < split {
                m0 = cost::<V, NEG>(row.as_ptr().add(k)).min(m0);
            }
            let init = lanes(m0.min(m1))[..V::LANES]
                .iter()
                .fold(V::T::INFINITY, |a, &x| min(x, a));
            portable::row_min::<V::T, NEG>(&row[split..], init)
        }
    }

    /// See [`super::Scan::top2`].
    ///
    /// # Safety
    /// The CPU must support AVX.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn top2<V: Vector, const NEG: bool>(
        row: &[V::T],
        v: &[V::T],
    ) -> (V::T, V::T) {
        let n = row.len();
        let v = &v[..n];
        let split = n - n % V::LANES;
        let mut k = 0;
        // SAFETY: k + LANES <= n for both slices.
        unsafe {
            let (mut m1, mut m2) = (V::splat(V::T::INFINITY), V::splat(V::T::INFINITY));
            while k < split {
                let h = cost::<V, NEG>(row.as_ptr().add(k)).sub(V::load(v.as_ptr().add(k)));
                // Per lane: the second smallest of {m1, m2, h} is min(m2, max(h, m1)).
                m2 = m2.min(h.max(m1));
                m1 = h.min(m1);
                k += V::LANES;
            }
            // The two smallest overall are among the lanes' two smallest.
            let (a, b) = (lanes(m1), lanes(m2));
            let mut m = (V::T::INFINITY, V::T::INFINITY);
            for &x in a[..V::LANES].iter().chain(&b[..V::LANES]) {
                m = (min(x, m.0), min(m.1, if x < m.0 { m.0 } else { x }));
            }
            portable::top2::<V::T, NEG>(&row[split..], &v[split..], m)
        }
    }

    /// See [`super::Scan::position_reduced`].
    ///
    /// # Safety
    /// The CPU must support AVX.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn position_reduced<V: Vector, const NEG: bool>(
        row: &[V::T],
        v: &[V::T],
        x: V::T,
    ) -> usize {
        let n = row.len();
        let v = &v[..n];
        let split = n - n % V::LANES;
        let mut k = 0;
        // SAFETY: k + LANES <= n for both slices.
        unsafe {
            let xv = V::splat(x);
            while k < split {
                let h = cost::<V, NEG>(row.as_ptr().add(k)).sub(V::load(v.as_ptr().add(k)));
                let mask = h.eq_mask(xv);
                if mask != 0 {
                    return k + mask.trailing_zeros() as usize;
                }
                k += V::LANES;
            }
        }
        match portable::position_reduced::<V::T, NEG>(&row[split..], &v[split..], x) {
            usize::MAX => usize::MAX,
            p => split + p,
        }
    }
}

macro_rules! impl_scan {
    ($t:ty, $v:ty) => {
        impl Scan for $t {
            #[inline(always)]
            fn relax<const NEG: bool>(
                row: &[Self],
                v: &[Self],
                dist: &mut [Self],
                base: Self,
            ) -> Self {
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx") {
                    // SAFETY: AVX is present.
                    return unsafe { avx::relax::<$v, NEG>(row, v, dist, base) };
                }
                portable::relax::<Self, NEG>(row, v, dist, base, Self::INFINITY)
            }

            #[inline(always)]
            fn position(a: &[Self], x: Self) -> usize {
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx") {
                    // SAFETY: AVX is present.
                    return unsafe { avx::position::<$v>(a, x) };
                }
                portable::position(a, x)
            }

            #[inline(always)]
            fn row_min<const NEG: bool>(row: &[Self]) -> Self {
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx") {
                    // SAFETY: AVX is present.
                    return unsafe { avx::row_min::<$v, NEG>(row) };
                }
                portable::row_min::<Self, NEG>(row, Self::INFINITY)
            }

            #[inline(always)]
            fn top2<const NEG: bool>(row: &[Self], v: &[Self]) -> (Self, Self) {
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx") {
                    // SAFETY: AVX is present.
                    return unsafe { avx::top2::<$v, NEG>(row, v) };
                }
                portable::top2::<Self, NEG>(row, v, (Self::INFINITY, Self::INFINITY))
            }

            #[inline(always)]
            fn position_reduced<const NEG: bool>(row: &[Self], v: &[Self], x: Self) -> usize {
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx") {
                    // SAFETY: AVX is present.
                    return unsafe { avx::position_reduced::<$v, NEG>(row, v, x) };
                }
                portable::position_reduced::<Self, NEG>(row, v, x)
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
impl_scan!(f32, core::arch::x86_64::__m256);
#[cfg(target_arch = "x86_64")]
impl_scan!(f64, core::arch::x86_64::__m256d);
#[cfg(not(target_arch = "x86_64"))]
impl_scan!(f32, ());
#[cfg(not(target_arch = "x86_64"))]
impl_scan!(f64, ());

#[cfg(test)]
mod tests {
    use super::*;

    fn same<T: Float>(a: T, b: T) -> bool {
        a == b || (a.is_nan() && b.is_nan())
    }

    /// The dispatched kernels agree exactly with the portable loops (NaN included).
    fn check<T: Float + Scan>(cast: fn(f64) -> T) {
        for n in [0usize, 1, 3, 4, 7, 8, 9, 31, 64, 100] {
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
            let (mut a, mut b) = (init.clone(), init.clone());
            let la = T::relax::<true>(&row, &v, &mut a, cast(0.5));
            let lb = portable::relax::<T, true>(&row, &v, &mut b, cast(0.5), T::INFINITY);
            assert!(same(la, lb) && a.iter().zip(&b).all(|(&x, &y)| same(x, y)));
            let (mut a, mut b) = (init.clone(), init.clone());
            let la = T::relax::<false>(&row, &v, &mut a, cast(0.5));
            let lb = portable::relax::<T, false>(&row, &v, &mut b, cast(0.5), T::INFINITY);
            assert!(same(la, lb) && a.iter().zip(&b).all(|(&x, &y)| same(x, y)));
            assert!(same(
                T::row_min::<true>(&row),
                portable::row_min::<T, true>(&row, T::INFINITY)
            ));
            assert!(same(
                T::row_min::<false>(&row),
                portable::row_min::<T, false>(&row, T::INFINITY)
            ));
            let t = T::top2::<false>(&row, &v);
            let p = portable::top2::<T, false>(&row, &v, (T::INFINITY, T::INFINITY));
            assert!(same(t.0, p.0) && same(t.1, p.1), "{t:?} {p:?}");
            // The brute-force second smallest of c - v.
            let mut h: Vec<f64> = row
                .iter()
                .zip(&v)
                .map(|(&c, &vj)| (c - vj).to_f64())
                .collect();
            h.sort_by(f64::total_cmp);
            assert_eq!(t.1.to_f64(), h.get(1).copied().unwrap_or(f64::INFINITY));
            let t = T::top2::<true>(&row, &v);
            let p = portable::top2::<T, true>(&row, &v, (T::INFINITY, T::INFINITY));
            assert!(same(t.0, p.0) && same(t.1, p.1));
            if n > 0 {
                assert_eq!(T::position(&a, la), portable::position(&a, la));
                assert_eq!(
                    T::position_reduced::<true>(&row, &v, t.1),
                    portable::position_reduced::<T, true>(&row, &v, t.1)
                );
            }
        }
    }

    #[test]
    fn kernels_match_portable() {
        check::<f32>(|x| x as f32);
        check::<f64>(|x| x);
    }
}

//! The small float trait the solver is generic over (`f32` and `f64`, solved natively).

use core::fmt::Debug;
use core::ops::{Add, Mul, Neg, Sub};

/// A floating-point element type the solver works in without conversion.
///
/// Implemented for `f32` and `f64`; sealed so the solver can rely on IEEE semantics.
pub trait Float:
    Copy
    + Debug
    + PartialOrd
    + Send
    + Sync
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Neg<Output = Self>
    + sealed::Sealed
    + crate::scan::Scan
    + 'static
{
    /// `0.0`.
    const ZERO: Self;
    /// `+inf`: a forbidden pair when minimising.
    const INFINITY: Self;
    /// `-inf`.
    const NEG_INFINITY: Self;
    /// A quiet NaN (marks columns already scanned: it compares false with everything).
    const NAN: Self;
    /// The largest finite value.
    const MAX: Self;
    /// Whether the value is NaN.
    fn is_nan(self) -> bool;
    /// The absolute value.
    fn abs(self) -> Self;
    /// The value widened to `f64` (exact for both implementations).
    fn to_f64(self) -> f64;
    /// `2^exp`, with `exp` clamped to the normal range (so always exact and non-zero).
    fn exp2i(exp: i32) -> Self;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

macro_rules! impl_float {
    ($t:ty, $bits:ty) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const INFINITY: Self = <$t>::INFINITY;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            const NAN: Self = <$t>::NAN;
            const MAX: Self = <$t>::MAX;
            #[inline(always)]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                f64::from(self)
            }
            fn exp2i(exp: i32) -> Self {
                // The biased exponent of a normal power of two; mantissa zero.
                let max = <$t>::MAX_EXP - 1;
                let biased = exp.clamp(1 - max, max) + max;
                <$t>::from_bits((biased as $bits) << (<$t>::MANTISSA_DIGITS - 1))
            }
        }
    };
}

impl_float!(f32, u32);
impl_float!(f64, u64);

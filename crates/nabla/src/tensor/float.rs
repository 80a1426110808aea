//! The element types a tensor can hold: `f32` for training, `f64` for gradient checks.

use std::fmt::{Debug, Display};
use std::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub, SubAssign};

/// √(2/π), the constant of GELU's tanh approximation (used by the op and by its derivative).
pub(crate) const GELU_C: f64 = 0.797_884_560_802_865_4;
/// The cubic coefficient of GELU's tanh approximation.
pub(crate) const GELU_A: f64 = 0.044_715;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A floating-point element type: implemented for `f32` and `f64` only.
pub trait Float:
    sealed::Sealed
    + Copy
    + Send
    + Sync
    + 'static
    + Debug
    + Display
    + Default
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
{
    /// `"f32"` or `"f64"`.
    const DTYPE: &'static str;
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// -∞.
    const NEG_INFINITY: Self;
    /// The smallest positive normal value (below it numbers are subnormal).
    const MIN_POSITIVE: Self;
    /// Converts from f64 (rounding for f32).
    fn from_f64(v: f64) -> Self;
    /// Converts to f64 (exact).
    fn to_f64(self) -> f64;
    /// e^x.
    fn exp(self) -> Self;
    /// Natural logarithm.
    fn ln(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Hyperbolic tangent (f32: [`tanh_f32`], within 4.5e-7; f64: the standard library's).
    fn tanh(self) -> Self;
    /// |x|.
    fn abs(self) -> Self;
    /// x^p.
    fn powf(self, p: Self) -> Self;
    /// ln(1 + x), accurate near 0.
    fn ln_1p(self) -> Self;
    /// True unless NaN or ±∞.
    fn is_finite(self) -> bool;
    /// True for NaN.
    fn is_nan(self) -> bool;
    /// The larger of two values (NaN-propagating is not guaranteed).
    fn max(self, other: Self) -> Self;
    /// The smaller of two values.
    fn min(self, other: Self) -> Self;
    /// The slice as `f32`s when `Self` is `f32` (for kernels written for one type).
    #[doc(hidden)]
    fn as_f32(s: &[Self]) -> Option<&[f32]>;
    /// This thread's scratch buffer of this type (kernels take it out for a call and put it
    /// back, so that its memory is reused across calls instead of faulted in again).
    #[doc(hidden)]
    fn scratch() -> &'static std::thread::LocalKey<std::cell::Cell<Vec<Self>>>;
    /// The slice as `f32`s when `Self` is `f32`.
    #[doc(hidden)]
    fn as_f32_mut(s: &mut [Self]) -> Option<&mut [f32]>;
    /// `C = A·B + beta·C` over strided matrices (m×k times k×n), via the `gemm` crate (its
    /// kernel chosen at run time: AVX-512, AVX2+FMA, NEON or scalar), on up to `threads` of
    /// rayon's threads. Threads split the output, never the k sum, so results do not depend
    /// on their number.
    ///
    /// # Safety
    /// The pointers and strides must describe valid matrices of the given sizes.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
        threads: usize,
    );
}

/// For `impl_float!(f64, …)`: not an `f32` slice.
fn not_f32<T, U>(_: T) -> Option<U> {
    None
}

/// `tanh` of an f32 as a rational function (odd degree 13 over even degree 6, the
/// coefficients of Eigen's `generic_fast_tanh_float`) on `[−7.905, 7.905]`, where it reaches
/// ±1 in f32: within 4.5e-7 of the exact value (a few ulp), and, unlike libm's `tanhf`,
/// branch-free, so loops over it vectorise (GELU spent 37% of a GPT step in `tanhf`). Tiny
/// inputs return themselves; NaN gives NaN.
#[inline(always)]
pub fn tanh_f32(x: f32) -> f32 {
    const A: [f32; 7] = [
        4.893_524_6e-3,
        6.372_619_3e-4,
        1.485_722_4e-5,
        5.122_297e-8,
        -8.604_672e-11,
        2.000_188e-13,
        -2.760_768_5e-16,
    ];
    const B: [f32; 4] = [4.893_525e-3, 2.268_434_6e-3, 1.185_347e-4, 1.198_258_4e-6];
    let c = x.clamp(-7.905_311, 7.905_311);
    let x2 = c * c;
    let mut p = A[6];
    for a in A[..6].iter().rev() {
        p = x2 * p + a;
    }
    let q = ((x2 * B[3] + B[2]) * x2 + B[1]) * x2 + B[0];
    let t = c * p / q;
    if x.abs() < 4e-4 {
        x
    } else {
        t
    }
}

macro_rules! impl_float {
    ($t:ident, $as_f32:path, $tanh:path, $gemm:path) => {
        impl Float for $t {
            const DTYPE: &'static str = stringify!($t);
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NEG_INFINITY: Self = $t::NEG_INFINITY;
            const MIN_POSITIVE: Self = $t::MIN_POSITIVE;
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn exp(self) -> Self {
                $t::exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                $t::ln(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                $t::sqrt(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                $tanh(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                $t::abs(self)
            }
            #[inline(always)]
            fn powf(self, p: Self) -> Self {
                $t::powf(self, p)
            }
            #[inline(always)]
            fn ln_1p(self) -> Self {
                $t::ln_1p(self)
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                $t::is_finite(self)
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                $t::is_nan(self)
            }
            #[inline(always)]
            fn max(self, other: Self) -> Self {
                if self >= other {
                    self
                } else {
                    other
                }
            }
            #[inline(always)]
            fn min(self, other: Self) -> Self {
                if self <= other {
                    self
                } else {
                    other
                }
            }
            fn as_f32(s: &[Self]) -> Option<&[f32]> {
                $as_f32(s)
            }
            fn scratch() -> &'static std::thread::LocalKey<std::cell::Cell<Vec<Self>>> {
                thread_local! {
                    static SCRATCH: std::cell::Cell<Vec<$t>> = const { std::cell::Cell::new(Vec::new()) };
                }
                &SCRATCH
            }
            fn as_f32_mut(s: &mut [Self]) -> Option<&mut [f32]> {
                $as_f32(s)
            }
            unsafe fn gemm(
                m: usize,
                k: usize,
                n: usize,
                a: *const Self,
                rsa: isize,
                csa: isize,
                b: *const Self,
                rsb: isize,
                csb: isize,
                beta: Self,
                c: *mut Self,
                rsc: isize,
                csc: isize,
                threads: usize,
            ) {
                // dst := alpha·dst + beta·lhs·rhs, dst read only if asked; on the kernels of
                // the active instruction-set tier.
                $gemm(
                    m,
                    n,
                    k,
                    c,
                    csc,
                    rsc,
                    beta != 0.0,
                    a,
                    csa,
                    rsa,
                    b,
                    csb,
                    rsb,
                    beta,
                    1.0,
                    threads,
                )
            }
        }
    };
}

impl_float!(
    f32,
    Some,
    tanh_f32,
    crate::tensor::kernels::tiered_gemm::gemm_f32
);
impl_float!(
    f64,
    not_f32,
    f64::tanh,
    crate::tensor::kernels::tiered_gemm::gemm_f64
);

#[cfg(test)]
mod tests {
    use super::tanh_f32;

    #[test]
    fn fast_tanh_is_within_its_documented_error() {
        let mut worst = 0.0f64;
        for i in -1_200_000..=1_200_000 {
            let x = i as f32 * 1e-5;
            let err = (f64::from(tanh_f32(x)) - f64::from(x).tanh()).abs();
            worst = worst.max(err);
        }
        assert!(worst < 4.5e-7, "max error {worst}");
        assert_eq!(tanh_f32(20.0), 1.0);
        assert_eq!(tanh_f32(-f32::INFINITY), -1.0);
        assert!(tanh_f32(f32::NAN).is_nan());
        assert_eq!(tanh_f32(-0.0).to_bits(), (-0.0f32).to_bits());
    }
}

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
    /// e^x for loops that must vectorise (f32: [`exp_f32`], within 2.5e-7 relative; f64: the
    /// standard library's `exp`).
    fn exp_fast(self) -> Self;
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
    /// The (uninitialised) slice as `f32`s when `Self` is `f32`.
    #[doc(hidden)]
    fn as_f32_uninit(
        s: &mut [std::mem::MaybeUninit<Self>],
    ) -> Option<&mut [std::mem::MaybeUninit<f32>]>;
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

/// [`exp_f32`]'s constants, shared with the vector kernels that repeat its operations lane by
/// lane (`kernels/attention_x86.rs`).
pub(crate) mod exp_consts {
    /// log₂ e.
    pub(crate) const LOG2E: f32 = std::f32::consts::LOG2_E;
    /// ln 2 in two parts: a high part exact in few bits, and the rest.
    pub(crate) const LN2_HI: f32 = 0.693_359_4;
    /// See [`LN2_HI`].
    pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;
    /// Cephes' polynomial for `e^r`, highest degree first (after `r²·p + r + 1`).
    pub(crate) const P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ];
}

/// `e^x` of an f32 without a libm call, so that loops over it vectorise (an attention
/// softmax spent most of its time in `expf`): `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2`, Cephes'
/// degree-7 polynomial for `e^r`, and `2^n` applied as two powers of two so that results down
/// to the subnormal range are right. Within 2.5e-7 relative of the exact value (a few ulp)
/// from −87 to 88.7; smaller inputs give subnormals and then 0, larger ones +∞, NaN gives NaN.
/// Only multiplications, additions and conversions: the same bits on every tier.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    use exp_consts::{LN2_HI, LN2_LO, LOG2E, P};
    let c = x.clamp(-104.0, 88.72);
    let f = c * LOG2E + 0.5;
    // floor(f) through a truncating conversion (vectorises without SSE4.1's `roundps`). Not
    // `f as i32`: its saturating semantics (NaN → 0) made the compiler convert the lanes one
    // at a time, ~10× the cost of the whole function. NaN (a NaN input: `clamp` keeps it)
    // becomes 0 first; the result is NaN anyway, through `r`.
    let f = if f.is_nan() { 0.0 } else { f };
    // SAFETY: `f` is not NaN and, `c` being clamped to [−104, 88.72], lies in [−150, 128.5]:
    // its truncation is an i32.
    let t: i32 = unsafe { f.to_int_unchecked() };
    let n = t - i32::from(f < t as f32);
    let nf = n as f32;
    let r = c - nf * LN2_HI - nf * LN2_LO;
    let mut p = P[0];
    for a in &P[1..] {
        p = p * r + a;
    }
    let e = p * (r * r) + r + 1.0;
    let (n1, n2) = (n >> 1, n - (n >> 1));
    let pow = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
    let y = e * pow(n1) * pow(n2);
    if x > 88.72 {
        f32::INFINITY
    } else {
        y
    }
}

macro_rules! impl_float {
    ($t:ident, $as_f32:path, $tanh:path, $exp:path, $gemm:path) => {
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
            fn exp_fast(self) -> Self {
                $exp(self)
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
            fn as_f32_uninit(
                s: &mut [std::mem::MaybeUninit<Self>],
            ) -> Option<&mut [std::mem::MaybeUninit<f32>]> {
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
    exp_f32,
    crate::tensor::kernels::tiered_gemm::gemm_f32
);
impl_float!(
    f64,
    not_f32,
    f64::tanh,
    f64::exp,
    crate::tensor::kernels::tiered_gemm::gemm_f64
);

#[cfg(test)]
mod tests {
    use super::{exp_f32, tanh_f32};

    #[test]
    fn fast_exp_is_within_its_documented_error() {
        let mut worst = 0.0f64;
        for i in -870_000..=887_000 {
            let x = i as f32 * 1e-4;
            let exact = f64::from(x).exp();
            let err = ((f64::from(exp_f32(x)) - exact) / exact).abs();
            worst = worst.max(err);
        }
        assert!(worst < 2.5e-7, "max relative error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-200.0), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(89.0), f32::INFINITY);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
        let sub = exp_f32(-95.0);
        assert!(sub > 0.0 && sub < f32::MIN_POSITIVE);
        assert!((f64::from(sub) / (-95f64).exp() - 1.0).abs() < 1e-3);
    }

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

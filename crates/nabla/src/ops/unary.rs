//! Element-wise mathematical functions and activations.
//!
//! Conventions at points without a derivative: relu'(0) = 0, |x|'(0) = 0, leaky_relu'(0) =
//! slope, and clamp passes the gradient where `lo ≤ x ≤ hi` (boundaries included).
//!
//! NaN in, NaN out: every function here maps NaN to NaN (as PyTorch and JAX do), so a
//! diverged value cannot be silently turned into a finite one by an activation.

use crate::autograd::Op;
use crate::error::{Error, Result};
use crate::tensor::float::{GELU_A, GELU_C};
use crate::tensor::{Float, Tensor};

#[inline(always)]
pub(crate) fn sigmoid<T: Float>(x: T) -> T {
    // Two branches so that neither exp overflows.
    if x >= T::ZERO {
        T::ONE / (T::ONE + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::ONE + e)
    }
}

#[inline(always)]
pub(crate) fn softplus<T: Float>(x: T) -> T {
    // ln(1 + e^x) = max(x, 0) + ln(1 + e^−|x|): never overflows (and NaN stays NaN).
    (if x > T::ZERO { x } else { T::ZERO }) + (-x.abs()).exp().ln_1p()
}

impl<T: Float> Tensor<T> {
    /// `e^x`.
    pub fn exp(&self) -> Result<Tensor<T>> {
        self.unary_op("exp", |a| a.exp(), || Op::Exp(self.clone()))
    }

    /// Natural logarithm (`ln 0 = −∞`, negative inputs give NaN).
    pub fn log(&self) -> Result<Tensor<T>> {
        self.unary_op("log", |a| a.ln(), || Op::Log(self.clone()))
    }

    /// Square root (negative inputs give NaN).
    pub fn sqrt(&self) -> Result<Tensor<T>> {
        self.unary_op("sqrt", |a| a.sqrt(), || Op::Sqrt(self.clone()))
    }

    /// `|x|`; its derivative at 0 is taken as 0.
    pub fn abs(&self) -> Result<Tensor<T>> {
        self.unary_op("abs", |a| a.abs(), || Op::Abs(self.clone()))
    }

    /// Clamps into `[lo, hi]`; `lo ≤ hi` required (either may be infinite). NaN stays NaN.
    pub fn clamp(&self, lo: f64, hi: f64) -> Result<Tensor<T>> {
        if lo.is_nan() || hi.is_nan() || lo > hi {
            return Err(Error::arg(
                "clamp",
                format!("bounds [{lo}, {hi}] are not an interval"),
            ));
        }
        let (l, h) = (T::from_f64(lo), T::from_f64(hi));
        // Written with comparisons that are false for NaN, so NaN passes through.
        self.unary_op(
            "clamp",
            move |a| {
                if a < l {
                    l
                } else if a > h {
                    h
                } else {
                    a
                }
            },
            || Op::Clamp(self.clone(), l, h),
        )
    }

    /// `max(x, 0)`; its derivative at 0 is taken as 0. NaN stays NaN.
    pub fn relu(&self) -> Result<Tensor<T>> {
        self.unary_op(
            "relu",
            |a| if a < T::ZERO { T::ZERO } else { a },
            || Op::Relu(self.clone()),
        )
    }

    /// `x` for `x > 0`, `slope · x` otherwise.
    pub fn leaky_relu(&self, slope: f64) -> Result<Tensor<T>> {
        let s = T::from_f64(slope);
        self.unary_op(
            "leaky_relu",
            move |a| if a > T::ZERO { a } else { a * s },
            || Op::LeakyRelu(self.clone(), s),
        )
    }

    /// `1 / (1 + e^−x)`, computed without overflow.
    pub fn sigmoid(&self) -> Result<Tensor<T>> {
        self.unary_op("sigmoid", sigmoid, || Op::Sigmoid(self.clone()))
    }

    /// Hyperbolic tangent.
    pub fn tanh(&self) -> Result<Tensor<T>> {
        self.unary_op("tanh", |a| a.tanh(), || Op::Tanh(self.clone()))
    }

    /// GELU with the tanh approximation: `x/2 · (1 + tanh(√(2/π)(x + 0.044715x³)))`.
    pub fn gelu(&self) -> Result<Tensor<T>> {
        let (c, k) = (T::from_f64(GELU_C), T::from_f64(GELU_A));
        let half = T::from_f64(0.5);
        self.unary_op(
            "gelu",
            move |x| half * x * (T::ONE + (c * (x + k * x * x * x)).tanh()),
            || Op::Gelu(self.clone()),
        )
    }

    /// `ln(1 + e^x)`, computed without overflow.
    pub fn softplus(&self) -> Result<Tensor<T>> {
        self.unary_op("softplus", softplus, || Op::Softplus(self.clone()))
    }
}

//! Element-wise mathematical functions and activations.
//!
//! Conventions at points without a derivative: relu'(0) = 0, |x|'(0) = 0, leaky_relu'(0) =
//! slope, and clamp passes the gradient where `lo ≤ x ≤ hi` (boundaries included).

use crate::autograd::Op;
use crate::error::{Error, Result};
use crate::tensor::{Float, Tensor};

/// √(2/π), the constant of GELU's tanh approximation.
pub(crate) const GELU_C: f64 = 0.797_884_560_802_865_4;
/// The cubic coefficient of GELU's tanh approximation.
pub(crate) const GELU_A: f64 = 0.044_715;

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
    // ln(1 + e^x) = max(x, 0) + ln(1 + e^−|x|): never overflows.
    x.max(T::ZERO) + (-x.abs()).exp().ln_1p()
}

impl<T: Float> Tensor<T> {
    /// `e^x`.
    pub fn exp(&self) -> Tensor<T> {
        self.unary_op(|a| a.exp(), || Op::Exp(self.clone()))
    }

    /// Natural logarithm (`ln 0 = −∞`, negative inputs give NaN).
    pub fn log(&self) -> Tensor<T> {
        self.unary_op(|a| a.ln(), || Op::Log(self.clone()))
    }

    /// Square root (negative inputs give NaN).
    pub fn sqrt(&self) -> Tensor<T> {
        self.unary_op(|a| a.sqrt(), || Op::Sqrt(self.clone()))
    }

    /// `|x|`; its derivative at 0 is taken as 0.
    pub fn abs(&self) -> Tensor<T> {
        self.unary_op(|a| a.abs(), || Op::Abs(self.clone()))
    }

    /// Clamps into `[lo, hi]`; `lo ≤ hi` required (either may be infinite).
    pub fn clamp(&self, lo: f64, hi: f64) -> Result<Tensor<T>> {
        if lo.is_nan() || hi.is_nan() || lo > hi {
            return Err(Error::arg(
                "clamp",
                format!("bounds [{lo}, {hi}] are not an interval"),
            ));
        }
        let (l, h) = (T::from_f64(lo), T::from_f64(hi));
        Ok(self.unary_op(move |a| a.max(l).min(h), || Op::Clamp(self.clone(), l, h)))
    }

    /// `max(x, 0)`; its derivative at 0 is taken as 0.
    pub fn relu(&self) -> Tensor<T> {
        self.unary_op(|a| a.max(T::ZERO), || Op::Relu(self.clone()))
    }

    /// `x` for `x > 0`, `slope · x` otherwise.
    pub fn leaky_relu(&self, slope: f64) -> Tensor<T> {
        let s = T::from_f64(slope);
        self.unary_op(
            move |a| if a > T::ZERO { a } else { a * s },
            || Op::LeakyRelu(self.clone(), s),
        )
    }

    /// `1 / (1 + e^−x)`, computed without overflow.
    pub fn sigmoid(&self) -> Tensor<T> {
        self.unary_op(sigmoid, || Op::Sigmoid(self.clone()))
    }

    /// Hyperbolic tangent.
    pub fn tanh(&self) -> Tensor<T> {
        self.unary_op(|a| a.tanh(), || Op::Tanh(self.clone()))
    }

    /// GELU with the tanh approximation: `x/2 · (1 + tanh(√(2/π)(x + 0.044715x³)))`.
    pub fn gelu(&self) -> Tensor<T> {
        let (c, k) = (T::from_f64(GELU_C), T::from_f64(GELU_A));
        let half = T::from_f64(0.5);
        self.unary_op(
            move |x| half * x * (T::ONE + (c * (x + k * x * x * x)).tanh()),
            || Op::Gelu(self.clone()),
        )
    }

    /// `ln(1 + e^x)`, computed without overflow.
    pub fn softplus(&self) -> Tensor<T> {
        self.unary_op(softplus, || Op::Softplus(self.clone()))
    }
}

//! Element-wise mathematical functions and activations.
//!
//! Conventions at points without a derivative: relu'(0) = 0, |x|'(0) = 0, leaky_relu'(0) =
//! slope, and clamp passes the gradient where `lo ≤ x ≤ hi` (boundaries included).
//!
//! NaN in, NaN out: every function here maps NaN to NaN (as PyTorch and JAX do), so a
//! diverged value cannot be silently turned into a finite one by an activation.

use crate::autograd::{record, Op};
use crate::error::{Error, Result};
use crate::tensor::float::{GELU_A, GELU_C};
use crate::tensor::kernels::elementwise;
use crate::tensor::storage::buffer;
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

/// `tanh(c(x + a·x³))`: the tanh in GELU's approximation (`c = √(2/π)`, `a = 0.044715`).
#[inline(always)]
pub(crate) fn gelu_tanh<T: Float>(x: T) -> T {
    let (c, a) = (T::from_f64(GELU_C), T::from_f64(GELU_A));
    (c * (x + a * x * x * x)).tanh()
}

/// `gelu(x) = x/2 · (1 + t)` for `t = gelu_tanh(x)`.
#[inline(always)]
pub(crate) fn gelu_from_tanh<T: Float>(x: T, t: T) -> T {
    T::from_f64(0.5) * x * (T::ONE + t)
}

/// `gelu'(x) = (1 + t)/2 + x/2 · (1 − t²) · c(1 + 3a·x²)` for `t = gelu_tanh(x)`.
#[inline(always)]
pub(crate) fn gelu_slope_from_tanh<T: Float>(x: T, t: T) -> T {
    let (c, a) = (T::from_f64(GELU_C), T::from_f64(GELU_A));
    let (half, three) = (T::from_f64(0.5), T::from_f64(3.0));
    let x2 = x * x;
    half * (T::ONE + t) + half * x * (T::ONE - t * t) * c * (T::ONE + three * a * x2)
}

/// GELU (tanh approximation) of one value.
#[inline(always)]
fn gelu_value<T: Float>(x: T) -> T {
    gelu_from_tanh(x, gelu_tanh(x))
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
    ///
    /// When the call is recorded for backward and `self` is contiguous, the same pass also
    /// writes the derivative `gelu'(x)` (kept by the graph, one more tensor of `self`'s size),
    /// so that plain backpropagation multiplies by it instead of evaluating `tanh` again: in
    /// the baby GPT the backward pass took 1.8× the forward's time recomputing it. The values
    /// are those of [`Tensor::gelu_backward`], which `create_graph` backward still uses (the
    /// kept derivative is a constant, not differentiable again).
    pub fn gelu(&self) -> Result<Tensor<T>> {
        let keep_slope = crate::autograd::is_grad_enabled() && self.requires_grad_flag();
        let range = self.layout().contiguous_range();
        let (true, Some(range)) = (keep_slope, range) else {
            return self.unary_op("gelu", gelu_value, || Op::Gelu(self.clone(), None));
        };
        let mut data = buffer("gelu", self.shape())?;
        let mut slope = buffer("gelu", self.shape())?;
        {
            let s = self.strided();
            elementwise::map_pair(
                &s.data[range],
                #[inline(always)]
                |x| {
                    let t = gelu_tanh(x);
                    (gelu_from_tanh(x, t), gelu_slope_from_tanh(x, t))
                },
                &mut data,
                &mut slope,
            );
        }
        let slope = Tensor::from_vec(slope, self.shape())?;
        Ok(record(data, self.shape().to_vec(), &[self], || {
            Op::Gelu(self.clone(), Some(slope))
        }))
    }

    /// `ln(1 + e^x)`, computed without overflow.
    pub fn softplus(&self) -> Result<Tensor<T>> {
        self.unary_op("softplus", softplus, || Op::Softplus(self.clone()))
    }
}

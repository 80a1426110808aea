//! Broadcasting arithmetic and scalar arithmetic.

use crate::autograd::Op;
use crate::error::{Error, Result};
use crate::tensor::{Float, Tensor};

impl<T: Float> Tensor<T> {
    /// `self + other`, with NumPy broadcasting.
    pub fn add(&self, other: &Tensor<T>) -> Result<Tensor<T>> {
        self.binary_op(
            other,
            "add",
            |a, b| a + b,
            || Op::Add(self.clone(), other.clone()),
        )
    }

    /// `self − other`, with NumPy broadcasting.
    pub fn sub(&self, other: &Tensor<T>) -> Result<Tensor<T>> {
        self.binary_op(
            other,
            "sub",
            |a, b| a - b,
            || Op::Sub(self.clone(), other.clone()),
        )
    }

    /// `self ⊙ other` (element-wise product), with NumPy broadcasting.
    pub fn mul(&self, other: &Tensor<T>) -> Result<Tensor<T>> {
        self.binary_op(
            other,
            "mul",
            |a, b| a * b,
            || Op::Mul(self.clone(), other.clone()),
        )
    }

    /// `self ⊘ other` (element-wise quotient), with NumPy broadcasting.
    pub fn div(&self, other: &Tensor<T>) -> Result<Tensor<T>> {
        self.binary_op(
            other,
            "div",
            |a, b| a / b,
            || Op::Div(self.clone(), other.clone()),
        )
    }

    /// `−self`.
    pub fn neg(&self) -> Result<Tensor<T>> {
        self.unary_op("neg", |a| -a, || Op::Neg(self.clone()))
    }

    /// `self + c` for a scalar `c`.
    pub fn add_scalar(&self, c: f64) -> Result<Tensor<T>> {
        let c = T::from_f64(c);
        self.unary_op("add_scalar", move |a| a + c, || Op::AddScalar(self.clone()))
    }

    /// `c · self` for a scalar `c`.
    pub fn mul_scalar(&self, c: f64) -> Result<Tensor<T>> {
        let c = T::from_f64(c);
        self.unary_op(
            "mul_scalar",
            move |a| a * c,
            || Op::MulScalar(self.clone(), c),
        )
    }

    /// `self^p` element-wise, for a finite scalar exponent `p`. Negative bases give NaN unless
    /// `p` is an integer.
    pub fn pow_scalar(&self, p: f64) -> Result<Tensor<T>> {
        if !p.is_finite() {
            return Err(Error::arg(
                "pow_scalar",
                format!("exponent {p} is not finite"),
            ));
        }
        let pt = T::from_f64(p);
        if p == 2.0 {
            self.unary_op("pow_scalar", |a| a * a, || Op::PowScalar(self.clone(), pt))
        } else {
            self.unary_op(
                "pow_scalar",
                move |a| a.powf(pt),
                || Op::PowScalar(self.clone(), pt),
            )
        }
    }

    /// `self²`.
    pub fn square(&self) -> Result<Tensor<T>> {
        let two = T::from_f64(2.0);
        self.unary_op("square", |a| a * a, || Op::PowScalar(self.clone(), two))
    }
}

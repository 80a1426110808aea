//! The differentiable operations, as methods on [`Tensor`]. Each computes its forward result
//! with a kernel from `tensor::kernels` and records an [`Op`] when an input requires a gradient.

mod arith;
mod layout;
mod loss;
mod matmul;
mod nograd;
mod reduce;
pub(crate) mod unary;

pub(crate) use matmul::matmul_raw;

use crate::autograd::Op;
use crate::error::Result;
use crate::tensor::kernels::elementwise;
use crate::tensor::shape::broadcast_shapes;
use crate::tensor::{Float, Tensor};

impl<T: Float> Tensor<T> {
    /// Applies `f` element-wise and records `make()`.
    pub(crate) fn unary_op(
        &self,
        f: impl Fn(T) -> T + Sync + Send,
        make: impl FnOnce() -> Op<T>,
    ) -> Tensor<T> {
        let data = elementwise::map(&self.data(), f);
        Tensor::from_op(data, self.shape().to_vec(), &[self], make)
    }

    /// `f` applied with broadcasting: the data and the broadcast shape (nothing recorded).
    pub(crate) fn broadcast_map(
        &self,
        other: &Tensor<T>,
        name: &'static str,
        f: impl Fn(T, T) -> T + Sync + Send,
    ) -> Result<(Vec<T>, Vec<usize>)> {
        let shape = broadcast_shapes(name, self.shape(), other.shape())?;
        let data = elementwise::broadcast_binary(
            &self.data(),
            self.shape(),
            &other.data(),
            other.shape(),
            &shape,
            f,
        );
        Ok((data, shape))
    }

    /// Applies `f` with broadcasting and records `make()`.
    pub(crate) fn binary_op(
        &self,
        other: &Tensor<T>,
        name: &'static str,
        f: impl Fn(T, T) -> T + Sync + Send,
        make: impl FnOnce() -> Op<T>,
    ) -> Result<Tensor<T>> {
        let (data, shape) = self.broadcast_map(other, name, f)?;
        Ok(Tensor::from_op(data, shape, &[self, other], make))
    }
}

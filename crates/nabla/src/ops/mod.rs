//! The differentiable operations, as methods on [`Tensor`], named like
//! `torch.nn.functional`; this module holds their option types. Each computes its forward
//! result with a kernel from `tensor::kernels` into a buffer allocated fallibly (an impossible
//! size is an `Err`, never an abort) and records an [`Op`] when an input requires a gradient.

mod arith;
mod conv;
mod layout;
mod loss;
mod matmul;
mod nograd;
mod norm;
pub(crate) mod pool;
mod reduce;
mod scatter;
mod sequence;
mod unary;

pub use crate::tensor::kernels::conv::{Conv2dOptions, PoolOptions};
pub use conv::Conv1dOptions;
pub(crate) use sequence::packed_attention_dropped;
pub use sequence::{packed_attention, scaled_dot_product_attention};

use crate::autograd::{record, Op};
use crate::error::Result;
use crate::tensor::kernels::elementwise;
use crate::tensor::shape::broadcast_shapes;
use crate::tensor::storage::buffer;
use crate::tensor::{Float, Tensor};

impl<T: Float> Tensor<T> {
    /// Applies `f` element-wise (reading strides directly) and records `make()`.
    pub(crate) fn unary_op(
        &self,
        name: &'static str,
        f: impl Fn(T) -> T + Sync + Send,
        make: impl FnOnce() -> Op<T>,
    ) -> Result<Tensor<T>> {
        let mut data = buffer(name, self.shape())?;
        {
            let s = self.strided();
            elementwise::map_strided(&s.data, s.layout, f, &mut data);
        }
        Ok(record(data, self.shape().to_vec(), &[self], make))
    }

    /// `f` applied with broadcasting: the data and the broadcast shape (nothing recorded).
    pub(crate) fn broadcast_map(
        &self,
        other: &Tensor<T>,
        name: &'static str,
        f: impl Fn(T, T) -> T + Sync + Send,
    ) -> Result<(Vec<T>, Vec<usize>)> {
        let shape = broadcast_shapes(name, self.shape(), other.shape())?;
        let mut data = buffer(name, &shape)?;
        let (a, b) = (self.strided(), other.strided());
        elementwise::binary(&a.data, a.layout, &b.data, b.layout, &shape, f, &mut data);
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
        Ok(record(data, shape, &[self, other], make))
    }
}

//! The fused softmax cross-entropy operation (the losses built on it are in `nn::loss`).

use crate::autograd::{no_grad, record, Op};
use crate::error::{Error, Result};
use crate::tensor::kernels::{reduce, rows};
use crate::tensor::shape::fmt_shape;
use crate::tensor::{Float, Tensor};

impl<T: Float> Tensor<T> {
    /// Per-row cross-entropy between `[n, k]` logits and a `[n, k]` target distribution:
    /// `−Σⱼ tᵢⱼ · log softmax(zᵢ)ⱼ`, returned as `[n]`. Fused and stable: the log-softmax is never
    /// materialised, its maximum is subtracted, and the backward pass is `softmax − target`.
    /// The target is data: no gradient flows to it.
    pub fn softmax_cross_entropy(&self, target: &Tensor<T>) -> Result<Tensor<T>> {
        if self.rank() != 2 || target.shape() != self.shape() {
            return Err(Error::shape(
                "softmax_cross_entropy",
                format!(
                    "logits {} and target {} must be the same [n, classes] shape",
                    fmt_shape(self.shape()),
                    fmt_shape(target.shape())
                ),
            ));
        }
        let k = self.shape()[1];
        if k == 0 {
            return Err(Error::shape(
                "softmax_cross_entropy",
                format!("logits {} have no classes", fmt_shape(self.shape())),
            ));
        }
        // A copy: the rule reads the target in backward, and a caller may edit theirs in
        // place meanwhile (a shared storage would give a wrong gradient, unnoticed).
        let t = Tensor::from_vec(target.to_vec()?, target.shape())?;
        self.softmax_cross_entropy_owned(t, false)
    }

    /// [`softmax_cross_entropy`](Tensor::softmax_cross_entropy) against a target `t` of the
    /// logits' `[n, k]` shape (k ≥ 1, checked by the caller) that nothing else holds (not
    /// copied), whose rows each sum to exactly 1 where `unit_rows` (one-hot rows: not
    /// checked again).
    pub(crate) fn softmax_cross_entropy_owned(
        &self,
        t: Tensor<T>,
        unit_rows: bool,
    ) -> Result<Tensor<T>> {
        let k = self.shape()[1];
        let (data, ones) = {
            let td = t.data()?;
            // Each row's sum over interleaved partial sums (in whole vectors; one running
            // sum was a chain of dependent additions as long as the target).
            let ones = unit_rows
                || crate::isa::vectorized(
                    #[inline(always)]
                    || {
                        td.chunks(k)
                            .all(|row| T::from_f64(rows::part_sum(row, |v| v)) == T::ONE)
                    },
                );
            (reduce::softmax_cross_entropy(&self.data()?, &td, k), ones)
        };
        // The gradient scales softmax by each row's target mass: skipped when all are 1.
        let mass = if ones {
            None
        } else {
            Some(no_grad(|| t.sum(&[1], true))?)
        };
        Ok(record(data, vec![self.shape()[0]], &[self], || {
            Op::SoftmaxCrossEntropy(self.clone(), t, mass)
        }))
    }

    /// The gradient of [`softmax_cross_entropy`](Tensor::softmax_cross_entropy) of logits `z`
    /// against targets `t` (row masses `mass`, if not all 1) for the per-row output gradient
    /// `self`, not recorded: `(softmax(z)·mass − t)·g`, the values of those ops, in one pass.
    pub(crate) fn softmax_cross_entropy_grad(
        &self,
        z: &Tensor<T>,
        t: &Tensor<T>,
        mass: Option<&Tensor<T>>,
    ) -> Result<Tensor<T>> {
        let k = z.shape()[1];
        let mass = mass.map(|m| m.data()).transpose()?;
        let data = reduce::softmax_cross_entropy_grad(
            &z.data()?,
            &t.data()?,
            mass.as_deref(),
            &self.data()?,
            k,
        );
        Tensor::from_vec(data, z.shape())
    }
}

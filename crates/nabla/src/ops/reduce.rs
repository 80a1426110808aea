//! Reductions (sum, mean, max) over chosen axes, and softmax / log-softmax along an axis.

use crate::autograd::{record, Op};
use crate::error::{Error, Result};
use crate::tensor::kernels::reduce;
use crate::tensor::shape::{check_axis, normalize_axes, numel, reduced_shape, sum_to_axes};
use crate::tensor::storage::filled;
use crate::tensor::{Float, Tensor};

/// The sums over `axes` as row-major data of `out_shape`. For a non-empty input the result is
/// no larger than the input; an empty input can still have a huge result (a sum over an empty
/// axis), which is allocated fallibly.
fn sum_data<T: Float>(
    op: &'static str,
    x: &Tensor<T>,
    axes: &[usize],
    out_shape: &[usize],
) -> Result<Vec<T>> {
    if x.numel() == 0 {
        return filled(op, out_shape, T::ZERO);
    }
    Ok(reduce::sum_axes(&x.data()?, x.shape(), axes))
}

fn check_nonempty(op: &'static str, axes: &[usize]) -> Result<()> {
    if axes.is_empty() {
        Err(Error::arg(
            op,
            "no axes given (use the *_all variant to reduce everything)",
        ))
    } else {
        Ok(())
    }
}

impl<T: Float> Tensor<T> {
    /// Sum over `axes`; with `keepdim` they stay as size 1, otherwise they are removed.
    pub fn sum(&self, axes: &[usize], keepdim: bool) -> Result<Tensor<T>> {
        check_nonempty("sum", axes)?;
        let axes = normalize_axes("sum", axes, self.rank())?;
        let shape = reduced_shape(self.shape(), &axes, keepdim);
        let data = sum_data("sum", self, &axes, &shape)?;
        Ok(record(data, shape, &[self], || {
            Op::Sum(self.clone(), axes.clone(), keepdim)
        }))
    }

    /// Sum of all elements, as a 0-dimensional tensor.
    pub fn sum_all(&self) -> Result<Tensor<T>> {
        if self.rank() == 0 {
            return self.reshape(&[]);
        }
        let axes: Vec<usize> = (0..self.rank()).collect();
        self.sum(&axes, false)
    }

    /// Mean over `axes` (a sum times 1/count).
    pub fn mean(&self, axes: &[usize], keepdim: bool) -> Result<Tensor<T>> {
        let s = self.sum(axes, keepdim)?;
        let count = numel(&axes.iter().map(|&a| self.shape()[a]).collect::<Vec<_>>());
        s.mul_scalar(1.0 / count as f64)
    }

    /// Mean of all elements, as a 0-dimensional tensor.
    pub fn mean_all(&self) -> Result<Tensor<T>> {
        self.sum_all()?.mul_scalar(1.0 / self.numel() as f64)
    }

    /// Maximum over `axes`. The gradient goes to the first maximal element of each group (one
    /// axis at a time, last axis first).
    pub fn max(&self, axes: &[usize], keepdim: bool) -> Result<Tensor<T>> {
        check_nonempty("max", axes)?;
        let axes = normalize_axes("max", axes, self.rank())?;
        if let Some(&a) = axes.iter().find(|&&a| self.shape()[a] == 0) {
            return Err(Error::shape(
                "max",
                format!("axis {a} of {:?} is empty", self.shape()),
            ));
        }
        let mut cur = self.clone();
        for &a in axes.iter().rev() {
            let (vals, _) = reduce::max_axis(&cur.data()?, cur.shape(), a);
            let shape = reduced_shape(cur.shape(), &[a], keepdim);
            let input = cur.clone();
            cur = record(vals, shape, &[&input], || {
                Op::Max(input.clone(), a, keepdim)
            });
        }
        Ok(cur)
    }

    /// Softmax along `axis`: `e^(x − max) / Σ e^(x − max)`. Finite for any finite logits; `−∞`
    /// entries get probability 0.
    pub fn softmax(&self, axis: usize) -> Result<Tensor<T>> {
        check_axis("softmax", axis, self.rank())?;
        let data = reduce::softmax_axis(&self.data()?, self.shape(), axis, false);
        Ok(record(data, self.shape().to_vec(), &[self], || {
            Op::Softmax(self.clone(), axis)
        }))
    }

    /// Log-softmax along `axis`: `x − max − ln Σ e^(x − max)`. Finite for any finite logits.
    pub fn log_softmax(&self, axis: usize) -> Result<Tensor<T>> {
        check_axis("log_softmax", axis, self.rank())?;
        let data = reduce::softmax_axis(&self.data()?, self.shape(), axis, true);
        Ok(record(data, self.shape().to_vec(), &[self], || {
            Op::LogSoftmax(self.clone(), axis)
        }))
    }

    /// Sums a broadcast result back to `target` (the shape of an operand that was broadcast):
    /// used by backward rules (recorded like any op, so it can be differentiated again).
    pub(crate) fn sum_to(&self, target: &[usize]) -> Result<Tensor<T>> {
        if self.shape() == target {
            return Ok(self.clone());
        }
        let axes = sum_to_axes(self.shape(), target);
        let summed = if axes.is_empty() {
            self.clone()
        } else {
            self.sum(&axes, true)?
        };
        summed.reshape(target)
    }
}

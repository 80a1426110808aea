//! Helpers that have no gradient: argmax, one-hot encoding, comparisons. Their results are
//! never recorded in the graph.

use crate::error::{Error, Result};
use crate::tensor::kernels::reduce;
use crate::tensor::shape::{check_axis, fmt_shape};
use crate::tensor::{Float, Tensor};

impl<T: Float> Tensor<T> {
    /// Index of the first maximum along `axis` (the predicted class along the class axis).
    pub fn argmax(&self, axis: usize) -> Result<Vec<usize>> {
        check_axis("argmax", axis, self.rank())?;
        if self.shape()[axis] == 0 {
            return Err(Error::shape(
                "argmax",
                format!("axis {axis} of {} is empty", fmt_shape(self.shape())),
            ));
        }
        Ok(reduce::max_axis(&self.data()?, self.shape(), axis).1)
    }

    /// `[n, classes]` with a 1 at each `(i, labels[i])` and 0 elsewhere.
    pub fn one_hot(labels: &[usize], classes: usize) -> Result<Tensor<T>> {
        if let Some(&bad) = labels.iter().find(|&&l| l >= classes) {
            return Err(Error::arg(
                "one_hot",
                format!("label {bad} is not below the class count {classes}"),
            ));
        }
        let mut data = vec![T::ZERO; labels.len() * classes];
        for (i, &l) in labels.iter().enumerate() {
            data[i * classes + l] = T::ONE;
        }
        Tensor::from_vec(data, &[labels.len(), classes])
    }

    /// The prediction as a one-hot tensor: 1 at the argmax along the last axis.
    pub fn one_hot_argmax(&self) -> Result<Tensor<T>> {
        if self.rank() == 0 {
            return Err(Error::shape("one_hot_argmax", "a scalar has no class axis"));
        }
        let axis = self.rank() - 1;
        let idx = self.argmax(axis)?;
        let classes = self.shape()[axis];
        let out = Tensor::<T>::one_hot(&idx, classes)?;
        out.reshape(self.shape())
    }

    fn compare(
        &self,
        other: &Tensor<T>,
        name: &'static str,
        f: impl Fn(T, T) -> bool + Sync + Send,
    ) -> Result<Tensor<T>> {
        let (data, shape) =
            self.broadcast_map(other, name, |a, b| if f(a, b) { T::ONE } else { T::ZERO })?;
        Tensor::from_vec(data, &shape)
    }

    /// 1 where `self == other`, else 0 (broadcasting).
    pub fn eq(&self, other: &Tensor<T>) -> Result<Tensor<T>> {
        self.compare(other, "eq", |a, b| a == b)
    }

    /// 1 where `self != other`, else 0 (broadcasting; NaN != NaN).
    pub fn ne(&self, other: &Tensor<T>) -> Result<Tensor<T>> {
        self.compare(other, "ne", |a, b| a != b)
    }

    /// 1 where `self < other`, else 0 (broadcasting).
    pub fn lt(&self, other: &Tensor<T>) -> Result<Tensor<T>> {
        self.compare(other, "lt", |a, b| a < b)
    }

    /// 1 where `self <= other`, else 0 (broadcasting).
    pub fn le(&self, other: &Tensor<T>) -> Result<Tensor<T>> {
        self.compare(other, "le", |a, b| a <= b)
    }

    /// 1 where `self > other`, else 0 (broadcasting).
    pub fn gt(&self, other: &Tensor<T>) -> Result<Tensor<T>> {
        self.compare(other, "gt", |a, b| a > b)
    }

    /// 1 where `self >= other`, else 0 (broadcasting).
    pub fn ge(&self, other: &Tensor<T>) -> Result<Tensor<T>> {
        self.compare(other, "ge", |a, b| a >= b)
    }
}

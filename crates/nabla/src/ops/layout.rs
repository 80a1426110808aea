//! Shape and data-movement operations: reshape, permute/transpose, broadcast_to, narrow,
//! concat, index_select, gather.

use std::sync::Arc;

use crate::autograd::Op;
use crate::error::{Error, Result};
use crate::tensor::kernels::{layout, split_at_axis};
use crate::tensor::shape::{
    broadcast_strides, check_axis, check_broadcast_to, checked_numel, fmt_shape, numel,
};
use crate::tensor::{Float, Tensor};

impl<T: Float> Tensor<T> {
    /// The same elements under a new shape with the same element count. Shares storage.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor<T>> {
        if checked_numel("reshape", shape)? != self.numel() {
            return Err(Error::shape(
                "reshape",
                format!(
                    "cannot reshape {} ({} elements) to {} ({} elements)",
                    fmt_shape(self.shape()),
                    self.numel(),
                    fmt_shape(shape),
                    numel(shape)
                ),
            ));
        }
        let record = crate::autograd::is_grad_enabled() && self.requires_grad_flag();
        Ok(self.share_storage(shape.to_vec(), record.then(|| Op::Reshape(self.clone()))))
    }

    /// Reorders the axes: `out.shape[i] = self.shape[perm[i]]`.
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor<T>> {
        let rank = self.rank();
        let mut seen = vec![false; rank];
        let valid = perm.len() == rank
            && perm
                .iter()
                .all(|&p| p < rank && !std::mem::replace(&mut seen[p], true));
        if !valid {
            return Err(Error::arg(
                "permute",
                format!(
                    "{perm:?} is not a permutation of the {rank} axes of {}",
                    fmt_shape(self.shape())
                ),
            ));
        }
        let data = layout::permute(&self.data(), self.shape(), perm);
        let shape = perm.iter().map(|&p| self.shape()[p]).collect();
        Ok(Tensor::from_op(data, shape, &[self], || {
            Op::Permute(self.clone(), perm.to_vec())
        }))
    }

    /// Swaps two axes (a copy; to multiply by a transpose without copying use
    /// [`Tensor::matmul_t`]).
    pub fn transpose(&self, a: usize, b: usize) -> Result<Tensor<T>> {
        check_axis("transpose", a, self.rank())?;
        check_axis("transpose", b, self.rank())?;
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// The transpose of a 2-D tensor.
    pub fn t(&self) -> Result<Tensor<T>> {
        if self.rank() != 2 {
            return Err(Error::shape(
                "t",
                format!("{} is not 2-D", fmt_shape(self.shape())),
            ));
        }
        self.transpose(0, 1)
    }

    /// Inserts an axis of size 1 at `axis` (0 ≤ axis ≤ rank).
    pub fn unsqueeze(&self, axis: usize) -> Result<Tensor<T>> {
        check_axis("unsqueeze", axis, self.rank() + 1)?;
        let mut shape = self.shape().to_vec();
        shape.insert(axis, 1);
        self.reshape(&shape)
    }

    /// Repeats the tensor along broadcast dimensions to `shape` (NumPy rules, one direction).
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor<T>> {
        check_broadcast_to("broadcast_to", self.shape(), shape)?;
        checked_numel("broadcast_to", shape)?;
        let strides = broadcast_strides(self.shape(), shape);
        let data = layout::strided_copy(&self.data(), shape, &strides);
        Ok(Tensor::from_op(data, shape.to_vec(), &[self], || {
            Op::BroadcastTo(self.clone())
        }))
    }

    /// `len` elements along `axis` starting at `start`.
    pub fn narrow(&self, axis: usize, start: usize, len: usize) -> Result<Tensor<T>> {
        check_axis("narrow", axis, self.rank())?;
        let dim = self.shape()[axis];
        if start.checked_add(len).is_none_or(|end| end > dim) {
            return Err(Error::arg(
                "narrow",
                format!(
                    "range {start}..{} is outside axis {axis} of size {dim} in {}",
                    start.saturating_add(len),
                    fmt_shape(self.shape())
                ),
            ));
        }
        let data = layout::narrow(&self.data(), self.shape(), axis, start, len);
        let mut shape = self.shape().to_vec();
        shape[axis] = len;
        Ok(Tensor::from_op(data, shape, &[self], || Op::Narrow {
            input: self.clone(),
            axis,
            start,
            len,
        }))
    }

    /// Joins tensors along `axis`; all other dimensions must agree.
    pub fn concat(parts: &[&Tensor<T>], axis: usize) -> Result<Tensor<T>> {
        let first = parts
            .first()
            .ok_or_else(|| Error::arg("concat", "no tensors to concatenate"))?;
        check_axis("concat", axis, first.rank())?;
        for p in parts {
            let same = p.rank() == first.rank()
                && p.shape()
                    .iter()
                    .zip(first.shape())
                    .enumerate()
                    .all(|(i, (a, b))| i == axis || a == b);
            if !same {
                return Err(Error::shape(
                    "concat",
                    format!(
                        "{} and {} differ outside axis {axis}",
                        fmt_shape(first.shape()),
                        fmt_shape(p.shape())
                    ),
                ));
            }
        }
        let (outer, _, inner) = split_at_axis(first.shape(), axis);
        let guards: Vec<_> = parts.iter().map(|p| p.data()).collect();
        let slices: Vec<&[T]> = guards.iter().map(|g| &g[..]).collect();
        let dims: Vec<usize> = parts.iter().map(|p| p.shape()[axis]).collect();
        let data = layout::concat(&slices, &dims, outer, inner);
        drop(guards);
        let mut shape = first.shape().to_vec();
        shape[axis] = dims.iter().sum();
        Ok(Tensor::from_op(data, shape, parts, || {
            Op::Concat(parts.iter().map(|&p| p.clone()).collect(), axis)
        }))
    }

    /// Picks entries along `axis` by index (entries may repeat): the result has
    /// `indices.len()` entries along `axis`.
    pub fn index_select(&self, axis: usize, indices: &[usize]) -> Result<Tensor<T>> {
        check_axis("index_select", axis, self.rank())?;
        let dim = self.shape()[axis];
        if let Some(&bad) = indices.iter().find(|&&i| i >= dim) {
            return Err(Error::arg(
                "index_select",
                format!(
                    "index {bad} is out of range for axis {axis} of size {dim} in {}",
                    fmt_shape(self.shape())
                ),
            ));
        }
        let data = layout::index_select(&self.data(), self.shape(), axis, indices);
        let mut shape = self.shape().to_vec();
        shape[axis] = indices.len();
        Ok(Tensor::from_op(data, shape, &[self], || {
            Op::IndexSelect(self.clone(), axis, Arc::new(indices.to_vec()))
        }))
    }

    /// Element-wise pick along `axis`: with the index laid out like the output,
    /// `out[.., j, ..] = self[.., index[.., j, ..], ..]`. The output has the shape of `self`
    /// except `k = indices.len() / (other dimensions)` along `axis`. For cross-entropy,
    /// `logp.gather(1, &labels)` picks each row's label entry.
    pub fn gather(&self, axis: usize, indices: &[usize]) -> Result<Tensor<T>> {
        check_axis("gather", axis, self.rank())?;
        let (outer, dim, inner) = split_at_axis(self.shape(), axis);
        let rest = outer * inner;
        if rest == 0 || indices.len() % rest != 0 {
            return Err(Error::shape(
                "gather",
                format!(
                    "{} indices do not fill {} with a new size along axis {axis}",
                    indices.len(),
                    fmt_shape(self.shape())
                ),
            ));
        }
        if let Some(&bad) = indices.iter().find(|&&i| i >= dim) {
            return Err(Error::arg(
                "gather",
                format!(
                    "index {bad} is out of range for axis {axis} of size {dim} in {}",
                    fmt_shape(self.shape())
                ),
            ));
        }
        let data = layout::gather(&self.data(), self.shape(), axis, indices);
        let mut shape = self.shape().to_vec();
        shape[axis] = indices.len() / rest;
        Ok(Tensor::from_op(data, shape, &[self], || {
            Op::Gather(self.clone(), axis, Arc::new(indices.to_vec()))
        }))
    }
}

//! Shape and data-movement operations. Views (O(1), sharing storage): reshape of a
//! contiguous tensor, permute/transpose/t, unsqueeze/squeeze, broadcast_to/expand, narrow.
//! Copies: contiguous, concat, index_select, gather.

use std::sync::Arc;

use crate::autograd::{record, record_view, Op};
use crate::error::{Error, Result};
use crate::tensor::kernels::{layout, split_at_axis};
use crate::tensor::shape::{check_axis, check_broadcast_to, checked_numel, fmt_shape, numel};
use crate::tensor::storage::buffer;
use crate::tensor::{Float, Tensor};

impl<T: Float> Tensor<T> {
    /// The same elements under a new shape with the same element count: a view (O(1), shared
    /// storage) when this tensor is contiguous, otherwise a row-major copy.
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
        let make = || Op::Reshape(self.clone());
        match self.layout().reshape(shape) {
            Some(layout) => Ok(record_view(self, layout, make)),
            None => Ok(record(
                self.copy_out("reshape")?,
                shape.to_vec(),
                &[self],
                make,
            )),
        }
    }

    /// The same values laid out row-major: `self` itself when already contiguous (no copy),
    /// otherwise a copy. Kernels that need a slice call this; views never do.
    pub fn contiguous(&self) -> Result<Tensor<T>> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        let data = self.copy_out("contiguous")?;
        Ok(record(data, self.shape().to_vec(), &[self], || {
            Op::Contiguous(self.clone())
        }))
    }

    /// Reorders the axes, `out.shape[i] = self.shape[perm[i]]`: a view (O(rank), no copy).
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
        let layout = self.layout().permute(perm);
        Ok(record_view(self, layout, || {
            Op::Permute(self.clone(), perm.to_vec())
        }))
    }

    /// Swaps two axes: a view.
    pub fn transpose(&self, a: usize, b: usize) -> Result<Tensor<T>> {
        check_axis("transpose", a, self.rank())?;
        check_axis("transpose", b, self.rank())?;
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// The transpose of a 2-D tensor: a view (matrix products read it through its strides).
    pub fn t(&self) -> Result<Tensor<T>> {
        if self.rank() != 2 {
            return Err(Error::shape(
                "t",
                format!("{} is not 2-D", fmt_shape(self.shape())),
            ));
        }
        self.transpose(0, 1)
    }

    /// Inserts an axis of size 1 at `axis` (0 ≤ axis ≤ rank): a view.
    pub fn unsqueeze(&self, axis: usize) -> Result<Tensor<T>> {
        check_axis("unsqueeze", axis, self.rank() + 1)?;
        let layout = self.layout().unsqueeze(axis);
        Ok(record_view(self, layout, || Op::Reshape(self.clone())))
    }

    /// Removes an axis of size 1: a view.
    pub fn squeeze(&self, axis: usize) -> Result<Tensor<T>> {
        check_axis("squeeze", axis, self.rank())?;
        if self.shape()[axis] != 1 {
            return Err(Error::arg(
                "squeeze",
                format!(
                    "axis {axis} of {} has size {}, not 1",
                    fmt_shape(self.shape()),
                    self.shape()[axis]
                ),
            ));
        }
        let layout = self.layout().squeeze(axis);
        Ok(record_view(self, layout, || Op::Reshape(self.clone())))
    }

    /// Repeats the tensor along broadcast dimensions to `shape` (NumPy rules, one direction):
    /// a view with stride 0 along the repeated axes, so nothing is copied. Writing through it
    /// with [`update_data`](Tensor::update_data) is refused.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor<T>> {
        check_broadcast_to("broadcast_to", self.shape(), shape)?;
        checked_numel("broadcast_to", shape)?;
        let layout = self.layout().broadcast_to(shape);
        Ok(record_view(self, layout, || Op::BroadcastTo(self.clone())))
    }

    /// PyTorch's name for [`broadcast_to`](Tensor::broadcast_to): a view repeating size-1 axes.
    pub fn expand(&self, shape: &[usize]) -> Result<Tensor<T>> {
        self.broadcast_to(shape)
    }

    /// `len` elements along `axis` starting at `start`: a view.
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
        let layout = self.layout().narrow(axis, start, len);
        Ok(record_view(self, layout, || {
            Op::Narrow(self.clone(), axis, start, len)
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
        let dims: Vec<usize> = parts.iter().map(|p| p.shape()[axis]).collect();
        let mut shape = first.shape().to_vec();
        shape[axis] = dims
            .iter()
            .try_fold(0usize, |acc, &d| acc.checked_add(d))
            .ok_or_else(|| Error::shape("concat", "the joined axis overflows"))?;
        let mut data = buffer("concat", &shape)?;
        let guards = parts.iter().map(|p| p.data()).collect::<Result<Vec<_>>>()?;
        let slices: Vec<&[T]> = guards.iter().map(|g| &g[..]).collect();
        layout::concat(&slices, &dims, outer, inner, &mut data);
        drop(guards);
        Ok(record(data, shape, parts, || {
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
        let mut shape = self.shape().to_vec();
        shape[axis] = indices.len();
        let mut data = buffer("index_select", &shape)?;
        layout::index_select(&self.data()?, self.shape(), axis, indices, &mut data);
        Ok(record(data, shape, &[self], || {
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
        let rest = outer.saturating_mul(inner);
        if rest == 0 || !indices.len().is_multiple_of(rest) {
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
        let mut shape = self.shape().to_vec();
        shape[axis] = indices.len() / rest;
        let mut data = buffer("gather", &shape)?;
        layout::gather(&self.data()?, self.shape(), axis, indices, &mut data);
        Ok(record(data, shape, &[self], || {
            Op::Gather(self.clone(), axis, Arc::new(indices.to_vec()))
        }))
    }
}

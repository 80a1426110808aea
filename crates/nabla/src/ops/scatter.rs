//! The ops that backward rules are made of, beyond the forward ones: `step_mul` (the
//! derivative of relu, leaky relu, clamp and abs), `gelu_backward`, `index_add` (of `index_select` and `narrow`)
//! and `scatter_add` (of `gather` and `max`). Each is differentiable in turn, so the gradients
//! that backward computes with them can be differentiated again.

use std::sync::Arc;

use super::unary::{gelu_slope_from_tanh, gelu_tanh};
use crate::autograd::{record, Op, Step};
use crate::error::{Error, Result};
use crate::tensor::kernels::{elementwise, layout};
use crate::tensor::shape::{check_axis, fmt_shape};
use crate::tensor::storage::{buffer, filled, written};
use crate::tensor::{Float, Tensor};

/// `f(g, x)` element-wise over two same-shape tensors, read through their strides.
fn zip<T: Float>(
    g: &Tensor<T>,
    x: &Tensor<T>,
    f: impl Fn(T, T) -> T + Sync + Send,
) -> Result<Vec<T>> {
    let mut data = buffer("elementwise", g.shape())?;
    let (gs, xs) = (g.strided(), x.strided());
    elementwise::binary(
        &gs.data,
        gs.layout,
        &xs.data,
        xs.layout,
        g.shape(),
        f,
        &mut data,
    );
    Ok(data)
}

/// The shape of `g` with `len` entries along `axis`.
fn with_len(g: &[usize], axis: usize, len: usize) -> Vec<usize> {
    let mut s = g.to_vec();
    s[axis] = len;
    s
}

fn check_indices(op: &'static str, indices: &[usize], len: usize, axis: usize) -> Result<()> {
    // The largest index first (a loop that vectorises), the offending one only on failure.
    if indices.iter().fold(0, |m, &i| m.max(i)) < len {
        return Ok(());
    }
    match indices.iter().find(|&&i| i >= len) {
        Some(&bad) => Err(Error::arg(
            op,
            format!("index {bad} is out of range for an output of {len} along axis {axis}"),
        )),
        None => Ok(()),
    }
}

impl<T: Float> Tensor<T> {
    /// `self ⊙ s(x)` for a piecewise-constant `s` ([`Step`]); `self` and `x` have the same
    /// shape. This is the gradient of relu & co. (`g.step_mul(x, Step::Relu)` is relu's
    /// backward), one fused pass; its derivative with respect to `x` is zero. Where relu's,
    /// clamp's or sign's `s(x) = 0` the result is 0 even for an infinite or NaN `self` (as
    /// PyTorch's `threshold_backward`); leaky relu multiplies by its slope.
    ///
    /// ```
    /// use nabla::{autograd::Step, Tensor};
    /// let g = Tensor::<f32>::from_vec(vec![1.0, 2.0, 3.0], &[3]).unwrap();
    /// let x = Tensor::from_vec(vec![-1.0, 0.0, 5.0], &[3]).unwrap();
    /// assert_eq!(g.step_mul(&x, Step::Relu).unwrap().to_vec().unwrap(), [0.0, 0.0, 3.0]);
    /// ```
    pub fn step_mul(&self, x: &Tensor<T>, step: Step) -> Result<Tensor<T>> {
        if self.shape() != x.shape() {
            return Err(Error::shape(
                "step_mul",
                format!(
                    "{} and {} differ (no broadcasting here)",
                    fmt_shape(self.shape()),
                    fmt_shape(x.shape())
                ),
            ));
        }
        // One monomorphic, branch-free closure per step kind (a `match` inside the element
        // loop would stop vectorisation). Comparisons are written so that NaN lands on the
        // documented value. For relu, clamp and sign, where s(x) = 0 the result is 0 whatever
        // `g` is; leaky relu computes `slope·g` (NaN for a slope of 0 and an infinite `g`).
        let zero = T::ZERO;
        let data = match step {
            Step::Relu => zip(self, x, |g, x| if x <= zero { zero } else { g })?,
            Step::LeakyRelu(s) => {
                let s = T::from_f64(s);
                zip(self, x, move |g, x| if x > zero { g } else { s * g })?
            }
            Step::Clamp(lo, hi) => {
                let (lo, hi) = (T::from_f64(lo), T::from_f64(hi));
                zip(self, x, move |g, x| if x < lo || x > hi { zero } else { g })?
            }
            Step::Sign => zip(self, x, |g, x| {
                if x > zero {
                    g
                } else if x < zero {
                    -g
                } else {
                    zero
                }
            })?,
        };
        Ok(record(data, self.shape().to_vec(), &[self, x], || {
            Op::StepMul(self.clone(), x.clone(), step)
        }))
    }

    /// `self ⊙ gelu'(x)` for GELU's tanh approximation, in one pass: GELU's backward (`self`
    /// the output gradient). Differentiable in both arguments.
    ///
    /// ```
    /// use nabla::Tensor;
    /// let g = Tensor::<f64>::ones(&[1]).unwrap();
    /// let x = Tensor::from_vec(vec![0.0], &[1]).unwrap();
    /// assert_eq!(g.gelu_backward(&x).unwrap().to_vec().unwrap(), [0.5]); // gelu'(0) = ½
    /// ```
    pub fn gelu_backward(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        if self.shape() != x.shape() {
            return Err(Error::shape(
                "gelu_backward",
                format!(
                    "{} and {} differ (no broadcasting here)",
                    fmt_shape(self.shape()),
                    fmt_shape(x.shape())
                ),
            ));
        }
        let data = zip(
            self,
            x,
            #[inline(always)]
            |g, x| g * gelu_slope_from_tanh(x, gelu_tanh(x)),
        )?;
        Ok(record(data, self.shape().to_vec(), &[self, x], || {
            Op::GeluBackward(self.clone(), x.clone())
        }))
    }

    /// Zeros with `len` entries along `axis` (other axes as `self`), plus `self[.., j, ..]`
    /// added at position `indices[j]`: the adjoint of [`Tensor::index_select`]. Indices may
    /// repeat (their rows add up).
    ///
    /// ```
    /// use nabla::Tensor;
    /// let g = Tensor::<f32>::from_vec(vec![1.0, 2.0, 3.0], &[3]).unwrap();
    /// let y = g.index_add(0, &[2, 0, 2], 4).unwrap();
    /// assert_eq!(y.to_vec().unwrap(), [2.0, 0.0, 4.0, 0.0]);
    /// ```
    pub fn index_add(&self, axis: usize, indices: &[usize], len: usize) -> Result<Tensor<T>> {
        check_axis("index_add", axis, self.rank())?;
        if indices.len() != self.shape()[axis] {
            return Err(Error::shape(
                "index_add",
                format!(
                    "{} indices for {} entries along axis {axis} of {}",
                    indices.len(),
                    self.shape()[axis],
                    fmt_shape(self.shape())
                ),
            ));
        }
        check_indices("index_add", indices, len, axis)?;
        let shape = with_len(self.shape(), axis, len);
        let mut data = filled("index_add", &shape, T::ZERO)?;
        layout::index_add(&self.data()?, &shape, axis, indices, &mut data);
        Ok(record(data, shape, &[self], || {
            Op::IndexAdd(self.clone(), axis, Arc::new(indices.to_vec()), len)
        }))
    }

    /// Zeros with `len` entries along `axis` (other axes as `self`), plus each element of
    /// `self` added at its index: with the index laid out like `self`,
    /// `out[.., indices[.., j, ..], ..] += self[.., j, ..]`. The adjoint of
    /// [`Tensor::gather`].
    ///
    /// ```
    /// use nabla::Tensor;
    /// let g = Tensor::<f32>::from_vec(vec![1.0, 2.0], &[2, 1]).unwrap();
    /// let y = g.scatter_add(1, &[2, 0], 3).unwrap();
    /// assert_eq!(y.to_vec().unwrap(), [0.0, 0.0, 1.0, 2.0, 0.0, 0.0]);
    /// ```
    pub fn scatter_add(&self, axis: usize, indices: &[usize], len: usize) -> Result<Tensor<T>> {
        self.scatter_add_shared(axis, &Arc::new(indices.to_vec()), len, true)
    }

    /// [`scatter_add`](Tensor::scatter_add) with the indices shared (a backward rule passes
    /// those its `gather` recorded, not a copy of them), their range checked only where
    /// `check` is set: a `gather` checked its indices against the same length when it ran.
    pub(crate) fn scatter_add_shared(
        &self,
        axis: usize,
        indices: &Arc<Vec<usize>>,
        len: usize,
        check: bool,
    ) -> Result<Tensor<T>> {
        check_axis("scatter_add", axis, self.rank())?;
        if indices.len() != self.numel() {
            return Err(Error::shape(
                "scatter_add",
                format!(
                    "{} indices for the {} elements of {}",
                    indices.len(),
                    self.numel(),
                    fmt_shape(self.shape())
                ),
            ));
        }
        if check {
            check_indices("scatter_add", indices, len, axis)?;
        }
        let shape = with_len(self.shape(), axis, len);
        let g = self.data()?;
        // SAFETY: `layout::scatter_add` writes every element of its output.
        let data = unsafe {
            written("scatter_add", &shape, |out| {
                layout::scatter_add(&g, &shape, axis, indices, out)
            })
        }?;
        drop(g);
        Ok(record(data, shape, &[self], || {
            Op::ScatterAdd(self.clone(), axis, indices.clone(), len)
        }))
    }
}

//! Pooling and flattening, named like `torch.nn.functional`. Max pooling is a `gather` of each
//! window's arg-max (so its gradient is a `scatter_add`, and that one's a `gather`: gradients
//! of gradients come free); average pooling is a linear op ([`Op::AvgPool2d`]) whose adjoint
//! ([`Op::AvgPool2dAdjoint`]) is its gradient and the other way round.

use std::sync::Arc;

use crate::autograd::{record, Op};
use crate::error::{Error, Result};
use crate::tensor::kernels::conv::{self, Conv2dOptions, PoolOptions};
use crate::tensor::kernels::pool::{self, PoolGeom};
use crate::tensor::shape::fmt_shape;
use crate::tensor::storage::{buffer, filled, written};
use crate::tensor::{Float, Tensor};

/// The outputs of [`Tensor::conv2d_max_pool2d_raw`], not yet recorded.
pub(crate) struct ConvPooled<T> {
    /// The convolution's output data, `[n, o, oh, ow]`.
    pub conv: Vec<T>,
    /// Its shape.
    pub shape: [usize; 4],
    /// The pooled values.
    pub pooled: Vec<T>,
    /// Their arg-maxes within each plane.
    pub arg: Vec<usize>,
    /// The pooling's geometry over the convolution's output.
    pub pool: PoolGeom,
}

impl<T: Float> Tensor<T> {
    /// 2-D max pooling of `[n, c, h, w]` with windows of `kernel`, moved by `stride`, over the
    /// input padded by `padding` (at most half the kernel; padding never wins):
    /// `[n, c, oh, ow]` with `oh = (h + 2·padding − kernel) / stride + 1`. The gradient goes to
    /// the first maximum of each window (row-major), as in PyTorch.
    ///
    /// ```
    /// use nabla::Tensor;
    /// let x = Tensor::<f32>::from_vec((0..16).map(|v| v as f32).collect(), &[1, 1, 4, 4]).unwrap();
    /// let y = x.max_pool2d((2, 2), (2, 2), (0, 0)).unwrap();
    /// assert_eq!(y.to_vec().unwrap(), [5.0, 7.0, 13.0, 15.0]);
    /// ```
    pub fn max_pool2d(
        &self,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<Tensor<T>> {
        let o = PoolOptions {
            kernel,
            stride,
            padding,
        };
        let g = PoolGeom::new("max_pool2d", self.shape(), o)?;
        let s = self.shape();
        let shape = [s[0], s[1], g.oh * g.ow];
        let n = shape.iter().product();
        let mut arg: Vec<usize> = buffer("max_pool2d", &shape)?;
        let x = self.data()?;
        // SAFETY: `max_pool` writes every element of both outputs (`arg` has room for n).
        let y = unsafe {
            written("max_pool2d", &shape, |y| {
                pool::max_pool(&g, &x, y, &mut arg.spare_capacity_mut()[..n])
            })
        }?;
        drop(x);
        // SAFETY: `max_pool` wrote all n elements of `arg` above (`written` returned Ok, so it
        // ran).
        unsafe { arg.set_len(n) };
        self.record_max_pool2d(&g, y, arg)
    }

    /// The tensor of max pooling's values `y` over `self` (`[n, c, h, w]`, geometry `g`) with
    /// their arg-maxes `arg`, recorded as the op: the gather of the arg-maxes.
    pub(crate) fn record_max_pool2d(
        &self,
        g: &PoolGeom,
        y: Vec<T>,
        arg: Vec<usize>,
    ) -> Result<Tensor<T>> {
        let s = self.shape();
        let flat = self.reshape(&[s[0], s[1], g.h * g.w])?;
        let y = record(y, vec![s[0], s[1], g.oh * g.ow], &[&flat], || {
            Op::Gather(flat.clone(), 2, Arc::new(arg))
        });
        y.reshape(&[s[0], s[1], g.oh, g.ow])
    }

    /// [`conv2d`](Tensor::conv2d) of `self` and then [`max_pool2d`](Tensor::max_pool2d) of its
    /// output computed in one pass (each sample pooled right after its convolution, while its
    /// output is in cache: `kernels::conv::forward_pooled`), nothing recorded: the convolution's
    /// output and the pooled values with their arg-maxes, to be recorded as the two ops
    /// ([`record_conv2d`](Tensor::record_conv2d), then
    /// [`record_max_pool2d`](Tensor::record_max_pool2d) on the recorded output): the same
    /// values and graph as the two calls. `Ok(None)` where the one-pass kernels do not apply
    /// (or a shape is wrong: the two calls then say what is wrong).
    pub(crate) fn conv2d_max_pool2d_raw(
        &self,
        weight: &Tensor<T>,
        bias: Option<&Tensor<T>>,
        opts: Conv2dOptions,
        pool_opts: PoolOptions,
    ) -> Result<Option<ConvPooled<T>>> {
        let g = match self.conv2d_geom(weight, bias, opts) {
            Ok(g) if conv::pooled_applies::<T>(&g) => g,
            _ => return Ok(None),
        };
        let shape = g.out_shape();
        let Ok(pg) = PoolGeom::new("max_pool2d", &shape, pool_opts) else {
            return Ok(None);
        };
        let pshape = [shape[0], shape[1], pg.oh * pg.ow];
        let mut y: Vec<T> = buffer("conv2d", &shape)?;
        let mut py: Vec<T> = buffer("max_pool2d", &pshape)?;
        let mut arg: Vec<usize> = buffer("max_pool2d", &pshape)?;
        let (n, pn) = (shape.iter().product(), pshape.iter().product());
        let b = bias.map(|b| b.data()).transpose()?;
        let (x, w) = (self.data()?, weight.data()?);
        let done = conv::forward_pooled(
            &g,
            &x,
            &w,
            b.as_deref(),
            &mut y.spare_capacity_mut()[..n],
            &pg,
            &mut py.spare_capacity_mut()[..pn],
            &mut arg.spare_capacity_mut()[..pn],
        );
        if !done {
            return Ok(None);
        }
        // SAFETY: `forward_pooled` answered true: it wrote every element of the convolution's
        // output and of both pooled outputs.
        unsafe {
            y.set_len(n);
            py.set_len(pn);
            arg.set_len(pn);
        }
        Ok(Some(ConvPooled {
            conv: y,
            shape,
            pooled: py,
            arg,
            pool: pg,
        }))
    }

    /// 2-D average pooling of `[n, c, h, w]`: each window's mean, padding counted as zeros
    /// (PyTorch's default `count_include_pad = true`).
    ///
    /// ```
    /// use nabla::Tensor;
    /// let x = Tensor::<f32>::from_vec((0..16).map(|v| v as f32).collect(), &[1, 1, 4, 4]).unwrap();
    /// let y = x.avg_pool2d((2, 2), (2, 2), (0, 0)).unwrap();
    /// assert_eq!(y.to_vec().unwrap(), [2.5, 4.5, 10.5, 12.5]);
    /// ```
    pub fn avg_pool2d(
        &self,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<Tensor<T>> {
        self.avg_pool2d_raw(PoolOptions {
            kernel,
            stride,
            padding,
        })
    }

    /// Average pooling to a fixed output size, as `adaptive_avg_pool2d`: `(1, 1)` is global
    /// average pooling; other sizes must divide the input's height and width (then the windows
    /// are disjoint and equal).
    pub fn adaptive_avg_pool2d(&self, (oh, ow): (usize, usize)) -> Result<Tensor<T>> {
        let s = self.shape();
        if s.len() != 4 {
            return Err(Error::shape(
                "adaptive_avg_pool2d",
                format!("expected a 4-D input [n, c, h, w], got {}", fmt_shape(s)),
            ));
        }
        if (oh, ow) == (1, 1) {
            return self.mean(&[2, 3], true);
        }
        if oh == 0 || ow == 0 || !s[2].is_multiple_of(oh) || !s[3].is_multiple_of(ow) {
            return Err(Error::arg(
                "adaptive_avg_pool2d",
                format!(
                    "output size ({oh}, {ow}) must divide the input's {}×{} (other sizes, with \
                     overlapping windows, are not supported yet)",
                    s[2], s[3]
                ),
            ));
        }
        let k = (s[2] / oh, s[3] / ow);
        self.avg_pool2d(k, k, (0, 0))
    }

    /// Average pooling with its options, recorded as one op.
    pub(crate) fn avg_pool2d_raw(&self, o: PoolOptions) -> Result<Tensor<T>> {
        let g = PoolGeom::new("avg_pool2d", self.shape(), o)?;
        let s = self.shape();
        let shape = [s[0], s[1], g.oh, g.ow];
        let mut y = filled("avg_pool2d", &shape, T::ZERO)?;
        pool::avg_pool(&g, &self.data()?, &mut y);
        Ok(record(y, shape.to_vec(), &[self], || {
            Op::AvgPool2d(self.clone(), o)
        }))
    }

    /// The adjoint (and gradient) of average pooling: `self` `[n, c, oh, ow]` spread over the
    /// windows of an `h × w` input.
    pub(crate) fn avg_pool2d_adjoint(
        &self,
        o: PoolOptions,
        (h, w): (usize, usize),
    ) -> Result<Tensor<T>> {
        let s = self.shape();
        if s.len() != 4 {
            return Err(Error::shape(
                "avg_pool2d_adjoint",
                format!("expected a 4-D gradient, got {}", fmt_shape(s)),
            ));
        }
        let x = [s[0], s[1], h, w];
        let g = PoolGeom::new("avg_pool2d_adjoint", &x, o)?;
        if [g.oh, g.ow] != s[2..] {
            return Err(Error::shape(
                "avg_pool2d_adjoint",
                format!(
                    "gradient {} does not match the pooling's output {}×{}",
                    fmt_shape(s),
                    g.oh,
                    g.ow
                ),
            ));
        }
        let mut dx = filled("avg_pool2d_adjoint", &x, T::ZERO)?;
        pool::avg_pool_adjoint(&g, &self.data()?, &mut dx);
        Ok(record(dx, x.to_vec(), &[self], || {
            Op::AvgPool2dAdjoint(self.clone(), o, (h, w))
        }))
    }

    /// The axes from `start_dim` on merged into one, as `torch.flatten(x, start_dim)`:
    /// `[n, c, h, w].flatten(1)` is `[n, c·h·w]` (a view when contiguous).
    pub fn flatten(&self, start_dim: usize) -> Result<Tensor<T>> {
        let s = self.shape();
        if start_dim >= s.len().max(1) {
            return Err(Error::arg(
                "flatten",
                format!("start_dim {start_dim} is out of range for {}", fmt_shape(s)),
            ));
        }
        if s.is_empty() {
            return self.reshape(&[1]);
        }
        let mut shape = s[..start_dim].to_vec();
        shape.push(s[start_dim..].iter().product());
        self.reshape(&shape)
    }
}

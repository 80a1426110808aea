//! Convolutions, named and laid out like `torch.nn.functional` (NCHW / NCL, weights
//! `[out, in/groups, kh, kw]`). A convolution records one [`Op::Conv2d`]; its two gradients are
//! the ops [`Op::Conv2dInput`] and [`Op::Conv2dWeight`], whose own gradients are convolutions
//! again, so the three close under differentiation (gradients of gradients work). The kernels
//! lower each to matrix products (`tensor/kernels/conv.rs`).

use crate::autograd::{record, Op};
use crate::error::{Error, Result};
use crate::tensor::kernels::conv::{self, Conv2dOptions, ConvGeom};
use crate::tensor::shape::fmt_shape;
use crate::tensor::storage::{filled, written};
use crate::tensor::{Float, Tensor};

/// Options of a 1-D convolution, as `torch.nn.functional.conv1d` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Conv1dOptions {
    /// Step between output positions.
    pub stride: usize,
    /// Zeros added on both ends of the input.
    pub padding: usize,
    /// Spacing between kernel taps.
    pub dilation: usize,
    /// Channel groups.
    pub groups: usize,
}

impl Default for Conv1dOptions {
    fn default() -> Self {
        Conv1dOptions {
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
        }
    }
}

impl<T: Float> Tensor<T> {
    /// 2-D convolution (cross-correlation, as in PyTorch) of `self` `[n, c, h, w]` with
    /// `weight` `[o, c/groups, kh, kw]`, plus `bias` `[o]` if given: `[n, o, oh, ow]` with
    /// `oh = (h + 2·padding − dilation·(kh − 1) − 1) / stride + 1` (likewise `ow`).
    ///
    /// ```
    /// use nabla::{ops::Conv2dOptions, Tensor};
    /// let x = Tensor::<f32>::ones(&[1, 1, 4, 4]).unwrap();
    /// let w = Tensor::ones(&[2, 1, 3, 3]).unwrap();
    /// let opts = Conv2dOptions { padding: (1, 1), ..Default::default() };
    /// let y = x.conv2d(&w, None, opts).unwrap();
    /// assert_eq!(y.shape(), &[1, 2, 4, 4]);
    /// assert_eq!(y.to_vec().unwrap()[..4], [4.0, 6.0, 6.0, 4.0]); // corners see 4 ones
    /// ```
    pub fn conv2d(
        &self,
        weight: &Tensor<T>,
        bias: Option<&Tensor<T>>,
        opts: Conv2dOptions,
    ) -> Result<Tensor<T>> {
        let g = self.conv2d_geom(weight, bias, opts)?;
        let shape = g.out_shape();
        let b = bias.map(|b| b.data()).transpose()?;
        let (x, w) = (self.data()?, weight.data()?);
        // SAFETY: `conv::forward` writes every element of its output.
        let y = unsafe {
            written("conv2d", &shape, |y| {
                conv::forward(&g, &x, &w, b.as_deref(), y)
            })
        }?;
        drop((x, w, b));
        Ok(self.record_conv2d(weight, bias, opts, y, &shape))
    }

    /// The checked geometry of [`conv2d`](Tensor::conv2d) (the bias's shape included).
    pub(crate) fn conv2d_geom(
        &self,
        weight: &Tensor<T>,
        bias: Option<&Tensor<T>>,
        opts: Conv2dOptions,
    ) -> Result<ConvGeom> {
        let g = ConvGeom::new("conv2d", self.shape(), weight.shape(), opts)?;
        if let Some(b) = bias {
            if b.shape() != [g.o] {
                return Err(Error::shape(
                    "conv2d",
                    format!(
                        "bias {} does not match the weight's {} output channels (weight {})",
                        fmt_shape(b.shape()),
                        g.o,
                        fmt_shape(weight.shape())
                    ),
                ));
            }
        }
        Ok(g)
    }

    /// The tensor of [`conv2d`](Tensor::conv2d)'s output data `y` (of `shape`), recorded as
    /// that op.
    pub(crate) fn record_conv2d(
        &self,
        weight: &Tensor<T>,
        bias: Option<&Tensor<T>>,
        opts: Conv2dOptions,
        y: Vec<T>,
        shape: &[usize],
    ) -> Tensor<T> {
        let inputs: Vec<&Tensor<T>> = [Some(self), Some(weight), bias]
            .into_iter()
            .flatten()
            .collect();
        record(y, shape.to_vec(), &inputs, || {
            Op::Conv2d(self.clone(), weight.clone(), bias.cloned(), opts)
        })
    }

    /// 1-D convolution of `self` `[n, c, l]` with `weight` `[o, c/groups, k]` (plus `bias`
    /// `[o]`): a 2-D convolution of height 1.
    pub fn conv1d(
        &self,
        weight: &Tensor<T>,
        bias: Option<&Tensor<T>>,
        opts: Conv1dOptions,
    ) -> Result<Tensor<T>> {
        let (x, w) = (self.shape(), weight.shape());
        if x.len() != 3 || w.len() != 3 {
            return Err(Error::shape(
                "conv1d",
                format!(
                    "input {} and weight {}: expected a 3-D input [n, c, l] and a 3-D weight [out, in/groups, k]",
                    fmt_shape(x),
                    fmt_shape(w)
                ),
            ));
        }
        let o2 = Conv2dOptions {
            stride: (1, opts.stride),
            padding: (0, opts.padding),
            dilation: (1, opts.dilation),
            groups: opts.groups,
        };
        let y = self
            .reshape(&[x[0], x[1], 1, x[2]])?
            .conv2d(&weight.reshape(&[w[0], w[1], 1, w[2]])?, bias, o2)
            .map_err(|e| match e {
                Error::Shape { msg, .. } => Error::shape("conv1d", msg),
                Error::Argument { msg, .. } => Error::arg("conv1d", msg),
                other => other,
            })?;
        let s = y.shape().to_vec();
        y.reshape(&[s[0], s[1], s[3]])
    }

    /// The gradient of [`conv2d`](Tensor::conv2d) in its input, for an output gradient `self`
    /// `[n, o, oh, ow]`, the weight, and the input's height and width: `[n, c, h, w]`.
    pub(crate) fn conv2d_input(
        &self,
        weight: &Tensor<T>,
        opts: Conv2dOptions,
        (h, w): (usize, usize),
    ) -> Result<Tensor<T>> {
        let (gs, ws) = (self.shape(), weight.shape());
        if gs.len() != 4 || ws.len() != 4 {
            return Err(Error::shape(
                "conv2d_input",
                format!(
                    "gradient {} and weight {} must be 4-D",
                    fmt_shape(gs),
                    fmt_shape(ws)
                ),
            ));
        }
        let x = [gs[0], ws[1] * opts.groups, h, w];
        let g = ConvGeom::new("conv2d_input", &x, ws, opts)?;
        check_out("conv2d_input", &g, gs)?;
        let (gy, wd) = (self.data()?, weight.data()?);
        // SAFETY: `conv::input_grad` writes every element of its output.
        let dx = unsafe { written("conv2d_input", &x, |dx| conv::input_grad(&g, &gy, &wd, dx)) }?;
        drop((gy, wd));
        Ok(record(dx, x.to_vec(), &[self, weight], || {
            Op::Conv2dInput(self.clone(), weight.clone(), opts, (h, w))
        }))
    }

    /// The gradient of [`conv2d`](Tensor::conv2d) in its weight, for the input `self`, the
    /// output gradient `gy` `[n, o, oh, ow]` and the kernel size: `[o, c/groups, kh, kw]`.
    pub(crate) fn conv2d_weight(
        &self,
        gy: &Tensor<T>,
        opts: Conv2dOptions,
        (kh, kw): (usize, usize),
    ) -> Result<Tensor<T>> {
        let (xs, gs) = (self.shape(), gy.shape());
        if xs.len() != 4 || gs.len() != 4 || opts.groups == 0 {
            return Err(Error::shape(
                "conv2d_weight",
                format!(
                    "input {} and gradient {} must be 4-D",
                    fmt_shape(xs),
                    fmt_shape(gs)
                ),
            ));
        }
        let ws = [gs[1], xs[1] / opts.groups, kh, kw];
        let g = ConvGeom::new("conv2d_weight", xs, &ws, opts)?;
        check_out("conv2d_weight", &g, gs)?;
        let mut dw = filled("conv2d_weight", &ws, T::ZERO)?;
        conv::weight_grad(&g, &self.data()?, &gy.data()?, &mut dw);
        Ok(record(dw, ws.to_vec(), &[self, gy], || {
            Op::Conv2dWeight(self.clone(), gy.clone(), opts, (kh, kw))
        }))
    }
}

/// The output gradient's shape must be the convolution's output shape.
fn check_out(op: &'static str, g: &ConvGeom, gs: &[usize]) -> Result<()> {
    if gs != g.out_shape() {
        return Err(Error::shape(
            op,
            format!(
                "gradient {} does not match the convolution's output {}",
                fmt_shape(gs),
                fmt_shape(&g.out_shape())
            ),
        ));
    }
    Ok(())
}

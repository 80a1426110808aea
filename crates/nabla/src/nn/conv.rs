//! The 2-D convolution layer.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::nn::{Init, Module, SharedForward};
use crate::ops::Conv2dOptions;
use crate::rng::Rng;
use crate::tensor::shape::fmt_shape;
use crate::tensor::{Float, Tensor};

/// A 2-D convolution over `[n, c, h, w]` inputs, as `torch.nn.Conv2d`: `weight`
/// `[out, in/groups, kh, kw]` and `bias` `[out]`, under PyTorch's names.
///
/// ```
/// use nabla::nn::{Conv2d, Init, Module};
/// use nabla::ops::Conv2dOptions;
/// use nabla::{Rng, Tensor};
/// let opts = Conv2dOptions { padding: (1, 1), ..Default::default() };
/// let conv = Conv2d::<f32>::new(1, 8, (3, 3), opts, true, Init::KaimingUniform, &mut Rng::new(0)).unwrap();
/// let y = conv.forward(&Tensor::zeros(&[2, 1, 28, 28]).unwrap()).unwrap();
/// assert_eq!(y.shape(), &[2, 8, 28, 28]);
/// assert_eq!(conv.named_parameters()[0].0, "weight");
/// ```
pub struct Conv2d<T: Float = f32> {
    /// `[out, in/groups, kh, kw]`.
    pub weight: Tensor<T>,
    /// `[out]`, if the layer has a bias.
    pub bias: Option<Tensor<T>>,
    /// Stride, padding, dilation, groups.
    pub opts: Conv2dOptions,
}

impl<T: Float> Conv2d<T> {
    /// A layer with weights drawn by `init` (fan-in `in/groups · kh · kw`, fan-out
    /// `out/groups · kh · kw`) and a zero bias (if `bias`). Channels not divisible by the
    /// groups, an empty kernel or a zero stride are an `Err`.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: (usize, usize),
        opts: Conv2dOptions,
        bias: bool,
        init: Init,
        rng: &mut Rng,
    ) -> Result<Self> {
        let g = opts.groups;
        if g == 0
            || !in_channels.is_multiple_of(g)
            || !out_channels.is_multiple_of(g)
            || kernel.0 == 0
            || kernel.1 == 0
        {
            return Err(Error::arg(
                "Conv2d",
                format!(
                    "{in_channels} → {out_channels} channels, kernel {kernel:?}, groups {g}: \
                     channels must be divisible by a positive number of groups and the kernel \
                     non-empty"
                ),
            ));
        }
        let taps = kernel.0 * kernel.1;
        let (fan_in, fan_out) = (in_channels / g * taps, out_channels / g * taps);
        let shape = [out_channels, in_channels / g, kernel.0, kernel.1];
        let weight = init
            .tensor::<T>(&shape, fan_in, fan_out, rng)?
            .requires_grad();
        let bias = if bias {
            Some(Tensor::zeros(&[out_channels])?.requires_grad())
        } else {
            None
        };
        let layer = Conv2d { weight, bias, opts };
        layer.check_options()?;
        Ok(layer)
    }

    /// A layer from existing tensors (`weight` `[out, in/groups, kh, kw]`, `bias` `[out]`).
    pub fn from_tensors(
        weight: Tensor<T>,
        bias: Option<Tensor<T>>,
        opts: Conv2dOptions,
    ) -> Result<Self> {
        let w = weight.shape();
        let ok = w.len() == 4 && bias.as_ref().is_none_or(|b| b.shape() == [w[0]]);
        if !ok {
            return Err(Error::shape(
                "Conv2d",
                format!(
                    "weight {} and bias {} do not form a layer (need [out, in/groups, kh, kw] and [out])",
                    fmt_shape(w),
                    bias.as_ref().map_or("none".into(), |b| fmt_shape(b.shape()))
                ),
            ));
        }
        let layer = Conv2d {
            weight: weight.requires_grad(),
            bias: bias.map(|b| b.requires_grad()),
            opts,
        };
        layer.check_options()?;
        Ok(layer)
    }

    fn check_options(&self) -> Result<()> {
        let o = self.opts;
        if o.stride.0 == 0
            || o.stride.1 == 0
            || o.dilation.0 == 0
            || o.dilation.1 == 0
            || o.groups == 0
        {
            return Err(Error::arg(
                "Conv2d",
                format!(
                    "stride {:?}, dilation {:?} and groups {} must be positive",
                    o.stride, o.dilation, o.groups
                ),
            ));
        }
        Ok(())
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.weight.shape()[1] * self.opts.groups
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.weight.shape()[0]
    }

    /// Kernel height and width.
    pub fn kernel(&self) -> (usize, usize) {
        (self.weight.shape()[2], self.weight.shape()[3])
    }
}

impl<T: Float> Module<T> for Conv2d<T> {
    fn forward(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        x.conv2d(&self.weight, self.bias.as_ref(), self.opts)
            .map_err(|e| match e {
                Error::Shape { msg, .. } => {
                    Error::shape("Conv2d", format!("{}: {msg}", self.describe()))
                }
                other => other,
            })
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor<T>)> {
        let mut v = vec![("weight".to_string(), self.weight.clone())];
        if let Some(b) = &self.bias {
            v.push(("bias".to_string(), b.clone()));
        }
        v
    }

    fn describe(&self) -> String {
        let (k, o) = (self.kernel(), self.opts);
        let mut s = format!(
            "Conv2d({} → {}, {}×{}",
            self.in_channels(),
            self.out_channels(),
            k.0,
            k.1
        );
        if o.stride != (1, 1) {
            s += &format!(", stride {:?}", o.stride);
        }
        if o.padding != (0, 0) {
            s += &format!(", padding {:?}", o.padding);
        }
        if o.dilation != (1, 1) {
            s += &format!(", dilation {:?}", o.dilation);
        }
        if o.groups != 1 {
            s += &format!(", groups {}", o.groups);
        }
        s + ")"
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let g = crate::tensor::kernels::conv::ConvGeom::new(
            "Conv2d",
            input,
            self.weight.shape(),
            self.opts,
        )
        .map_err(|e| match e {
            Error::Shape { msg, .. } => {
                Error::shape("Conv2d", format!("{}: {msg}", self.describe()))
            }
            other => other,
        })?;
        Ok(g.out_shape().to_vec())
    }

    fn shared_forward(&self) -> Option<SharedForward<T>> {
        let me = Conv2d {
            weight: self.weight.clone(),
            bias: self.bias.clone(),
            opts: self.opts,
        };
        Some(Arc::new(move |x| me.forward(x)))
    }
}

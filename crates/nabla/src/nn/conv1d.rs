//! The 1-D convolution layer.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::nn::{Init, Module, SharedForward};
use crate::ops::Conv1dOptions;
use crate::rng::Rng;
use crate::tensor::{Float, Tensor};

/// A 1-D convolution over `[n, c, l]` inputs, as `torch.nn.Conv1d`: `weight`
/// `[out, in/groups, k]` and `bias` `[out]`, under PyTorch's names.
///
/// ```
/// use nabla::nn::{Conv1d, Init, Module};
/// use nabla::ops::Conv1dOptions;
/// use nabla::{Rng, Tensor};
/// let opts = Conv1dOptions { padding: 2, ..Default::default() };
/// let conv = Conv1d::<f32>::new(3, 8, 5, opts, true, Init::KaimingUniform, &mut Rng::new(0)).unwrap();
/// let y = conv.forward(&Tensor::zeros(&[2, 3, 40]).unwrap()).unwrap();
/// assert_eq!(y.shape(), &[2, 8, 40]);
/// ```
pub struct Conv1d<T: Float = f32> {
    /// `[out, in/groups, k]`.
    pub weight: Tensor<T>,
    /// `[out]`, if the layer has a bias.
    pub bias: Option<Tensor<T>>,
    /// Stride, padding, dilation, groups.
    pub opts: Conv1dOptions,
}

impl<T: Float> Conv1d<T> {
    /// A layer with weights drawn by `init` (fan-in `in/groups · k`, fan-out
    /// `out/groups · k`) and a zero bias (if `bias`). Channels not divisible by the groups, an
    /// empty kernel or a zero stride or dilation are an `Err`.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        opts: Conv1dOptions,
        bias: bool,
        init: Init,
        rng: &mut Rng,
    ) -> Result<Self> {
        let g = opts.groups;
        if g == 0
            || kernel == 0
            || opts.stride == 0
            || opts.dilation == 0
            || !in_channels.is_multiple_of(g)
            || !out_channels.is_multiple_of(g)
        {
            return Err(Error::arg(
                "Conv1d",
                format!(
                    "{in_channels} → {out_channels} channels, kernel {kernel}, {opts:?}: channels \
                     must be divisible by a positive number of groups; kernel, stride and \
                     dilation positive"
                ),
            ));
        }
        let shape = [out_channels, in_channels / g, kernel];
        let weight = init
            .tensor::<T>(
                &shape,
                in_channels / g * kernel,
                out_channels / g * kernel,
                rng,
            )?
            .requires_grad();
        let bias = if bias {
            Some(Tensor::zeros(&[out_channels])?.requires_grad())
        } else {
            None
        };
        Ok(Conv1d { weight, bias, opts })
    }
}

impl<T: Float> Module<T> for Conv1d<T> {
    fn forward(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        x.conv1d(&self.weight, self.bias.as_ref(), self.opts)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor<T>)> {
        let mut v = vec![("weight".to_string(), self.weight.clone())];
        if let Some(b) = &self.bias {
            v.push(("bias".to_string(), b.clone()));
        }
        v
    }

    fn describe(&self) -> String {
        let w = self.weight.shape();
        let o = self.opts;
        format!(
            "Conv1d({} → {}, {}, stride {}, padding {})",
            w[1] * o.groups,
            w[0],
            w[2],
            o.stride,
            o.padding
        )
    }

    fn shared_forward(&self) -> Option<SharedForward<T>> {
        let me = Conv1d {
            weight: self.weight.clone(),
            bias: self.bias.clone(),
            opts: self.opts,
        };
        Some(Arc::new(move |x| me.forward(x)))
    }
}

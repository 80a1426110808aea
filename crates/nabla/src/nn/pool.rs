//! Pooling and flattening layers (no parameters).

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::nn::{Module, SharedForward};
use crate::ops::PoolOptions;
use crate::tensor::kernels::pool::PoolGeom;
use crate::tensor::shape::fmt_shape;
use crate::tensor::{Float, Tensor};

/// 2-D max pooling, as `torch.nn.MaxPool2d` (stride defaults to the kernel).
///
/// ```
/// use nabla::nn::{MaxPool2d, Module};
/// use nabla::Tensor;
/// let y = MaxPool2d::new((2, 2)).forward(&Tensor::<f32>::zeros(&[1, 3, 28, 28]).unwrap()).unwrap();
/// assert_eq!(y.shape(), &[1, 3, 14, 14]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2d {
    /// Window, stride and padding.
    pub opts: PoolOptions,
}

/// 2-D average pooling (padding counted as zeros), as `torch.nn.AvgPool2d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvgPool2d {
    /// Window, stride and padding.
    pub opts: PoolOptions,
}

macro_rules! pool_layer {
    ($ty:ident, $name:literal, $method:ident) => {
        impl $ty {
            /// Windows of `kernel`, stride `kernel`, no padding.
            pub fn new(kernel: (usize, usize)) -> Self {
                Self::with(kernel, kernel, (0, 0))
            }

            /// Windows of `kernel` moved by `stride` over the input padded by `padding`.
            pub fn with(
                kernel: (usize, usize),
                stride: (usize, usize),
                padding: (usize, usize),
            ) -> Self {
                $ty {
                    opts: PoolOptions {
                        kernel,
                        stride,
                        padding,
                    },
                }
            }
        }

        impl<T: Float> Module<T> for $ty {
            fn forward(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
                let o = self.opts;
                x.$method(o.kernel, o.stride, o.padding)
            }

            fn describe(&self) -> String {
                let o = self.opts;
                let mut s = format!(concat!($name, "({}×{}"), o.kernel.0, o.kernel.1);
                if o.stride != o.kernel {
                    s += &format!(", stride {:?}", o.stride);
                }
                if o.padding != (0, 0) {
                    s += &format!(", padding {:?}", o.padding);
                }
                s + ")"
            }

            fn as_any(&self) -> Option<&dyn std::any::Any> {
                Some(self)
            }

            fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
                let g = PoolGeom::new($name, input, self.opts)?;
                Ok(vec![input[0], input[1], g.oh, g.ow])
            }

            fn shared_forward(&self) -> Option<SharedForward<T>> {
                let me = *self;
                Some(Arc::new(move |x| me.forward(x)))
            }
        }
    };
}

pool_layer!(MaxPool2d, "MaxPool2d", max_pool2d);
pool_layer!(AvgPool2d, "AvgPool2d", avg_pool2d);

/// Merges the axes from `start_dim` (default 1) on, as `torch.nn.Flatten`: `[n, c, h, w]` →
/// `[n, c·h·w]`, between convolutions and linear layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flatten {
    /// The first axis merged.
    pub start_dim: usize,
}

impl Default for Flatten {
    fn default() -> Self {
        Flatten { start_dim: 1 }
    }
}

impl Flatten {
    /// Flattens from axis 1 (keeping the batch axis).
    pub fn new() -> Self {
        Self::default()
    }
}

impl<T: Float> Module<T> for Flatten {
    fn forward(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        x.flatten(self.start_dim)
    }

    fn describe(&self) -> String {
        if self.start_dim == 1 {
            "Flatten".into()
        } else {
            format!("Flatten(from {})", self.start_dim)
        }
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        if self.start_dim >= input.len() {
            return Err(Error::shape(
                "Flatten",
                format!(
                    "start_dim {} is out of range for input {}",
                    self.start_dim,
                    fmt_shape(input)
                ),
            ));
        }
        let mut s = input[..self.start_dim].to_vec();
        s.push(input[self.start_dim..].iter().product());
        Ok(s)
    }

    fn shared_forward(&self) -> Option<SharedForward<T>> {
        let me = *self;
        Some(Arc::new(move |x| me.forward(x)))
    }
}

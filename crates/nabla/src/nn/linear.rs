//! The linear (fully connected) layer `O = X·W + b`.

use crate::error::{Error, Result};
use std::sync::Arc;

use crate::nn::{Init, Module, SharedForward};
use crate::rng::Rng;
use crate::tensor::shape::fmt_shape;
use crate::tensor::{Float, Tensor};

/// `O = X·W + b` with `W` stored as `[in_features, out_features]` (one weight per
/// input→output connection, the math of the model) and `b` as `[out_features]`.
///
/// Input `[n, in]` (or `[batch, n, in]`) gives output `[n, out]`. PyTorch stores the transpose;
/// a checkpoint keeps nabla's layout under the same names.
pub struct Linear<T: Float = f32> {
    /// `[in_features, out_features]`.
    pub weight: Tensor<T>,
    /// `[out_features]`, if the layer has a bias.
    pub bias: Option<Tensor<T>>,
}

impl<T: Float> Linear<T> {
    /// A layer with weights drawn by `init` from `rng` and a zero bias (if `bias`). A size
    /// that overflows or cannot be allocated is an `Err` naming the shape.
    pub fn new(
        in_features: usize,
        out_features: usize,
        bias: bool,
        init: Init,
        rng: &mut Rng,
    ) -> Result<Self> {
        let weight = init.weight(in_features, out_features, rng)?.requires_grad();
        let bias = if bias {
            Some(Tensor::zeros(&[out_features])?.requires_grad())
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// A layer from existing tensors (`weight` `[in, out]`, `bias` `[out]`).
    pub fn from_tensors(weight: Tensor<T>, bias: Option<Tensor<T>>) -> Result<Self> {
        let ok = weight.rank() == 2
            && bias
                .as_ref()
                .is_none_or(|b| b.shape() == [weight.shape()[1]]);
        if !ok {
            return Err(Error::shape(
                "Linear",
                format!(
                    "weight {} and bias {} do not form a layer (need [in, out] and [out])",
                    fmt_shape(weight.shape()),
                    bias.as_ref()
                        .map_or("none".into(), |b| fmt_shape(b.shape()))
                ),
            ));
        }
        Ok(Linear {
            weight: weight.requires_grad(),
            bias: bias.map(|b| b.requires_grad()),
        })
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.weight.shape()[0]
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight.shape()[1]
    }
}

impl<T: Float> Module<T> for Linear<T> {
    fn forward(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        self.output_shape(x.shape())?;
        match &self.bias {
            Some(b) if x.rank() == 2 => x.linear(&self.weight, b),
            Some(b) => x.matmul(&self.weight)?.add(b),
            None => x.matmul(&self.weight),
        }
    }
    fn forward_cached(
        &self,
        x: &Tensor<T>,
        _cache: &mut crate::nn::KvCache<T>,
    ) -> Result<Tensor<T>> {
        self.forward(x)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor<T>)> {
        let mut v = vec![("weight".to_string(), self.weight.clone())];
        if let Some(b) = &self.bias {
            v.push(("bias".to_string(), b.clone()));
        }
        v
    }

    fn describe(&self) -> String {
        format!("Linear({} → {})", self.in_features(), self.out_features())
    }

    fn shared_forward(&self) -> Option<SharedForward<T>> {
        let me = Linear {
            weight: self.weight.clone(),
            bias: self.bias.clone(),
        };
        Some(Arc::new(move |x| me.forward(x)))
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match input.split_last() {
            Some((&last, lead)) if last == self.in_features() && (1..=2).contains(&lead.len()) => {
                Ok([lead, &[self.out_features()]].concat())
            }
            _ => Err(Error::shape(
                "Linear",
                format!(
                    "{}: input {} must be [n, {}] or [batch, n, {}]",
                    self.describe(),
                    fmt_shape(input),
                    self.in_features(),
                    self.in_features()
                ),
            )),
        }
    }
}

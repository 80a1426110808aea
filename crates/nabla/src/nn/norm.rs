//! Batch normalisation layers, with running statistics as buffers.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::nn::{Module, SharedForward};
use crate::tensor::shape::fmt_shape;
use crate::tensor::{Float, Tensor};

/// What [`BatchNorm1d`] and [`BatchNorm2d`] share: affine parameters `weight` (1) and `bias`
/// (0), buffers `running_mean` (0), `running_var` (1) and `num_batches_tracked`, PyTorch's
/// defaults (momentum 0.1, eps 1e-5).
struct Norm<T: Float> {
    weight: Option<Tensor<T>>,
    bias: Option<Tensor<T>>,
    running_mean: Tensor<T>,
    running_var: Tensor<T>,
    num_batches_tracked: Tensor<T>,
    momentum: f64,
    eps: f64,
    training: bool,
}

impl<T: Float> Norm<T> {
    fn new(op: &'static str, features: usize, affine: bool) -> Result<Self> {
        if features == 0 {
            return Err(Error::arg(op, "needs at least one feature (channel)"));
        }
        let affine_param = |v: f64| -> Result<Option<Tensor<T>>> {
            affine
                .then(|| Tensor::full(&[features], T::from_f64(v)).map(Tensor::requires_grad))
                .transpose()
        };
        Ok(Norm {
            weight: affine_param(1.0)?,
            bias: affine_param(0.0)?,
            running_mean: Tensor::zeros(&[features])?,
            running_var: Tensor::ones(&[features])?,
            num_batches_tracked: Tensor::zeros(&[])?,
            momentum: 0.1,
            eps: 1e-5,
            training: true,
        })
    }

    fn features(&self) -> usize {
        self.running_mean.shape()[0]
    }

    fn shared(&self) -> Norm<T> {
        Norm {
            weight: self.weight.clone(),
            bias: self.bias.clone(),
            running_mean: self.running_mean.clone(),
            running_var: self.running_var.clone(),
            num_batches_tracked: self.num_batches_tracked.clone(),
            ..*self
        }
    }

    fn forward(&self, op: &'static str, ranks: &[usize], x: &Tensor<T>) -> Result<Tensor<T>> {
        let s = x.shape();
        if !ranks.contains(&s.len()) || s[1] != self.features() {
            let want = if ranks == [4] {
                "[n, c, h, w]"
            } else {
                "[n, c] or [n, c, l]"
            };
            return Err(Error::shape(
                op,
                format!(
                    "input {} must be {want} with c = {} features",
                    fmt_shape(s),
                    self.features()
                ),
            ));
        }
        // In training, checkpoint recomputation replays the forward pass; the running
        // statistics must move once per step, so a replay leaves them alone.
        let track = self.training && !crate::autograd::is_replaying();
        let running = !self.training || track;
        let y = x.batch_norm(
            running.then_some(&self.running_mean),
            running.then_some(&self.running_var),
            self.weight.as_ref(),
            self.bias.as_ref(),
            self.training,
            self.momentum,
            self.eps,
        )?;
        if track {
            self.num_batches_tracked.update_data(|d| d[0] += T::ONE)?;
        }
        Ok(y)
    }

    fn params(&self) -> Vec<(String, Tensor<T>)> {
        let mut v = Vec::new();
        if let Some(w) = &self.weight {
            v.push(("weight".to_string(), w.clone()));
        }
        if let Some(b) = &self.bias {
            v.push(("bias".to_string(), b.clone()));
        }
        v
    }

    fn buffers(&self) -> Vec<(String, Tensor<T>)> {
        vec![
            ("running_mean".to_string(), self.running_mean.clone()),
            ("running_var".to_string(), self.running_var.clone()),
            (
                "num_batches_tracked".to_string(),
                self.num_batches_tracked.clone(),
            ),
        ]
    }
}

macro_rules! norm_layer {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $ranks:expr) => {
        $(#[$doc])*
        pub struct $ty<T: Float = f32>(Norm<T>);

        impl<T: Float> $ty<T> {
            /// Normalisation of `features` channels with a learned scale and shift, in
            /// training mode.
            pub fn new(features: usize) -> Result<Self> {
                Norm::new($name, features, true).map($ty)
            }

            /// Without the learned scale and shift (`affine = false`).
            pub fn without_affine(features: usize) -> Result<Self> {
                Norm::new($name, features, false).map($ty)
            }

            /// Sets the momentum of the running statistics (PyTorch's default 0.1) and `eps`
            /// (1e-5).
            pub fn with_momentum_eps(mut self, momentum: f64, eps: f64) -> Result<Self> {
                if !(0.0..=1.0).contains(&momentum) || !(eps >= 0.0 && eps.is_finite()) {
                    return Err(Error::arg(
                        $name,
                        format!("momentum {momentum} must be in [0, 1] and eps {eps} finite and ≥ 0"),
                    ));
                }
                (self.0.momentum, self.0.eps) = (momentum, eps);
                Ok(self)
            }

            /// The number of channels.
            pub fn features(&self) -> usize {
                self.0.features()
            }
        }

        impl<T: Float> Module<T> for $ty<T> {
            fn forward(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
                self.0.forward($name, &$ranks, x)
            }
            fn named_parameters(&self) -> Vec<(String, Tensor<T>)> {
                self.0.params()
            }
            fn named_buffers(&self) -> Vec<(String, Tensor<T>)> {
                self.0.buffers()
            }
            fn set_training(&mut self, training: bool) {
                self.0.training = training;
            }
            fn describe(&self) -> String {
                format!(concat!($name, "({})"), self.features())
            }
            fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
                if !$ranks.contains(&input.len()) || input[1] != self.features() {
                    return Err(Error::shape(
                        $name,
                        format!("input {} does not have {} features on axis 1", fmt_shape(input), self.features()),
                    ));
                }
                Ok(input.to_vec())
            }
            fn shared_forward(&self) -> Option<SharedForward<T>> {
                let me = $ty(self.0.shared());
                Some(Arc::new(move |x| me.forward(x)))
            }
        }
    };
}

norm_layer!(
    /// Batch normalisation of `[n, c]` or `[n, c, l]` inputs per feature, as
    /// `torch.nn.BatchNorm1d`.
    BatchNorm1d,
    "BatchNorm1d",
    [2, 3]
);
norm_layer!(
    /// Batch normalisation of `[n, c, h, w]` inputs per channel, as `torch.nn.BatchNorm2d`.
    ///
    /// ```
    /// use nabla::nn::{BatchNorm2d, Module};
    /// use nabla::Tensor;
    /// let mut bn = BatchNorm2d::<f32>::new(3).unwrap();
    /// let x = Tensor::rand_uniform(&[4, 3, 5, 5], -1.0, 1.0, 0).unwrap();
    /// bn.forward(&x).unwrap(); // training: batch statistics, running ones updated
    /// assert_eq!(bn.named_buffers()[2].1.item().unwrap(), 1.0); // num_batches_tracked
    /// bn.set_training(false);
    /// assert_eq!(bn.forward(&x).unwrap().shape(), &[4, 3, 5, 5]);
    /// ```
    BatchNorm2d,
    "BatchNorm2d",
    [4]
);

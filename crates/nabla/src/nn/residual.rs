//! [`Residual`]: a skip connection, `y = x + f(x)`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{prefixed, under, Module, SharedForward};
use crate::error::{Error, Result};
use crate::tensor::shape::fmt_shape;
use crate::tensor::{Float, Tensor};

/// A residual block: `y = x + f(x)` for an inner module `f` whose output has its input's shape.
///
/// The identity path carries the gradient past `f` unchanged (`∂y/∂x = I + ∂f/∂x`), which is
/// what keeps the gradients of early layers of a deep stack from vanishing (He et al., 2016).
///
/// ```
/// use nabla::nn::{Activation, Linear, Init, Module, Residual, Sequential};
/// use nabla::{Rng, Tensor};
/// let mut rng = Rng::new(0);
/// let block = Residual::new(
///     Sequential::new()
///         .with(Linear::<f32>::new(8, 8, true, Init::KaimingUniform, &mut rng).unwrap())
///         .with(Activation::Relu),
/// );
/// let x = Tensor::<f32>::randn(&[4, 8], 0.0, 1.0, 1).unwrap();
/// assert_eq!(block.forward(&x).unwrap().shape(), &[4, 8]);
/// assert_eq!(block.named_parameters()[0].0, "inner.0.weight");
/// ```
pub struct Residual<T: Float = f32> {
    inner: Box<dyn Module<T>>,
}

impl<T: Float> Residual<T> {
    /// `x + inner(x)`.
    pub fn new(inner: impl Module<T> + 'static) -> Self {
        Residual {
            inner: Box::new(inner),
        }
    }

    fn check(&self, input: &[usize], output: &[usize]) -> Result<()> {
        if input == output {
            Ok(())
        } else {
            Err(Error::shape(
                "Residual",
                format!(
                    "{} maps {} to {}: a residual block needs the input's shape back",
                    self.inner.describe(),
                    fmt_shape(input),
                    fmt_shape(output)
                ),
            ))
        }
    }
}

impl<T: Float> Module<T> for Residual<T> {
    fn forward(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        let y = self.inner.forward(x)?;
        self.check(x.shape(), y.shape())?;
        x.add(&y)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor<T>)> {
        prefixed("inner.", self.inner.named_parameters())
    }

    fn named_buffers(&self) -> Vec<(String, Tensor<T>)> {
        prefixed("inner.", self.inner.named_buffers())
    }

    fn set_training(&mut self, training: bool) {
        self.inner.set_training(training);
    }

    fn describe(&self) -> String {
        format!("Residual({})", self.inner.describe())
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let out = self.inner.output_shape(input)?;
        self.check(input, &out)?;
        Ok(out)
    }

    fn extra_state(&self) -> BTreeMap<String, String> {
        prefixed("inner.", self.inner.extra_state())
    }

    fn load_extra_state(&mut self, state: &BTreeMap<String, String>) -> Result<()> {
        self.inner.load_extra_state(&under("inner.", state))
    }

    fn shared_forward(&self) -> Option<SharedForward<T>> {
        let f = self.inner.shared_forward()?;
        Some(Arc::new(move |x: &Tensor<T>| x.add(&f(x)?)))
    }
}

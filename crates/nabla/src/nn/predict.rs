//! Batch prediction: a model in evaluation mode, run with no graph recorded and no gradient
//! bookkeeping, over inputs of any number of rows in batches of a bounded size.

use super::loss::{predict_class, predict_proba};
use super::Module;
use crate::autograd::no_grad;
use crate::error::{Error, Result};
use crate::tensor::{Float, Tensor};

/// Rows per forward pass unless [`Predictor::with_batch`] says otherwise: a convolution's
/// activations for 10,000 images at once would take gigabytes.
pub const DEFAULT_PREDICT_BATCH: usize = 256;

/// A model set up for inference: in evaluation mode (dropout off, batch norm on its running
/// statistics), each forward pass run under [`no_grad`] (no graph, nothing kept for a
/// backward pass), inputs cut into batches of at most [`Predictor::batch`] rows and the outputs
/// joined again. `nabla predict` and `nabla serve` run models through it.
///
/// ```
/// use nabla::nn::{Mlp, MlpConfig, Predictor};
/// use nabla::Tensor;
/// # fn main() -> nabla::Result<()> {
/// let model = Mlp::<f32>::new(&MlpConfig::new(&[4, 16, 3]))?;
/// let predictor = Predictor::new(model).with_batch(64)?;
/// let x = Tensor::<f32>::randn(&[1000, 4], 0.0, 1.0, 7)?;
/// let logits = predictor.predict(&x)?; // 16 passes of at most 64 rows
/// assert_eq!(logits.shape(), &[1000, 3]);
/// assert!(!logits.requires_grad_flag());
/// let classes = predictor.predict_classes(&x)?;
/// assert_eq!(classes.len(), 1000);
/// # Ok(()) }
/// ```
pub struct Predictor<M> {
    model: M,
    batch: usize,
}

impl<M> Predictor<M> {
    /// Puts `model` in evaluation mode and wraps it; batches of [`DEFAULT_PREDICT_BATCH`] rows.
    pub fn new<T: Float>(mut model: M) -> Self
    where
        M: Module<T>,
    {
        model.set_training(false);
        Predictor {
            model,
            batch: DEFAULT_PREDICT_BATCH,
        }
    }

    /// At most `rows` rows per forward pass (at least 1).
    pub fn with_batch(mut self, rows: usize) -> Result<Self> {
        if rows == 0 {
            return Err(Error::arg(
                "Predictor::with_batch",
                "a batch needs at least 1 row",
            ));
        }
        self.batch = rows;
        Ok(self)
    }

    /// Rows per forward pass.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The model back (still in evaluation mode).
    pub fn into_inner(self) -> M {
        self.model
    }

    /// The model's outputs for every row of `x` (first axis), in batches, with no graph.
    /// Errors: `x` has no rows, or the model refuses its shape.
    pub fn predict<T: Float>(&self, x: &Tensor<T>) -> Result<Tensor<T>>
    where
        M: Module<T>,
    {
        let rows = *x.shape().first().ok_or_else(|| {
            Error::arg("Predictor::predict", "the input is a scalar; expected rows")
        })?;
        if rows == 0 {
            return Err(Error::arg(
                "Predictor::predict",
                format!("the input {:?} has no rows", x.shape()),
            ));
        }
        // The other threads stay awake through the call (and 2 ms after it), so a split
        // product does not wait for them to wake up: tens of µs in a virtual machine, more
        // than a one-row prediction takes.
        crate::threads::warm(|| {
            no_grad(|| {
                if rows <= self.batch {
                    return self.model.forward(x);
                }
                let parts = (0..rows)
                    .step_by(self.batch)
                    .map(|a| {
                        let b = (a + self.batch).min(rows);
                        self.model.forward(&x.narrow(0, a, b - a)?.contiguous()?)
                    })
                    .collect::<Result<Vec<_>>>()?;
                let refs: Vec<&Tensor<T>> = parts.iter().collect();
                Tensor::concat(&refs, 0)
            })
        })
    }

    /// Class probabilities (softmax of the outputs over their last axis).
    pub fn predict_proba<T: Float>(&self, x: &Tensor<T>) -> Result<Tensor<T>>
    where
        M: Module<T>,
    {
        no_grad(|| predict_proba(&self.predict(x)?))
    }

    /// The most likely class of every row (argmax of the outputs; the first on ties).
    pub fn predict_classes<T: Float>(&self, x: &Tensor<T>) -> Result<Vec<usize>>
    where
        M: Module<T>,
    {
        predict_class(&self.predict(x)?)
    }
}

//! Losses, each with a [`Reduction`]: mean (the default in PyTorch), sum, or none (one value
//! per sample).
//!
//! * **L2 / MSE** `(ŷ − y)²`: the maximum-likelihood loss under Gaussian noise; its gradient
//!   `2(ŷ − y)` is proportional to the residual, so outliers pull hard.
//! * **L1** `|ŷ − y|`: maximum likelihood under Laplace noise; its gradient is `sign(ŷ − y)`,
//!   of constant size, so outliers pull no harder than any other point.
//! * **Huber**: L2 within `δ` of the target, L1 beyond.
//! * **Cross-entropy** from logits: `−Σⱼ tⱼ log softmax(z)ⱼ`, fused and stable.
//! * **Binary cross-entropy** from logits: `softplus(z) − t·z`, stable for any `z`.

use crate::error::{Error, Result};
use crate::tensor::shape::fmt_shape;
use crate::tensor::{Float, Tensor};

/// How per-element (or per-sample) losses are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduction {
    /// The mean over all elements.
    #[default]
    Mean,
    /// The sum over all elements.
    Sum,
    /// No reduction: one loss per element (per sample for cross-entropy).
    None,
}

impl Reduction {
    /// Applies the reduction.
    pub fn apply<T: Float>(self, losses: &Tensor<T>) -> Result<Tensor<T>> {
        match self {
            Reduction::Mean => losses.mean_all(),
            Reduction::Sum => losses.sum_all(),
            Reduction::None => Ok(losses.clone()),
        }
    }
}

fn same_shape<T: Float>(op: &'static str, pred: &Tensor<T>, target: &Tensor<T>) -> Result<()> {
    if pred.shape() == target.shape() {
        Ok(())
    } else {
        Err(Error::shape(
            op,
            format!(
                "prediction {} and target {} must have the same shape",
                fmt_shape(pred.shape()),
                fmt_shape(target.shape())
            ),
        ))
    }
}

/// Mean squared error (L2): `(pred − target)²`, reduced.
pub fn mse<T: Float>(pred: &Tensor<T>, target: &Tensor<T>, red: Reduction) -> Result<Tensor<T>> {
    same_shape("mse", pred, target)?;
    red.apply(&pred.sub(target)?.square()?)
}

/// Absolute error (L1): `|pred − target|`, reduced. Its gradient at a zero residual is 0.
pub fn l1<T: Float>(pred: &Tensor<T>, target: &Tensor<T>, red: Reduction) -> Result<Tensor<T>> {
    same_shape("l1", pred, target)?;
    red.apply(&pred.sub(target)?.abs()?)
}

/// Huber loss with threshold `delta > 0`: `½r²` for `|r| ≤ δ`, `δ(|r| − ½δ)` beyond.
pub fn huber<T: Float>(
    pred: &Tensor<T>,
    target: &Tensor<T>,
    delta: f64,
    red: Reduction,
) -> Result<Tensor<T>> {
    same_shape("huber", pred, target)?;
    if !(delta > 0.0 && delta.is_finite()) {
        return Err(Error::arg("huber", format!("delta {delta} must be > 0")));
    }
    // With a = |r| and q = min(a, δ): ½q² + δ(a − q) is exactly the piecewise definition.
    let a = pred.sub(target)?.abs()?;
    let q = a.clamp(0.0, delta)?;
    red.apply(
        &q.square()?
            .mul_scalar(0.5)?
            .add(&a.sub(&q)?.mul_scalar(delta)?)?,
    )
}

/// The target of a cross-entropy loss.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a, T: Float = f32> {
    /// One class index per row.
    Classes(&'a [usize]),
    /// A probability distribution per row, `[n, classes]`.
    Probs(&'a Tensor<T>),
}

/// Cross-entropy between `[n, classes]` logits and a target, with optional label smoothing
/// `ε ∈ [0, 1)`: the target becomes `(1 − ε)·target + ε/classes`. Fused and numerically
/// stable ([`Tensor::softmax_cross_entropy`]).
pub fn cross_entropy<T: Float>(
    logits: &Tensor<T>,
    target: Target<'_, T>,
    label_smoothing: f64,
    red: Reduction,
) -> Result<Tensor<T>> {
    if logits.rank() != 2 {
        return Err(Error::shape(
            "cross_entropy",
            format!("logits {} must be [n, classes]", fmt_shape(logits.shape())),
        ));
    }
    if !(0.0..1.0).contains(&label_smoothing) {
        return Err(Error::arg(
            "cross_entropy",
            format!("label smoothing {label_smoothing} is not in [0, 1)"),
        ));
    }
    let (n, k) = (logits.shape()[0], logits.shape()[1]);
    let one_hot = matches!(target, Target::Classes(_)) && label_smoothing == 0.0;
    let mut dist = match target {
        Target::Classes(labels) => {
            if labels.len() != n {
                return Err(Error::shape(
                    "cross_entropy",
                    format!("{} labels for {n} rows of logits", labels.len()),
                ));
            }
            if let Some(&bad) = labels.iter().find(|&&l| l >= k) {
                return Err(Error::arg(
                    "cross_entropy",
                    format!("label {bad} is not below the class count {k}"),
                ));
            }
            let mut d = crate::tensor::storage::filled("cross_entropy", &[n, k], T::ZERO)?;
            for (i, &l) in labels.iter().enumerate() {
                d[i * k + l] = T::ONE;
            }
            d
        }
        Target::Probs(p) => {
            same_shape("cross_entropy", logits, p)?;
            p.to_vec()?
        }
    };
    if label_smoothing > 0.0 {
        let keep = T::from_f64(1.0 - label_smoothing);
        let spread = T::from_f64(label_smoothing / k as f64);
        dist.iter_mut().for_each(|d| *d = keep * *d + spread);
    }
    if k == 0 {
        return Err(Error::shape(
            "cross_entropy",
            format!("logits {} have no classes", fmt_shape(logits.shape())),
        ));
    }
    // A fresh target nothing else holds: not copied again; one-hot rows sum to exactly 1.
    let target = Tensor::from_vec(dist, &[n, k])?;
    red.apply(&logits.softmax_cross_entropy_owned(target, one_hot)?)
}

/// Binary cross-entropy from logits with targets in `[0, 1]`:
/// `−t·ln σ(z) − (1 − t)·ln(1 − σ(z)) = softplus(z) − t·z`, stable for any `z`.
pub fn bce_with_logits<T: Float>(
    logits: &Tensor<T>,
    target: &Tensor<T>,
    red: Reduction,
) -> Result<Tensor<T>> {
    same_shape("bce_with_logits", logits, target)?;
    red.apply(&logits.softplus()?.sub(&target.mul(logits)?)?)
}

/// Class probabilities: softmax over the last axis of `[n, classes]` logits.
pub fn predict_proba<T: Float>(logits: &Tensor<T>) -> Result<Tensor<T>> {
    logits.softmax(logits.rank().saturating_sub(1))
}

/// Predicted class per row: the arg-max of the logits (equal to the arg-max of the softmax).
pub fn predict_class<T: Float>(logits: &Tensor<T>) -> Result<Vec<usize>> {
    logits.argmax(logits.rank().saturating_sub(1))
}

/// Accuracy of predicted classes against labels, in `[0, 1]`.
pub fn accuracy(predicted: &[usize], labels: &[usize]) -> f64 {
    if labels.is_empty() {
        return 0.0;
    }
    let hits = predicted.iter().zip(labels).filter(|(p, l)| p == l).count();
    hits as f64 / labels.len() as f64
}

//! Losses of a batch, evaluation (loss, accuracy, confusion matrix) and the per-epoch record.

use serde::{Deserialize, Serialize};

use super::LossKind;
use crate::autograd::no_grad;
use crate::data::{batch_indices, TaskData};
use crate::error::{Error, Result};
use crate::nn::loss::{self, Reduction, Target};
use crate::nn::Module;
use crate::tensor::Tensor;

/// One epoch's record (a row of the CLI's `metrics.csv`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Epoch, from 1.
    pub epoch: usize,
    /// Optimizer steps taken by its end.
    pub step: u64,
    /// Learning rate of its last step.
    pub lr: f64,
    /// Mean training loss over the epoch's batches (as trained: dropout, label smoothing).
    pub train_loss: f64,
    /// Training accuracy over the epoch (classification).
    pub train_accuracy: Option<f64>,
    /// Validation loss, when there is a validation set.
    pub val_loss: Option<f64>,
    /// Validation accuracy.
    pub val_accuracy: Option<f64>,
    /// Test loss, when a test set is evaluated this epoch.
    pub test_loss: Option<f64>,
    /// Test accuracy.
    pub test_accuracy: Option<f64>,
    /// Training time since the run began, across resumes (seconds).
    pub seconds: f64,
    /// Training samples per second in this epoch (its time summed across resumes).
    pub samples_per_second: f64,
}

/// A `k × k` confusion matrix: `counts[true][predicted]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Confusion {
    /// Counts.
    pub counts: Vec<Vec<usize>>,
}

impl Confusion {
    /// Precision of class `c`: correct / predicted as c (None when never predicted).
    pub fn precision(&self, c: usize) -> Option<f64> {
        let predicted: usize = self.counts.iter().map(|row| row[c]).sum();
        (predicted > 0).then(|| self.counts[c][c] as f64 / predicted as f64)
    }

    /// Recall of class `c`: correct / truly c (None when absent).
    pub fn recall(&self, c: usize) -> Option<f64> {
        let actual: usize = self.counts[c].iter().sum();
        (actual > 0).then(|| self.counts[c][c] as f64 / actual as f64)
    }
}

/// The result of evaluating a model on a data set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// Rows evaluated.
    pub samples: usize,
    /// Mean loss (plain cross-entropy for classification: no label smoothing).
    pub loss: f64,
    /// Accuracy (classification).
    pub accuracy: Option<f64>,
    /// Confusion matrix (classification).
    pub confusion: Option<Confusion>,
}

/// The mean loss of a batch (a scalar tensor): `out` against the rows `idx` of `data`.
pub fn batch_loss(
    kind: LossKind,
    out: &Tensor<f32>,
    data: &TaskData,
    idx: &[usize],
    label_smoothing: f64,
) -> Result<Tensor<f32>> {
    let red = Reduction::Mean;
    match (kind, data) {
        (LossKind::CrossEntropy, TaskData::Class(c)) => {
            let labels: Vec<usize> = idx.iter().map(|&i| c.labels[i]).collect();
            loss::cross_entropy(out, Target::Classes(&labels), label_smoothing, red)
        }
        (LossKind::CrossEntropy, TaskData::Text(t)) => {
            let s = out.shape();
            if s.len() != 3 || s[0] != idx.len() || s[1] != t.context || s[2] != t.vocab {
                return Err(Error::shape(
                    "loss",
                    format!(
                        "a language model's output must be [{}, {}, {}] (windows, positions, \
                         vocabulary), got {:?}",
                        idx.len(),
                        t.context,
                        t.vocab,
                        s
                    ),
                ));
            }
            let logits = out.reshape(&[s[0] * s[1], s[2]])?;
            loss::cross_entropy(
                &logits,
                Target::Classes(&t.targets(idx)),
                label_smoothing,
                red,
            )
        }
        (LossKind::CrossEntropy, TaskData::Reg(_))
        | (_, TaskData::Class(_))
        | (_, TaskData::Text(_)) => Err(Error::arg(
            "loss",
            format!("{kind} does not fit {} data", task_name(data)),
        )),
        (_, TaskData::Reg(r)) => {
            let y = r.y.index_select(0, idx)?;
            match kind {
                LossKind::Mse => loss::mse(out, &y, red),
                LossKind::L1 => loss::l1(out, &y, red),
                LossKind::Huber => loss::huber(out, &y, 1.0, red),
                LossKind::CrossEntropy => unreachable!("matched above"),
            }
        }
    }
}

/// `classification`, `regression` or `text`.
pub fn task_name(data: &TaskData) -> &'static str {
    match data {
        TaskData::Class(_) => "classification",
        TaskData::Reg(_) => "regression",
        TaskData::Text(_) => "text",
    }
}

/// Evaluates `model` on `data` in batches of 128 under `no_grad`, in evaluation mode as the
/// model is (call `set_training(false)` first to disable dropout).
pub fn evaluate(model: &dyn Module<f32>, data: &TaskData, kind: LossKind) -> Result<Evaluation> {
    let n = data.len();
    let mut total = 0.0;
    let mut confusion: Option<Vec<Vec<usize>>> = None;
    let mut token_hits = 0usize;
    // Batches of 128: a convolution's activations at 1,000 rows are 100 MB per layer, fresh
    // pages every batch (12 s of a 10,000-image evaluation went to the kernel); 128 rows stay small.
    for idx in batch_indices(n, 128, None, false)? {
        let x = data.rows(&idx)?;
        let out = no_grad(|| model.forward(&x))?;
        let l = no_grad(|| batch_loss(kind, &out, data, &idx, 0.0))?;
        total += l.item()? as f64 * idx.len() as f64;
        if let TaskData::Text(t) = data {
            let s = out.shape();
            let pred = loss::predict_class(&out.reshape(&[s[0] * s[1], s[2]])?)?;
            let hits = pred.iter().zip(t.targets(&idx)).filter(|(p, y)| **p == *y);
            token_hits += hits.count();
        }
        if let TaskData::Class(c) = data {
            let k = out.shape()[1];
            let m = confusion.get_or_insert_with(|| vec![vec![0; k]; k]);
            for (p, &i) in loss::predict_class(&out)?.iter().zip(&idx) {
                if c.labels[i] < k {
                    m[c.labels[i]][*p] += 1;
                }
            }
        }
    }
    let confusion = confusion.map(|counts| Confusion { counts });
    let accuracy = confusion.as_ref().map(|c| {
        let hits: usize = (0..c.counts.len()).map(|i| c.counts[i][i]).sum();
        hits as f64 / n.max(1) as f64
    });
    let accuracy = match data {
        TaskData::Text(t) => Some(token_hits as f64 / (n * t.context).max(1) as f64),
        _ => accuracy,
    };
    Ok(Evaluation {
        samples: n,
        loss: if n > 0 { total / n as f64 } else { f64::NAN },
        accuracy,
        confusion,
    })
}

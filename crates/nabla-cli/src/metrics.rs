//! Evaluation: loss, accuracy, confusion matrix, per-class precision and recall.

use anyhow::Result;
use nabla::data::batch_indices;
use nabla::nn::loss::{self, Reduction, Target};
use nabla::nn::{Mlp, Module};
use nabla::{no_grad, Tensor};
use serde::{Deserialize, Serialize};

use crate::args::LossName;
use crate::dataset::TaskData;

/// One row of metrics.csv / metrics.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub step: u64,
    pub lr: f64,
    pub train_loss: f64,
    pub train_accuracy: Option<f64>,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub test_loss: Option<f64>,
    pub test_accuracy: Option<f64>,
    pub seconds: f64,
    pub samples_per_second: f64,
}

/// A `k × k` confusion matrix: `counts[true][predicted]`.
#[derive(Debug, Clone, Serialize)]
pub struct Confusion {
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
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub samples: usize,
    pub loss: f64,
    pub accuracy: Option<f64>,
    pub confusion: Option<Confusion>,
}

/// The training loss of a batch (a scalar tensor).
pub fn batch_loss(
    kind: LossName,
    out: &Tensor<f32>,
    labels: &[usize],
    y: Option<&Tensor<f32>>,
    smoothing: f64,
) -> Result<Tensor<f32>> {
    let red = Reduction::Mean;
    Ok(match (kind, y) {
        (LossName::CrossEntropy, _) => {
            loss::cross_entropy(out, Target::Classes(labels), smoothing, red)?
        }
        (LossName::Mse, Some(y)) => loss::mse(out, y, red)?,
        (LossName::L1, Some(y)) => loss::l1(out, y, red)?,
        (LossName::Huber, Some(y)) => loss::huber(out, y, 1.0, red)?,
        (_, None) => anyhow::bail!("{kind:?} needs real-valued targets (a regression data set)"),
    })
}

/// Evaluates in batches of 1000 under `no_grad` (label smoothing is not applied: the reported
/// loss is the plain cross-entropy).
pub fn evaluate(model: &Mlp, data: &TaskData, kind: LossName) -> Result<Evaluation> {
    let n = data.len();
    let mut total = 0.0;
    let mut confusion: Option<Vec<Vec<usize>>> = None;
    for idx in batch_indices(n, 1000, None, false)? {
        match data {
            TaskData::Class(c) => {
                let x = c.x.index_select(0, &idx)?;
                let labels: Vec<usize> = idx.iter().map(|&i| c.labels[i]).collect();
                let out = no_grad(|| model.forward(&x))?;
                let l = no_grad(|| batch_loss(kind, &out, &labels, None, 0.0))?;
                total += l.item()? as f64 * idx.len() as f64;
                let k = out.shape()[1];
                let m = confusion.get_or_insert_with(|| vec![vec![0; k]; k]);
                for (p, &t) in loss::predict_class(&out)?.iter().zip(&labels) {
                    if t < k {
                        m[t][*p] += 1;
                    }
                }
            }
            TaskData::Reg(r) => {
                let x = r.x.index_select(0, &idx)?;
                let y = r.y.index_select(0, &idx)?;
                let out = no_grad(|| model.forward(&x))?;
                let l = no_grad(|| batch_loss(kind, &out, &[], Some(&y), 0.0))?;
                total += l.item()? as f64 * idx.len() as f64;
            }
        }
    }
    let confusion = confusion.map(|counts| Confusion { counts });
    let accuracy = confusion.as_ref().map(|c| {
        let hits: usize = (0..c.counts.len()).map(|i| c.counts[i][i]).sum();
        hits as f64 / n.max(1) as f64
    });
    Ok(Evaluation {
        samples: n,
        loss: if n > 0 { total / n as f64 } else { f64::NAN },
        accuracy,
        confusion,
    })
}

/// A text report: loss, accuracy, per-class precision/recall, confusion matrix.
pub fn report(e: &Evaluation, class_names: &[String]) -> String {
    let mut s = format!("samples {}\nloss {:.4}\n", e.samples, e.loss);
    if let Some(a) = e.accuracy {
        s += &format!("accuracy {:.2}%\n", 100.0 * a);
    }
    if let Some(c) = &e.confusion {
        let name = |i: usize| class_names.get(i).cloned().unwrap_or_else(|| i.to_string());
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", 100.0 * v));
        s += &format!("\n{:<14} {:>10} {:>10}\n", "class", "precision", "recall");
        for i in 0..c.counts.len() {
            s += &format!(
                "{:<14} {:>10} {:>10}\n",
                name(i),
                pct(c.precision(i)),
                pct(c.recall(i))
            );
        }
        s += "\nconfusion matrix (rows: true class, columns: predicted)\n";
        s += &format!("{:<14}", "");
        for j in 0..c.counts.len() {
            s += &format!(" {j:>6}");
        }
        s += "\n";
        for (i, row) in c.counts.iter().enumerate() {
            s += &format!(
                "{:<14}",
                format!("{i} {}", name(i))
                    .chars()
                    .take(14)
                    .collect::<String>()
            );
            for v in row {
                s += &format!(" {v:>6}");
            }
            s += "\n";
        }
    }
    s
}

//! Helpers shared by the experiments in `examples/`: full-batch training loops, accuracy, a
//! markdown table printer, and where plots go.

use std::path::PathBuf;

use anyhow::Result;
use nabla::nn::loss::{self, accuracy, Reduction, Target};
use nabla::nn::Module;
use nabla::optim::{Adam, AdamConfig, LrSchedule, Optimizer};
use nabla::{no_grad, Tensor};

/// The directory the experiments write their plots to: `examples/images` of the workspace
/// (overridable with `NABLA_EXPERIMENT_OUT`).
pub fn image_dir() -> Result<PathBuf> {
    let dir = match std::env::var_os("NABLA_EXPERIMENT_OUT") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/images"
        )),
    };
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Which loss a regression fit minimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegressionLoss {
    /// Mean squared error.
    L2,
    /// Mean absolute error.
    L1,
}

/// Full-batch Adam for `steps` steps with cosine decay from `lr`, minimising `loss(outputs)`;
/// returns the final training loss.
pub fn fit(
    model: &dyn Module,
    x: &Tensor<f32>,
    steps: u64,
    lr: f64,
    loss: impl Fn(&Tensor<f32>) -> nabla::Result<Tensor<f32>>,
) -> Result<f64> {
    fit_warmup(model, x, steps, 0, lr, loss)
}

/// [`fit`] with a linear learning-rate warm-up over the first `warmup` steps.
pub fn fit_warmup(
    model: &dyn Module,
    x: &Tensor<f32>,
    steps: u64,
    warmup: u64,
    lr: f64,
    loss: impl Fn(&Tensor<f32>) -> nabla::Result<Tensor<f32>>,
) -> Result<f64> {
    let mut opt = Adam::new(model.named_parameters(), AdamConfig::adam(lr))?;
    let cosine = LrSchedule::Cosine {
        total: steps.saturating_sub(warmup).max(1),
        min_lr: lr / 100.0,
    };
    let sched = if warmup > 0 {
        LrSchedule::Warmup {
            steps: warmup,
            then: Box::new(cosine),
        }
    } else {
        cosine
    };
    let mut last = f64::NAN;
    for step in 0..steps {
        opt.set_lr(sched.lr_at(lr, step));
        let l = loss(&model.forward(x)?)?;
        last = l.item()? as f64;
        opt.step(&l.backward()?)?;
    }
    Ok(last)
}

/// [`fit`] on cross-entropy against class labels.
pub fn fit_classifier(
    model: &dyn Module,
    x: &Tensor<f32>,
    labels: &[usize],
    steps: u64,
    lr: f64,
) -> Result<f64> {
    fit(model, x, steps, lr, |out| {
        loss::cross_entropy(out, Target::Classes(labels), 0.0, Reduction::Mean)
    })
}

/// [`fit`] on L2 or L1 against real targets.
pub fn fit_regression(
    model: &dyn Module,
    x: &Tensor<f32>,
    y: &Tensor<f32>,
    kind: RegressionLoss,
    steps: u64,
    lr: f64,
) -> Result<f64> {
    fit(model, x, steps, lr, |out| match kind {
        RegressionLoss::L2 => loss::mse(out, y, Reduction::Mean),
        RegressionLoss::L1 => loss::l1(out, y, Reduction::Mean),
    })
}

/// Accuracy of a classifier on `(x, labels)`.
pub fn accuracy_of(model: &dyn Module, x: &Tensor<f32>, labels: &[usize]) -> Result<f64> {
    let out = no_grad(|| model.forward(x))?;
    Ok(accuracy(&loss::predict_class(&out)?, labels))
}

/// Mean squared error of a regression model on `(x, y)`.
pub fn mse_of(model: &dyn Module, x: &Tensor<f32>, y: &Tensor<f32>) -> Result<f64> {
    let out = no_grad(|| model.forward(x))?;
    Ok(loss::mse(&out, y, Reduction::Mean)?.item()? as f64)
}

/// A markdown table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = format!("| {} |\n|", headers.join(" | "));
    for _ in headers {
        s += "---|";
    }
    s += "\n";
    for r in rows {
        s += &format!("| {} |\n", r.join(" | "));
    }
    s
}

//! [`TrainConfig`]: everything that decides what a training run computes, serialisable and
//! versioned, stored in every checkpoint.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::nn::ModelSpec;
use crate::optim::{Adam, AdamConfig, LrSchedule, Optimizer, Sgd, SgdConfig};
use crate::tensor::Tensor;

/// The version of [`TrainConfig`]'s JSON that this nabla writes. It reads version 1 too,
/// whose `model` was an [`MlpConfig`](crate::nn::MlpConfig) (read as that MLP's spec).
pub const TRAIN_CONFIG_VERSION: u32 = 2;

/// The training loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// Softmax cross-entropy from logits (classification).
    CrossEntropy,
    /// Mean squared error (regression).
    Mse,
    /// Mean absolute error (regression).
    L1,
    /// Huber loss with δ = 1 (regression).
    Huber,
}

impl fmt::Display for LossKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LossKind::CrossEntropy => "cross-entropy",
            LossKind::Mse => "mse",
            LossKind::L1 => "l1",
            LossKind::Huber => "huber",
        })
    }
}

/// The optimizer and its hyper-parameters (the learning rate is the schedule's base rate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerConfig {
    /// SGD, with optional (Nesterov) momentum.
    Sgd(SgdConfig),
    /// Adam or AdamW (`decoupled`).
    Adam(AdamConfig),
}

impl OptimizerConfig {
    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerConfig::Sgd(c) => c.lr,
            OptimizerConfig::Adam(c) => c.lr,
        }
    }

    /// `sgd`, `adam` or `adamw`.
    pub fn name(&self) -> &'static str {
        match self {
            OptimizerConfig::Sgd(_) => "sgd",
            OptimizerConfig::Adam(c) if c.decoupled => "adamw",
            OptimizerConfig::Adam(_) => "adam",
        }
    }

    /// The optimizer over `params`.
    pub fn build(&self, params: Vec<(String, Tensor<f32>)>) -> Result<Box<dyn Optimizer<f32>>> {
        Ok(match self {
            OptimizerConfig::Sgd(c) => Box::new(Sgd::new(params, c.clone())?),
            OptimizerConfig::Adam(c) => Box::new(Adam::new(params, c.clone())?),
        })
    }
}

/// Stop when the monitored loss (validation, else test) has not improved by more than
/// `min_delta` for `patience` epochs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopping {
    /// Epochs without improvement before stopping (≥ 1).
    pub patience: usize,
    /// The smallest decrease that counts as an improvement.
    pub min_delta: f64,
}

/// What a training run computes: model, loss, optimizer, schedule, batching and the loop's
/// safety settings. Stored as versioned JSON in every checkpoint; a resume continues with the
/// stored one, of which only [`TrainConfig::RESUMABLE_CHANGES`] may differ.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// [`TRAIN_CONFIG_VERSION`] when written.
    pub version: u32,
    /// The model (`None`: a module the caller builds, see
    /// [`Trainer::with_module`](super::Trainer::with_module)).
    #[serde(default, deserialize_with = "model_field")]
    pub model: Option<ModelSpec>,
    /// The loss.
    pub loss: LossKind,
    /// Label smoothing ε of the cross-entropy (0 = none).
    pub label_smoothing: f64,
    /// The optimizer (its `lr` is the schedule's base rate).
    pub optimizer: OptimizerConfig,
    /// Learning rate against the step.
    pub schedule: LrSchedule,
    /// Epochs (passes over the training set).
    pub epochs: usize,
    /// Rows per batch.
    pub batch_size: usize,
    /// Stop after this many optimizer steps (even mid-epoch).
    pub max_steps: Option<u64>,
    /// Clip the global gradient norm to this value.
    pub clip: Option<f64>,
    /// Seed of the batch order (the model's initial weights use `model.seed`).
    pub seed: u64,
    /// Write a checkpoint every this many steps (when the trainer has a checkpoint path).
    pub checkpoint_every: Option<u64>,
    /// Recompute the forward pass of segments of this many hidden blocks in backward.
    pub checkpoint_activations: Option<usize>,
    /// Check every operation for NaN/∞ while training (slower; names the first culprit).
    pub detect_anomaly: bool,
    /// Early stopping on the validation (else test) loss.
    pub early_stopping: Option<EarlyStopping>,
    /// Compute each batch's gradient as this many fixed slices added in order (data-parallel
    /// training: a multiple of the number of ranks; the result is the same for any such
    /// number). `None`: one gradient per batch.
    #[serde(default)]
    pub grad_shards: Option<usize>,
    /// Data augmentation: mirror each training image left to right with probability ½ (a
    /// model whose input is `[C, H, W]`; drawn from the seed, the step and the row).
    #[serde(default)]
    pub hflip: bool,
    /// Also evaluate every this many steps within an epoch (a row of the history each time,
    /// its training loss the mean since the previous row): for long epochs, such as a
    /// language model's pass over every window of a text. `None`: at the end of each epoch.
    #[serde(default)]
    pub eval_every: Option<u64>,
}

impl TrainConfig {
    /// The fields a resume may change: more epochs or steps, other checkpoint spacing, anomaly
    /// detection. Any other difference is refused.
    pub const RESUMABLE_CHANGES: [&'static str; 4] =
        ["epochs", "max_steps", "checkpoint_every", "detect_anomaly"];

    /// A configuration with the given model (a [`ModelSpec`], or an
    /// [`MlpConfig`](crate::nn::MlpConfig)) and optimizer: cross-entropy, constant learning
    /// rate, 10 epochs of batches of 32, no clipping, seed 0.
    pub fn new(model: impl Into<ModelSpec>, optimizer: OptimizerConfig) -> Self {
        TrainConfig {
            model: Some(model.into()),
            ..Self::for_module(optimizer)
        }
    }

    /// [`TrainConfig::new`] without a model spec: for
    /// [`Trainer::with_module`](super::Trainer::with_module).
    pub fn for_module(optimizer: OptimizerConfig) -> Self {
        TrainConfig {
            version: TRAIN_CONFIG_VERSION,
            model: None,
            loss: LossKind::CrossEntropy,
            label_smoothing: 0.0,
            optimizer,
            schedule: LrSchedule::Constant,
            epochs: 10,
            batch_size: 32,
            max_steps: None,
            clip: None,
            seed: 0,
            checkpoint_every: None,
            checkpoint_activations: None,
            detect_anomaly: false,
            early_stopping: None,
            grad_shards: None,
            hflip: false,
            eval_every: None,
        }
    }

    /// Checks every setting that does not depend on the data.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::arg("train config", m));
        if self.version != TRAIN_CONFIG_VERSION {
            return bad(format!(
                "version {} (this nabla reads version {TRAIN_CONFIG_VERSION})",
                self.version
            ));
        }
        let lr = self.optimizer.lr();
        if !(lr > 0.0 && lr.is_finite()) {
            return bad(format!("learning rate {lr} must be positive and finite"));
        }
        if self.epochs == 0 || self.batch_size == 0 {
            return bad(format!(
                "epochs ({}) and batch size ({}) must be at least 1",
                self.epochs, self.batch_size
            ));
        }
        if self.max_steps == Some(0) || self.checkpoint_every == Some(0) {
            return bad("max_steps and checkpoint_every must be at least 1".into());
        }
        if let Some(m) = self.grad_shards {
            if m == 0 || m > self.batch_size {
                return bad(format!(
                    "grad_shards {m} must be between 1 and the batch size {}",
                    self.batch_size
                ));
            }
        }
        if self.checkpoint_activations == Some(0) {
            return bad("checkpoint_activations must be at least 1 (blocks per segment)".into());
        }
        if self.eval_every == Some(0) {
            return bad("eval_every must be at least 1 step".into());
        }
        if self.hflip && self.model.as_ref().is_none_or(|m| m.input.len() != 3) {
            return bad("hflip mirrors images: it needs a model whose input is [C, H, W]".into());
        }
        if let Some(c) = self.clip {
            if !(c > 0.0 && c.is_finite()) {
                return bad(format!("clip norm {c} must be positive"));
            }
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad(format!(
                "label smoothing {} is not in [0, 1)",
                self.label_smoothing
            ));
        }
        if self.label_smoothing > 0.0 && self.loss != LossKind::CrossEntropy {
            return bad(format!(
                "label smoothing applies to cross-entropy, not {}",
                self.loss
            ));
        }
        if let Some(e) = &self.early_stopping {
            if e.patience == 0 || e.min_delta.is_nan() || e.min_delta < 0.0 {
                return bad("early stopping needs patience ≥ 1 and min_delta ≥ 0".into());
            }
        }
        self.schedule.validate()
    }

    /// Optimizer steps the run takes over `rows` training rows.
    pub fn total_steps(&self, rows: usize) -> u64 {
        let per_epoch = rows.div_ceil(self.batch_size.max(1)) as u64;
        self.max_steps
            .unwrap_or(u64::MAX)
            .min(per_epoch.saturating_mul(self.epochs as u64))
            .max(1)
    }

    /// Ok when a run stored with `saved` may continue under `self`: the fields that differ are
    /// all in [`TrainConfig::RESUMABLE_CHANGES`]; otherwise an error naming each other one.
    pub fn check_resumable_from(&self, saved: &TrainConfig) -> Result<()> {
        let (a, b) = (json_fields(self), json_fields(saved));
        let changed: Vec<String> = a
            .iter()
            .filter(|(k, v)| b.get(*k) != Some(v) && !Self::RESUMABLE_CHANGES.contains(&k.as_str()))
            .map(|(k, v)| {
                format!(
                    "{k} {} (checkpoint: {})",
                    v,
                    b.get(k).map_or("-".into(), |v| v.to_string())
                )
            })
            .collect();
        if changed.is_empty() {
            Ok(())
        } else {
            Err(Error::Mismatch {
                what: "resume".into(),
                msg: format!(
                    "settings differ from the checkpoint's: {}",
                    changed.join("; ")
                ),
            })
        }
    }
}

/// `model` as a spec, or as the MLP config that version 1 wrote (its MLP's spec), or null.
fn model_field<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<ModelSpec>, D::Error> {
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => crate::nn::spec_or_mlp(v)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

fn json_fields(c: &TrainConfig) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(c) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    }
}

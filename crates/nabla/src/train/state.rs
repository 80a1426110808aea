//! The loop's state as typed fields, and the checkpoint that carries it with the
//! [`TrainConfig`], the data fingerprint and the caller's metadata.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::metrics::EpochMetrics;
use super::TrainConfig;
use crate::data::DataFingerprint;
use crate::error::{Error, Result};
use crate::io::{read_tensor_file, save_training_state, TrainingState};
use crate::nn::Module;
use crate::optim::Optimizer;
use crate::rng::Rng;

/// Where the loop is: enough to continue bit-exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// Optimizer steps taken.
    pub step: u64,
    /// The epoch in progress (from 1).
    pub epoch: usize,
    /// Batches of it already done.
    pub batch: usize,
    /// The shuffling generator's state at the start of this epoch.
    pub epoch_rng: [u64; 4],
    /// Sum of batch-mean losses × batch sizes in this epoch.
    pub loss_sum: f64,
    /// Correct training predictions in this epoch.
    pub correct: usize,
    /// Training rows seen in this epoch.
    pub seen: usize,
    /// Training time spent in this epoch so far (across resumes).
    pub epoch_seconds: f64,
    /// Time since the run began (across resumes).
    pub total_seconds: f64,
    /// Finished epochs.
    pub history: Vec<EpochMetrics>,
    /// Early stopping: the best monitored loss and its epoch.
    pub best: Option<(f64, usize)>,
    /// Early stopping: epochs since the best.
    pub stale_epochs: usize,
}

impl LoopState {
    /// The state before the first step.
    pub fn start(seed: u64) -> Self {
        LoopState {
            step: 0,
            epoch: 1,
            batch: 0,
            epoch_rng: Rng::new(seed ^ 0x5EED_DA7A).state(),
            loss_sum: 0.0,
            correct: 0,
            seen: 0,
            epoch_seconds: 0.0,
            total_seconds: 0.0,
            history: Vec::new(),
            best: None,
            stale_epochs: 0,
        }
    }

    /// Moves to the next epoch, whose shuffling starts from `rng`.
    pub(super) fn next_epoch(&mut self, rng: [u64; 4]) {
        self.epoch += 1;
        self.batch = 0;
        self.epoch_rng = rng;
        (self.loss_sum, self.correct, self.seen, self.epoch_seconds) = (0.0, 0, 0, 0.0);
    }
}

/// What a trainer checkpoint records besides the tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointInfo {
    /// The configuration it was trained with.
    pub config: TrainConfig,
    /// Where the loop was.
    pub state: LoopState,
    /// The training data's fingerprint, when the trainer had one.
    pub fingerprint: Option<DataFingerprint>,
    /// The caller's metadata ([`Trainer::with_metadata`](super::Trainer::with_metadata)).
    pub metadata: BTreeMap<String, String>,
}

const CONFIG_KEY: &str = "train_config";
const LOOP_KEY: &str = "loop";
const FINGERPRINT_KEY: &str = "data_fingerprint";
const USER_PREFIX: &str = "user.";

/// Writes a trainer checkpoint (atomically).
pub(super) fn save(
    path: &Path,
    model: &dyn Module<f32>,
    optimizer: &dyn Optimizer<f32>,
    config: &TrainConfig,
    state: &LoopState,
    fingerprint: Option<&DataFingerprint>,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let json = |v: serde_json::Result<String>| v.map_err(|e| Error::file(path, e.to_string()));
    let mut extra = BTreeMap::from([
        (CONFIG_KEY.to_string(), json(serde_json::to_string(config))?),
        (LOOP_KEY.to_string(), json(serde_json::to_string(state))?),
    ]);
    if let Some(f) = fingerprint {
        extra.insert(FINGERPRINT_KEY.into(), json(serde_json::to_string(f))?);
    }
    for (k, v) in metadata {
        extra.insert(format!("{USER_PREFIX}{k}"), v.clone());
    }
    let training = TrainingState {
        step: state.step,
        epoch: state.epoch as u64,
        rng: state.epoch_rng,
        model_config: config
            .model
            .as_ref()
            .map_or_else(String::new, |m| m.to_json()),
        extra,
    };
    save_training_state(path, model, optimizer, &training)
}

/// Reads what a [`Trainer`](super::Trainer) checkpoint records (not its tensors): the
/// configuration, the loop state, the data fingerprint and the caller's metadata. Errors name
/// the file and the malformed field.
pub fn read_checkpoint(path: impl AsRef<Path>) -> Result<CheckpointInfo> {
    let path = path.as_ref();
    let file = read_tensor_file(path)?;
    let meta = &file.metadata;
    let field = |k: &str| {
        meta.get(&format!("extra.{k}")).ok_or_else(|| {
            Error::file(
                path,
                format!("not a trainer checkpoint (its metadata has no '{k}')"),
            )
        })
    };
    let parse_err = |k: &str, e: serde_json::Error| {
        Error::file(path, format!("metadata '{k}' is malformed: {e}"))
    };
    let mut config: TrainConfig =
        serde_json::from_str(field(CONFIG_KEY)?).map_err(|e| parse_err(CONFIG_KEY, e))?;
    if config.version == 1 {
        config.version = super::TRAIN_CONFIG_VERSION; // its MLP config was read as a spec
    }
    config
        .validate()
        .map_err(|e| Error::file(path, e.to_string()))?;
    let state: LoopState =
        serde_json::from_str(field(LOOP_KEY)?).map_err(|e| parse_err(LOOP_KEY, e))?;
    let fingerprint = match meta.get(&format!("extra.{FINGERPRINT_KEY}")) {
        Some(f) => Some(serde_json::from_str(f).map_err(|e| parse_err(FINGERPRINT_KEY, e))?),
        None => None,
    };
    let metadata = meta
        .iter()
        .filter_map(|(k, v)| {
            let k = k.strip_prefix("extra.")?.strip_prefix(USER_PREFIX)?;
            Some((k.to_string(), v.clone()))
        })
        .collect();
    Ok(CheckpointInfo {
        config,
        state,
        fingerprint,
        metadata,
    })
}

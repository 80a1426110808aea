//! Training as a library: [`Trainer`] runs the loop that `nabla train` runs — shuffled
//! batches, the optimizer and learning-rate schedule, per-epoch evaluation, checkpoints every
//! N steps with bit-exact [`resume`](Trainer::resume), the NaN/∞ sentinel, gradient clipping,
//! early stopping and a stop flag for Ctrl-C — configured by a serialisable, versioned
//! [`TrainConfig`] and observed through [`Callback`]s.
//!
//! A checkpoint stores the configuration, the loop state ([`LoopState`], typed fields), a
//! [`DataFingerprint`](crate::data::DataFingerprint) of the training data, and the caller's
//! metadata, next to the model's and optimizer's tensors.

pub(crate) mod collective;
mod config;
mod divergence;
mod fit;
pub mod metrics;
mod resume;
mod sharded;
mod state;
mod trainer;

pub use collective::{BucketSink, Collective, ThreadGroup, ThreadRank};
pub use config::{EarlyStopping, LossKind, OptimizerConfig, TrainConfig, TRAIN_CONFIG_VERSION};
pub use metrics::{batch_loss, evaluate, Confusion, EpochMetrics, Evaluation};
pub use state::{read_checkpoint, CheckpointInfo, LoopState};
pub use trainer::{Callback, StepProgress, StepView, StopReason, Trainer};

//! [`Trainer`]: the training loop with progress callbacks, evaluation, checkpoints, exact
//! resume, the NaN/∞ sentinel, clipping, early stopping and interruption.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::collective::Collective;
use super::metrics::EpochMetrics;
use super::state::LoopState;
use super::{LossKind, TrainConfig};
use crate::autograd::GradStore;
use crate::data::{DataFingerprint, TaskData};
use crate::error::{Error, Result};
use crate::nn::{named_state, ModelSpec, Module};
use crate::optim::Optimizer;
use crate::tensor::shape::fmt_shape;

/// Progress after one optimizer step, for [`Callback::step`].
#[derive(Debug, Clone, PartialEq)]
pub struct StepProgress {
    /// Optimizer steps taken.
    pub step: u64,
    /// Current epoch (from 1) and the configured number.
    pub epoch: usize,
    /// Epochs configured.
    pub epochs: usize,
    /// Batches done in this epoch, and the epoch's number of batches.
    pub batch: usize,
    /// Batches in this epoch.
    pub batches: usize,
    /// Mean training loss so far in this epoch.
    pub loss: f64,
    /// Training accuracy so far in this epoch (classification).
    pub accuracy: Option<f64>,
    /// Training samples per second in this epoch.
    pub samples_per_second: f64,
}

/// What [`Callback::inspect_step`] sees after a step.
pub struct StepView<'a> {
    /// The progress, as given to [`Callback::step`].
    pub progress: &'a StepProgress,
    /// The model after the update.
    pub model: &'a dyn Module<f32>,
    /// The rows of the training set in this step's batch.
    pub batch: &'a [usize],
    /// The gradients of the step's loss (the sum over slices for sliced steps), keyed by the
    /// parameters, before clipping: the update used them times [`grad_scale`](Self::grad_scale).
    pub grads: &'a GradStore<f32>,
    /// The factor the update multiplied `grads` by: `max_norm / (norm + 1e-6)` where clipping
    /// by the global norm applied, else 1.
    pub grad_scale: f64,
}

impl StepView<'_> {
    /// The gradients the update applied: [`grads`](Self::grads) times
    /// [`grad_scale`](Self::grad_scale) (shared handles to the same tensors where the scale
    /// is 1, scaled copies otherwise).
    pub fn applied_grads(&self) -> Result<GradStore<f32>> {
        let mut out = GradStore::new();
        for (_, p) in self.model.named_parameters() {
            if let Some(g) = self.grads.get(&p) {
                let g = if self.grad_scale == 1.0 {
                    g.clone()
                } else {
                    g.detach().mul_scalar(self.grad_scale)?
                };
                out.insert(&p, g);
            }
        }
        Ok(out)
    }
}

/// Why [`Trainer::fit`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// All epochs ran.
    Finished,
    /// `max_steps` was reached.
    MaxSteps,
    /// The monitored loss stopped improving; the epoch of the best one.
    EarlyStopped {
        /// Epoch with the lowest monitored loss.
        best_epoch: usize,
    },
    /// [`Trainer::stop_handle`] was set: the current step finished, and a checkpoint was
    /// written when the trainer has a checkpoint path.
    Interrupted,
}

/// Hooks into the loop; every method has an empty default. `()` is the callback that does
/// nothing.
pub trait Callback {
    /// An epoch begins (`done` of its `batches` already ran before a resume).
    fn epoch_start(&mut self, _epoch: usize, _batches: usize, _done: usize) {}
    /// After every optimizer step.
    fn step(&mut self, _progress: &StepProgress) {}
    /// After every optimizer step (after [`Callback::step`]), with the model, the batch's rows
    /// and its gradients: for live views of training (weight and gradient norms, decision
    /// regions). Run the model under [`no_grad`](crate::no_grad). It is in training mode: if it
    /// has dropout, a forward pass here draws masks and so changes the rest of the run.
    fn inspect_step(&mut self, _view: &StepView<'_>) {}
    /// After an epoch's evaluation.
    fn epoch_end(&mut self, _metrics: &EpochMetrics) {}
    /// After a checkpoint was written.
    fn checkpoint(&mut self, _step: u64, _path: &Path) {}
}

impl Callback for () {}

/// Trains a model — the [`ModelSpec`] of a [`TrainConfig`] (an [`Mlp`](crate::nn::Mlp)'s,
/// a CNN's, any), or any [`Module`] given to [`Trainer::with_module`] — on [`TaskData`]:
/// shuffled batches, the optimizer and schedule, per-epoch evaluation on validation and test data, checkpoints every
/// `checkpoint_every` steps, bit-exact resume, a NaN/∞ sentinel that names the culprit,
/// gradient clipping, early stopping, and a stop flag for Ctrl-C.
///
/// ```
/// use nabla::data::{synthetic, TaskData};
/// use nabla::nn::MlpConfig;
/// use nabla::optim::AdamConfig;
/// use nabla::train::{OptimizerConfig, TrainConfig, Trainer};
///
/// let data = TaskData::Class(synthetic::spiral(100, 3, 0.1, 0).unwrap());
/// let (train, test) = data.split(0.2, 1).unwrap();
/// let mut config = TrainConfig::new(
///     MlpConfig::new(&[2, 32, 32, 3]),
///     OptimizerConfig::Adam(AdamConfig::adam(0.01)),
/// );
/// config.epochs = 30;
/// config.checkpoint_every = Some(50);
/// let ckpt = std::env::temp_dir().join("nabla_doc_trainer.safetensors");
///
/// let mut trainer = Trainer::new(config.clone(), train.clone())?
///     .with_test(test.clone())
///     .with_checkpoint(&ckpt);
/// trainer.fit(&mut ())?;                       // callbacks: () for none
/// let accuracy = trainer.history().last().unwrap().test_accuracy.unwrap();
/// assert!(accuracy > 0.6, "{accuracy}");
///
/// // Later, or in another process: continue from the checkpoint with more epochs.
/// config.epochs = 35;
/// let mut resumed = Trainer::new(config, train)?.with_test(test).with_checkpoint(&ckpt);
/// resumed.resume(&ckpt)?;                      // all-or-nothing; refuses other settings
/// resumed.fit(&mut ())?;
/// assert_eq!(resumed.history().len(), 35);
/// # Ok::<(), nabla::Error>(())
/// ```
pub struct Trainer {
    pub(super) config: TrainConfig,
    pub(super) model: Box<dyn Module<f32>>,
    pub(super) optimizer: Box<dyn Optimizer<f32>>,
    pub(super) train: TaskData,
    pub(super) val: Option<TaskData>,
    pub(super) test: Option<TaskData>,
    pub(super) checkpoint: Option<PathBuf>,
    pub(super) fingerprint: Option<DataFingerprint>,
    pub(super) metadata: BTreeMap<String, String>,
    pub(super) state: LoopState,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) last_checkpoint: Option<u64>,
    pub(super) collective: Option<Box<dyn Collective>>,
    /// The stop flag as every rank agreed at the last step (data-parallel runs).
    pub(super) stop_agreed: bool,
    /// Values per gradient bucket of a data-parallel exchange.
    pub(super) bucket_values: usize,
    /// The receive buffer of the last data-parallel exchange, reused.
    pub(super) exchange_buf: Vec<f32>,
}

impl Trainer {
    /// A trainer for `config` on `train`: builds the model of `config.model` (initial weights
    /// from its seed) and the optimizer. Errors name the setting that is invalid or does not
    /// fit the data (the model's input, its outputs, the loss for the task); a config without
    /// a model spec needs [`Trainer::with_module`].
    pub fn new(config: TrainConfig, train: TaskData) -> Result<Self> {
        let Some(spec) = &config.model else {
            return Err(Error::arg(
                "train config",
                "it has no model spec: build the model yourself and use Trainer::with_module",
            ));
        };
        config.validate()?;
        check_fits(&config, &train, "training")?;
        let model = Box::new(spec.build::<f32>()?);
        Self::assemble(config, model, train)
    }

    /// A trainer for a model built by the caller (any [`Module`]; it receives `[batch,
    /// features]` rows of the data and reshapes them itself if it needs to). When
    /// `config.model` is set it must describe this module (its parameters' names and shapes
    /// are compared) and is what checkpoints record; otherwise checkpoints record no model
    /// spec, and [`Trainer::resume`] needs the same module again.
    ///
    /// ```
    /// use nabla::data::{synthetic, TaskData};
    /// use nabla::nn::{Activation, Init, Linear, Sequential};
    /// use nabla::optim::AdamConfig;
    /// use nabla::train::{OptimizerConfig, TrainConfig, Trainer};
    /// use nabla::Rng;
    ///
    /// let data = TaskData::Class(synthetic::spiral(100, 3, 0.1, 0)?);
    /// let mut rng = Rng::new(0);
    /// let net = Sequential::<f32>::new()
    ///     .with(Linear::new(2, 32, true, Init::KaimingUniform, &mut rng)?)
    ///     .with(Activation::Tanh)
    ///     .with(Linear::new(32, 3, true, Init::XavierUniform, &mut rng)?);
    /// let mut config = TrainConfig::for_module(OptimizerConfig::Adam(AdamConfig::adam(0.02)));
    /// config.epochs = 20;
    /// let mut trainer = Trainer::with_module(config, Box::new(net), data)?;
    /// trainer.fit(&mut ())?;
    /// assert!(trainer.history().last().unwrap().train_accuracy.unwrap() > 0.6);
    /// # Ok::<(), nabla::Error>(())
    /// ```
    pub fn with_module(
        config: TrainConfig,
        mut model: Box<dyn Module<f32>>,
        train: TaskData,
    ) -> Result<Self> {
        config.validate()?;
        check_fits(&config, &train, "training")?;
        if let Some(spec) = &config.model {
            check_describes(spec, model.as_ref())?;
        }
        model.set_training(true);
        Self::assemble(config, model, train)
    }

    fn assemble(
        config: TrainConfig,
        mut model: Box<dyn Module<f32>>,
        train: TaskData,
    ) -> Result<Self> {
        if let Some(k) = config.checkpoint_activations {
            model.set_checkpoint_blocks(Some(k))?;
        }
        let optimizer = config.optimizer.build(model.named_parameters())?;
        let state = LoopState::start(config.seed);
        Ok(Trainer {
            config,
            model,
            optimizer,
            train,
            val: None,
            test: None,
            checkpoint: None,
            fingerprint: None,
            metadata: BTreeMap::new(),
            state,
            stop: Arc::new(AtomicBool::new(false)),
            last_checkpoint: None,
            collective: None,
            stop_agreed: false,
            bucket_values: super::sharded::BUCKET_VALUES,
            exchange_buf: Vec::new(),
        })
    }

    /// Evaluates on `val` after every epoch (and monitors it for early stopping); the test set
    /// is then evaluated only after the last epoch.
    pub fn with_validation(mut self, val: TaskData) -> Self {
        self.val = Some(val);
        self
    }

    /// Evaluates on `test` after every epoch (after the last one only, with validation data).
    pub fn with_test(mut self, test: TaskData) -> Self {
        self.test = Some(test);
        self
    }

    /// Writes checkpoints to `path` (atomically): every `checkpoint_every` steps, when
    /// interrupted, and at the end.
    pub fn with_checkpoint(mut self, path: impl AsRef<Path>) -> Self {
        self.checkpoint = Some(path.as_ref().to_path_buf());
        self
    }

    /// Records what the training data are; [`Trainer::resume`] refuses a checkpoint that
    /// records other data.
    pub fn with_fingerprint(mut self, fingerprint: DataFingerprint) -> Self {
        self.fingerprint = Some(fingerprint);
        self
    }

    /// Extra key/value pairs stored in every checkpoint (read them back with
    /// [`read_checkpoint`](super::read_checkpoint)).
    pub fn with_metadata(mut self, metadata: BTreeMap<String, String>) -> Self {
        self.metadata = metadata;
        self
    }

    /// Trains data-parallel with the other ranks of `group` (e.g. `nabla::dist::MpiWorld`,
    /// with the `mpi` feature, under `mpirun`, or a [`ThreadGroup`](super::ThreadGroup) rank):
    /// every rank starts from rank 0's weights, computes its share of the config's
    /// `grad_shards` slices of each global batch, and adds every slice's gradient in slice order, so the result does not
    /// depend on the number of ranks. Only rank 0 writes checkpoints; all ranks stop together
    /// (divergence, interruption). Errors unless `grad_shards` is a multiple of the size.
    pub fn with_collective(mut self, group: Box<dyn Collective>) -> Result<Self> {
        let size = group.size();
        match self.config.grad_shards {
            Some(m) if m % size == 0 => {}
            other => {
                return Err(Error::arg(
                    "train",
                    format!(
                        "{size} ranks need grad_shards to be a multiple of {size} (it is {other:?})"
                    ),
                ))
            }
        }
        self.collective = Some(group);
        self.broadcast_weights()?;
        Ok(self)
    }

    /// Data-parallel runs send each slice's gradients in buckets of about `values` numbers
    /// (default 65,536, i.e. 256 KiB), last layers first, each as soon as backward has
    /// finished its parameters, so the exchange overlaps the rest of backward. Smaller buckets
    /// start sooner, larger ones cost fewer messages; a parameter larger than `values` is a
    /// bucket of its own. The bucket size does not change the result (the slices are still
    /// added in slice order), only when the values travel. Errors when `values` is 0.
    pub fn with_bucket_values(mut self, values: usize) -> Result<Self> {
        if values == 0 {
            return Err(Error::arg(
                "train",
                "a gradient bucket needs at least one value",
            ));
        }
        self.bucket_values = values;
        Ok(self)
    }

    /// A flag that, once set (e.g. from a SIGINT handler), makes [`Trainer::fit`] stop after
    /// the current step with [`StopReason::Interrupted`].
    pub fn stop_handle(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// The model.
    pub fn model(&self) -> &dyn Module<f32> {
        self.model.as_ref()
    }

    /// The model, to change it (e.g. to load other weights before training).
    pub fn model_mut(&mut self) -> &mut dyn Module<f32> {
        self.model.as_mut()
    }

    /// The model, taken out of the trainer.
    pub fn into_model(self) -> Box<dyn Module<f32>> {
        self.model
    }

    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Every finished epoch's metrics.
    pub fn history(&self) -> &[EpochMetrics] {
        &self.state.history
    }

    /// Optimizer steps taken (across resumes).
    pub fn step(&self) -> u64 {
        self.state.step
    }

    /// The epoch in progress (or the next one), from 1.
    pub fn epoch(&self) -> usize {
        self.state.epoch
    }

    /// The step of the last checkpoint written or resumed from.
    pub fn last_checkpoint(&self) -> Option<u64> {
        self.last_checkpoint
    }
}

/// Checks that the model fits the data (its input and outputs, when the config has a model
/// spec) and that the loss fits the task.
pub(super) fn check_fits(config: &TrainConfig, data: &TaskData, what: &str) -> Result<()> {
    let bad = |m: String| Err(Error::arg("train", m));
    if let Some(spec) = &config.model {
        if spec.input_features() != data.features() {
            return bad(format!(
                "the model takes inputs of {} ({} values), the {what} data have {} features",
                fmt_shape(&spec.input),
                spec.input_features(),
                data.features()
            ));
        }
        let out = spec.output_shape(1)?;
        let want = match data {
            TaskData::Text(t) => vec![1, t.context, t.vocab],
            _ => vec![1, data.outputs()],
        };
        if out != want {
            return bad(format!(
                "the model's output is {}, the {what} data need {}",
                crate::nn::fmt_batch(&out),
                crate::nn::fmt_batch(&want)
            ));
        }
    }
    let categorical = matches!(data, TaskData::Class(_) | TaskData::Text(_));
    if (config.loss == LossKind::CrossEntropy) != categorical {
        return bad(format!(
            "the {} loss does not fit {} data",
            config.loss,
            super::metrics::task_name(data)
        ));
    }
    Ok(())
}

/// Ok when `model` has the parameters and buffers (names and shapes) that `spec` builds.
fn check_describes(spec: &ModelSpec, model: &dyn Module<f32>) -> Result<()> {
    let shapes = |v: Vec<(String, crate::tensor::Tensor<f32>)>| -> Vec<(String, Vec<usize>)> {
        v.into_iter()
            .map(|(n, t)| (n, t.shape().to_vec()))
            .collect()
    };
    let want = shapes(named_state(&spec.build::<f32>()?));
    let have = shapes(named_state(model));
    if want != have {
        let diff: Vec<String> = want
            .iter()
            .filter(|w| !have.contains(w))
            .map(|(n, s)| format!("{n} {}", fmt_shape(s)))
            .take(4)
            .collect();
        return Err(Error::Mismatch {
            what: "Trainer::with_module".into(),
            msg: format!(
                "the config's model spec does not describe the module ({} tensors against {}; \
                 the spec's {} are not in the module)",
                want.len(),
                have.len(),
                diff.join(", ")
            ),
        });
    }
    Ok(())
}

//! [`Trainer`]: the training loop with progress callbacks, evaluation, checkpoints, exact
//! resume, the NaN/∞ sentinel, clipping, early stopping and interruption.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::collective::Collective;
use super::metrics::{batch_loss, evaluate, EpochMetrics, Evaluation};
use super::state::LoopState;
use super::{LossKind, TrainConfig};
use crate::autograd::{detect_anomaly, Anomaly, GradStore};
use crate::data::{batch_indices, DataFingerprint, TaskData};
use crate::error::{Error, Result};
use crate::nn::loss::predict_class;
use crate::nn::{Mlp, Module};
use crate::optim::{clip_grad_norm, Optimizer};
use crate::rng::Rng;
use crate::tensor::Tensor;

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
    pub model: &'a Mlp<f32>,
    /// The rows of the training set in this step's batch.
    pub batch: &'a [usize],
    /// The gradients the update used (after clipping; the sum over slices for sliced steps),
    /// keyed by the parameters.
    pub grads: &'a GradStore<f32>,
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

/// Trains an [`Mlp`] from a [`TrainConfig`] on [`TaskData`]: shuffled batches, the optimizer
/// and schedule, per-epoch evaluation on validation and test data, checkpoints every
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
    config: TrainConfig,
    model: Mlp<f32>,
    optimizer: Box<dyn Optimizer<f32>>,
    train: TaskData,
    val: Option<TaskData>,
    test: Option<TaskData>,
    checkpoint: Option<PathBuf>,
    fingerprint: Option<DataFingerprint>,
    metadata: BTreeMap<String, String>,
    state: LoopState,
    stop: Arc<AtomicBool>,
    last_checkpoint: Option<u64>,
    collective: Option<Box<dyn Collective>>,
    /// The stop flag as every rank agreed at the last step (data-parallel runs).
    stop_agreed: bool,
    /// Values per gradient bucket of a data-parallel exchange.
    bucket_values: usize,
    /// The receive buffer of the last data-parallel exchange, reused.
    exchange_buf: Vec<f32>,
}

impl Trainer {
    /// A trainer for `config` on `train`: builds the model (initial weights from
    /// `config.model.seed`) and the optimizer. Errors name the setting that is invalid or does
    /// not fit the data (the model's input width, its outputs, the loss for the task).
    pub fn new(config: TrainConfig, train: TaskData) -> Result<Self> {
        config.validate()?;
        check_fits(&config, &train, "training")?;
        let mut model = Mlp::<f32>::new(&config.model)?;
        if let Some(k) = config.checkpoint_activations {
            model.set_checkpoint_every(Some(k))?;
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
            bucket_values: sharded::BUCKET_VALUES,
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

    /// Trains data-parallel with the other ranks of `group` (e.g. [`crate::dist::MpiWorld`]
    /// under `mpirun`, or a [`ThreadGroup`](super::ThreadGroup) rank): every rank starts
    /// from rank 0's weights, computes its share of the config's `grad_shards` slices of each
    /// global batch, and adds every slice's gradient in slice order, so the result does not
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
    pub fn model(&self) -> &Mlp<f32> {
        &self.model
    }

    /// The model, to change it (e.g. to load other weights before training).
    pub fn model_mut(&mut self) -> &mut Mlp<f32> {
        &mut self.model
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

    /// Continues from a checkpoint written by a trainer with the same configuration (except
    /// [`TrainConfig::RESUMABLE_CHANGES`]) on the same data (when fingerprints are set).
    /// Everything is checked before anything changes: on an error the trainer is as it was.
    pub fn resume(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let saved = super::read_checkpoint(path)?;
        self.config
            .check_resumable_from(&saved.config)
            .map_err(|e| Error::Mismatch {
                what: path.display().to_string(),
                msg: e.to_string(),
            })?;
        if let (Some(now), Some(then)) = (&self.fingerprint, &saved.fingerprint) {
            now.check_same(then, &path.display().to_string())?;
        }
        crate::io::load_training_state(path, &mut self.model, self.optimizer.as_mut())?;
        self.state = saved.state;
        self.last_checkpoint = Some(self.state.step);
        Ok(())
    }

    /// Trains until the configured epochs or steps are done, early stopping triggers, or the
    /// stop flag is set. Divergence (a non-finite loss or gradient) is an error naming the
    /// step, the first operation that produced a non-finite value, any non-finite parameters
    /// and the last good checkpoint.
    pub fn fit(&mut self, callback: &mut dyn Callback) -> Result<StopReason> {
        let n = self.train.len();
        if n == 0 {
            return Err(Error::arg("train", "the training set is empty"));
        }
        let total = self.config.total_steps(n);
        let session = Instant::now();
        let before = self.state.total_seconds;
        let clock = move || before + session.elapsed().as_secs_f64();
        if let Some(best_epoch) = self.already_stopped_early() {
            return Ok(StopReason::EarlyStopped { best_epoch });
        }
        // An epoch whose last step ran before a checkpoint still needs its evaluation.
        while self.state.epoch <= self.config.epochs
            && (self.state.step < total || self.state.seen > 0)
        {
            if let Some(reason) = self.run_epoch(total, &clock, callback)? {
                if reason == StopReason::Interrupted {
                    return Ok(reason);
                }
                self.final_checkpoint(&clock, callback)?;
                return Ok(reason);
            }
        }
        self.model.set_training(false);
        self.final_checkpoint(&clock, callback)?;
        Ok(
            if self.state.step >= total && self.config.max_steps.is_some_and(|m| m == total) {
                StopReason::MaxSteps
            } else {
                StopReason::Finished
            },
        )
    }

    fn final_checkpoint(&mut self, clock: &dyn Fn() -> f64, cb: &mut dyn Callback) -> Result<()> {
        if self.checkpoint.is_some() && self.last_checkpoint != Some(self.state.step) {
            self.state.total_seconds = clock();
            self.save_checkpoint(cb)?;
        }
        Ok(())
    }

    /// One epoch (or its rest after a resume); `Some` when the loop must stop.
    fn run_epoch(
        &mut self,
        total: u64,
        clock: &dyn Fn() -> f64,
        cb: &mut dyn Callback,
    ) -> Result<Option<StopReason>> {
        self.model.set_training(true);
        let mut rng = Rng::from_state(self.state.epoch_rng);
        let batches = batch_indices(
            self.train.len(),
            self.config.batch_size,
            Some(&mut rng),
            false,
        )?;
        cb.epoch_start(self.state.epoch, batches.len(), self.state.batch);
        let started = Instant::now();
        let epoch_before = self.state.epoch_seconds;
        let epoch_clock = || epoch_before + started.elapsed().as_secs_f64();
        for idx in batches.iter().skip(self.state.batch) {
            if self.state.step >= total {
                break;
            }
            // The other threads stay awake through the step's parallel parts (no futex wake-up
            // per product), but not through callbacks, which may wait for a person; nor where
            // ranks share the cores with the collective's transfers.
            let warm = self.collective.is_none();
            let grads = crate::threads::warm_if(warm, || match self.config.grad_shards {
                Some(m) => self.sharded_step(idx, m),
                None => self.train_step(idx),
            })?;
            self.state.batch += 1;
            let progress = self.progress(batches.len(), epoch_clock());
            cb.step(&progress);
            cb.inspect_step(&StepView {
                progress: &progress,
                model: &self.model,
                batch: idx,
                grads: &grads,
            });
            let due = self
                .config
                .checkpoint_every
                .is_some_and(|k| self.state.step.is_multiple_of(k));
            let stop = if self.collective.is_some() {
                self.stop_agreed
            } else {
                self.stop.load(Ordering::SeqCst)
            };
            if self.checkpoint.is_some() && (due || stop) {
                (self.state.epoch_seconds, self.state.total_seconds) = (epoch_clock(), clock());
                self.save_checkpoint(cb)?;
            }
            if stop {
                return Ok(Some(StopReason::Interrupted));
            }
        }
        if self.state.seen == 0 {
            return Ok(Some(StopReason::Finished));
        }
        let epoch_seconds = epoch_clock();
        self.model.set_training(false);
        let row = self.end_epoch(total, epoch_seconds, clock)?;
        cb.epoch_end(&row);
        self.state.history.push(row);
        self.state.next_epoch(rng.state());
        let stop = self.early_stop();
        if stop.is_some() {
            self.test_after_early_stop()?;
        }
        Ok(stop)
    }

    fn progress(&self, batches: usize, seconds: f64) -> StepProgress {
        let s = &self.state;
        StepProgress {
            step: s.step,
            epoch: s.epoch,
            epochs: self.config.epochs,
            batch: s.batch,
            batches,
            loss: s.loss_sum / s.seen.max(1) as f64,
            accuracy: self
                .train
                .is_classification()
                .then(|| s.correct as f64 / s.seen.max(1) as f64),
            samples_per_second: s.seen as f64 / seconds.max(1e-9),
        }
    }

    /// Forward, sentinel, backward, clipping and the update for the rows `idx`; the gradients
    /// the update used.
    fn train_step(&mut self, idx: &[usize]) -> Result<GradStore<f32>> {
        let base = self.config.optimizer.lr();
        self.optimizer
            .set_lr(self.config.schedule.lr_at(base, self.state.step));
        let (out, loss) = if self.config.detect_anomaly {
            let (r, anomaly) = detect_anomaly(|| self.forward(idx));
            if let Some(a) = anomaly {
                return Err(self.diverged("an operation produced a non-finite value", Some(a)));
            }
            r?
        } else {
            self.forward(idx)?
        };
        let lv = loss.item()? as f64;
        if !lv.is_finite() {
            // Re-run this batch with every op checked, to name the first culprit.
            let (_, anomaly) = detect_anomaly(|| self.forward(idx));
            return Err(self.diverged(&format!("the loss is {lv}"), anomaly));
        }
        let mut grads = loss.backward()?;
        for (name, p) in self.optimizer.params() {
            if grads.get(p).is_some_and(|g| !g.all_finite()) {
                let what = format!("the gradient of {name} is not finite (loss {lv})");
                return Err(self.diverged(&what, None));
            }
        }
        if let Some(c) = self.config.clip {
            clip_grad_norm(&mut grads, &self.model.parameters(), c)?;
        }
        self.optimizer.step(&grads)?;
        let s = &mut self.state;
        s.step += 1;
        s.loss_sum += lv * idx.len() as f64;
        s.seen += idx.len();
        if let TaskData::Class(c) = &self.train {
            let pred = predict_class(&out.detach())?;
            s.correct += pred
                .iter()
                .zip(idx)
                .filter(|(p, &i)| **p == c.labels[i])
                .count();
        }
        Ok(grads)
    }

    fn forward(&self, idx: &[usize]) -> Result<(Tensor<f32>, Tensor<f32>)> {
        let x = self.train.x().index_select(0, idx)?;
        let out = self.model.forward(&x)?;
        let loss = batch_loss(
            self.config.loss,
            &out,
            &self.train,
            idx,
            self.config.label_smoothing,
        )?;
        Ok((out, loss))
    }

    /// Evaluates and builds the epoch's record.
    fn end_epoch(
        &mut self,
        total: u64,
        epoch_seconds: f64,
        clock: &dyn Fn() -> f64,
    ) -> Result<EpochMetrics> {
        let last = self.state.epoch == self.config.epochs || self.state.step >= total;
        let kind = self.config.loss;
        let eval = |d: &Option<TaskData>| -> Result<Option<Evaluation>> {
            match d {
                Some(d) if !d.is_empty() => Ok(Some(evaluate(&self.model, d, kind)?)),
                _ => Ok(None),
            }
        };
        let val = eval(&self.val)?;
        // With a validation set the test set is looked at once, at the end.
        let test = if self.val.is_none() || last {
            eval(&self.test)?
        } else {
            None
        };
        let s = &self.state;
        Ok(EpochMetrics {
            epoch: s.epoch,
            step: s.step,
            lr: self.optimizer.lr(),
            train_loss: s.loss_sum / s.seen as f64,
            train_accuracy: self
                .train
                .is_classification()
                .then(|| s.correct as f64 / s.seen as f64),
            val_loss: val.as_ref().map(|e| e.loss),
            val_accuracy: val.as_ref().and_then(|e| e.accuracy),
            test_loss: test.as_ref().map(|e| e.loss),
            test_accuracy: test.as_ref().and_then(|e| e.accuracy),
            seconds: clock(),
            samples_per_second: s.seen as f64 / epoch_seconds.max(1e-9),
        })
    }

    /// A resumed run that had already stopped early: its best epoch.
    fn already_stopped_early(&self) -> Option<usize> {
        let rule = self.config.early_stopping.as_ref()?;
        let s = &self.state;
        (s.stale_epochs >= rule.patience).then(|| s.best.map_or(s.epoch, |b| b.1))
    }

    /// With a validation set the test set waits for the last epoch; early stopping makes the
    /// epoch just finished the last one.
    fn test_after_early_stop(&mut self) -> Result<()> {
        let (Some(test), true) = (&self.test, self.val.is_some()) else {
            return Ok(());
        };
        if test.is_empty()
            || self
                .state
                .history
                .last()
                .is_some_and(|r| r.test_loss.is_some())
        {
            return Ok(());
        }
        let e = evaluate(&self.model, test, self.config.loss)?;
        if let Some(row) = self.state.history.last_mut() {
            row.test_loss = Some(e.loss);
            row.test_accuracy = e.accuracy;
        }
        Ok(())
    }

    /// Updates the early-stopping record with the last epoch; `Some` when it says stop.
    fn early_stop(&mut self) -> Option<StopReason> {
        let rule = self.config.early_stopping.as_ref()?;
        let row = self.state.history.last()?;
        let (monitored, epoch) = (row.val_loss.or(row.test_loss)?, row.epoch);
        let s = &mut self.state;
        match s.best {
            Some((best, _)) if monitored > best - rule.min_delta => s.stale_epochs += 1,
            _ => {
                s.best = Some((monitored, epoch));
                s.stale_epochs = 0;
            }
        }
        (s.stale_epochs >= rule.patience).then(|| StopReason::EarlyStopped {
            best_epoch: s.best.map_or(epoch, |b| b.1),
        })
    }

    fn save_checkpoint(&mut self, cb: &mut dyn Callback) -> Result<()> {
        let Some(path) = self.checkpoint.clone() else {
            return Ok(());
        };
        if self.collective.as_ref().is_some_and(|c| c.rank() != 0) {
            self.last_checkpoint = Some(self.state.step); // rank 0 writes it
            return Ok(());
        }
        super::state::save(
            &path,
            &self.model,
            self.optimizer.as_ref(),
            &self.config,
            &self.state,
            self.fingerprint.as_ref(),
            &self.metadata,
        )?;
        self.last_checkpoint = Some(self.state.step);
        cb.checkpoint(self.state.step, &path);
        Ok(())
    }

    fn diverged(&self, what: &str, anomaly: Option<Anomaly>) -> Error {
        let (step, epoch) = (self.state.step, self.state.epoch);
        let mut culprit = match anomaly {
            Some(a) => format!("; first non-finite value in forward order: {a}"),
            None => String::new(),
        };
        let bad_params = non_finite_parameters(&self.model.named_parameters());
        culprit += &bad_params;
        let kept = match (self.last_checkpoint, &self.checkpoint) {
            (Some(s), Some(p)) if s == step && !bad_params.is_empty() => {
                format!(
                    "; the checkpoint of step {s}, {}, already holds them",
                    p.display()
                )
            }
            (Some(s), Some(p)) => {
                format!("; the last good checkpoint (step {s}) is {}", p.display())
            }
            _ => String::new(),
        };
        Error::Diverged {
            msg: format!(
                "training diverged at step {step} (epoch {epoch}): {what}{culprit}{kept}; \
                 try a smaller learning rate or gradient clipping"
            ),
        }
    }
}

#[path = "sharded.rs"]
mod sharded;

/// Checks that the model fits the data: input width, outputs, and the loss for the task.
pub(super) fn check_fits(config: &TrainConfig, data: &TaskData, what: &str) -> Result<()> {
    let sizes = &config.model.sizes;
    let bad = |m: String| Err(Error::arg("train", m));
    if sizes.first() != Some(&data.features()) {
        return bad(format!(
            "the model takes {:?} inputs, the {what} data have {} features",
            sizes.first(),
            data.features()
        ));
    }
    if sizes.last() != Some(&data.outputs()) {
        return bad(format!(
            "the model has {:?} outputs, the {what} data need {}",
            sizes.last(),
            data.outputs()
        ));
    }
    if (config.loss == LossKind::CrossEntropy) != data.is_classification() {
        return bad(format!(
            "the {} loss does not fit {} data",
            config.loss,
            super::metrics::task_name(data)
        ));
    }
    Ok(())
}

/// Parameters holding NaN or ±∞, with how many of their values.
fn non_finite_parameters(params: &[(String, Tensor<f32>)]) -> String {
    let bad: Vec<String> = params
        .iter()
        .filter(|(_, p)| !p.all_finite())
        .map(|(name, p)| {
            let values = p.to_vec().unwrap_or_default();
            let n = values.iter().filter(|v| !v.is_finite()).count();
            format!("{name} {:?} ({n} of {})", p.shape(), p.numel())
        })
        .collect();
    if bad.is_empty() {
        String::new()
    } else {
        format!("; non-finite parameters: {}", bad.join(", "))
    }
}

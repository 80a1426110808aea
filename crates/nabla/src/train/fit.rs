//! The loop: epochs of shuffled batches, each step's forward pass, sentinel, backward pass,
//! clipping and update, the per-epoch evaluation and early stopping.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::metrics::{batch_loss, evaluate, EpochMetrics, Evaluation};
use super::{Callback, StepProgress, StepView, StopReason, Trainer};
use crate::autograd::{detect_anomaly, GradStore};
use crate::data::{batch_indices, TaskData};
use crate::error::{Error, Result};
use crate::nn::loss::predict_class;
use crate::optim::{clip_scale, grad_norm};
use crate::profile::span;
use crate::rng::Rng;
use crate::tensor::Tensor;

impl Trainer {
    /// Trains until the configured epochs or steps are done, early stopping triggers, or the
    /// stop flag is set. Divergence (a non-finite loss or gradient) is an error naming the
    /// step, the first operation that produced a non-finite value, any non-finite parameters
    /// and the last good checkpoint. However it ends, the model is left in evaluation mode
    /// (no dropout; batch norm's running statistics): ready to evaluate, predict or sample.
    pub fn fit(&mut self, callback: &mut dyn Callback) -> Result<StopReason> {
        let ended = self.fit_loop(callback);
        self.model.set_training(false);
        ended
    }

    /// [`Trainer::fit`]'s loop.
    fn fit_loop(&mut self, callback: &mut dyn Callback) -> Result<StopReason> {
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
        Ok(self.end_reason(total))
    }

    /// Why a run that ran out of steps or epochs stopped.
    fn end_reason(&self, total: u64) -> StopReason {
        if self.state.step >= total && self.config.max_steps.is_some_and(|m| m == total) {
            StopReason::MaxSteps
        } else {
            StopReason::Finished
        }
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
        // Seconds of the current row: the epoch, or the steps since the last evaluation.
        let (mut started, mut before) = (Instant::now(), self.state.epoch_seconds);
        let row_clock = |started: &Instant, before: f64| before + started.elapsed().as_secs_f64();
        for idx in batches.iter().skip(self.state.batch) {
            if self.state.step >= total {
                break;
            }
            // The other threads stay awake through the step's parallel parts (no futex wake-up
            // per product), but not through callbacks, which may wait for a person; nor where
            // ranks share the cores with the collective's transfers.
            let warm = self.collective.is_none();
            let (grads, grad_scale) =
                crate::threads::warm_if(warm, || match self.config.grad_shards {
                    Some(m) => self.sharded_step(idx, m),
                    None => self.train_step(idx),
                })?;
            self.state.batch += 1;
            let progress = self.progress(batches.len(), row_clock(&started, before));
            span("callbacks", || {
                cb.step(&progress);
                cb.inspect_step(&StepView {
                    progress: &progress,
                    model: self.model.as_ref(),
                    batch: idx,
                    grads: &grads,
                    grad_scale,
                })
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
            let eval_due = self
                .config
                .eval_every
                .is_some_and(|k| self.state.step.is_multiple_of(k));
            if eval_due && self.state.batch < batches.len() {
                // A row within the epoch; the next one counts from here. At the run's last
                // step it is the last row (and saved with the last checkpoint, so a resumed
                // run has it as a run straight through would).
                let last = (self.state.step >= total).then_some(total);
                let row = self.end_epoch(last, row_clock(&started, before), clock)?;
                cb.epoch_end(&row);
                self.state.history.push(row);
                (self.state.loss_sum, self.state.correct, self.state.seen) = (0.0, 0, 0);
                (started, before) = (Instant::now(), 0.0);
                self.model.set_training(true);
            }
            if self.checkpoint.is_some() && (due || stop) {
                let row_seconds = row_clock(&started, before);
                (self.state.epoch_seconds, self.state.total_seconds) = (row_seconds, clock());
                span("checkpoint", || self.save_checkpoint(cb))?;
            }
            if stop {
                return Ok(Some(StopReason::Interrupted));
            }
        }
        if self.state.seen == 0 {
            // Nothing since the last row: a resumed epoch that had ended, or a run whose last
            // step was also an evaluation step.
            return Ok(Some(self.end_reason(total)));
        }
        let epoch_seconds = row_clock(&started, before);
        let row = self.end_epoch(Some(total), epoch_seconds, clock)?;
        cb.epoch_end(&row);
        self.state.history.push(row);
        self.state.next_epoch(rng.state());
        let stop = self.early_stop();
        if stop.is_some() {
            span("evaluation", || self.test_after_early_stop())?;
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
    /// and the factor the update multiplied them by (clipping; 1 without).
    fn train_step(&mut self, idx: &[usize]) -> Result<(GradStore<f32>, f64)> {
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
        let grads = loss.backward()?;
        // With clipping, a finite global norm proves every gradient finite: one pass over
        // them instead of two.
        let params = self.config.clip.map(|_| self.model.parameters());
        let norm = match &params {
            Some(params) => Some(span("clip", || grad_norm(&grads, params))?),
            None => None,
        };
        if !norm.is_some_and(f64::is_finite) {
            let bad = span("finite check", || {
                let params = self.optimizer.params();
                params
                    .iter()
                    .find(|(_, p)| grads.get(p).is_some_and(|g| !g.all_finite()))
                    .map(|(name, _)| name.clone())
            });
            if let Some(name) = bad {
                let what = format!("the gradient of {name} is not finite (loss {lv})");
                return Err(self.diverged(&what, None));
            }
        }
        // Clipping scales the gradients inside the update (one pass over them fewer).
        let scale = match (self.config.clip, norm) {
            (Some(c), Some(norm)) => clip_scale(c, norm),
            _ => 1.0,
        };
        span("optimizer", || self.optimizer.step_scaled(&grads, scale))?;
        let s = &mut self.state;
        s.step += 1;
        s.loss_sum += lv * idx.len() as f64;
        s.seen += idx.len();
        if let TaskData::Class(c) = &self.train {
            let pred = span("accuracy", || predict_class(&out.detach()))?;
            s.correct += pred
                .iter()
                .zip(idx)
                .filter(|(p, &i)| **p == c.labels[i])
                .count();
        }
        Ok((grads, scale))
    }

    pub(super) fn forward(&self, idx: &[usize]) -> Result<(Tensor<f32>, Tensor<f32>)> {
        let mut x = span("batch rows", || self.train.rows(idx))?;
        if self.config.hflip {
            x = self.flipped(x, idx)?;
        }
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

    /// `x` (the rows `idx` of the training set) with each image mirrored left to right with
    /// probability ½, drawn from the seed, the step and the row — not from the rank or the
    /// slice, so sliced and resumed runs flip the same images.
    fn flipped(&self, x: Tensor<f32>, idx: &[usize]) -> Result<Tensor<f32>> {
        let w = match self.config.model.as_ref().map(|m| &m.input[..]) {
            Some([_, _, w]) => *w,
            _ => {
                return Err(Error::arg(
                    "train",
                    "hflip needs a model spec whose input is an image [C, H, W]",
                ))
            }
        };
        let d = x.shape()[1];
        let mut data = x.to_vec()?;
        let step = self
            .state
            .step
            .wrapping_add(1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for (row, &i) in data.chunks_mut(d).zip(idx) {
            let mut rng = Rng::new(
                self.config.seed
                    ^ 0x0F11_F11F
                    ^ step
                    ^ (i as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93),
            );
            if rng.uniform() < 0.5 {
                row.chunks_mut(w).for_each(<[f32]>::reverse);
            }
        }
        Tensor::from_vec(data, x.shape())
    }

    /// Evaluates and builds the record of the epoch (`total`: the run's steps) or, with
    /// `None`, of the steps since the last row within an epoch.
    fn end_epoch(
        &mut self,
        total: Option<u64>,
        epoch_seconds: f64,
        clock: &dyn Fn() -> f64,
    ) -> Result<EpochMetrics> {
        // Evaluation mode for the validation and test passes: no dropout, batch norm's running
        // statistics used and left alone — also for a row within an epoch (`eval_every`),
        // after which the caller puts the model back in training mode.
        self.model.set_training(false);
        let last =
            total.is_some_and(|t| self.state.epoch == self.config.epochs || self.state.step >= t);
        let kind = self.config.loss;
        let eval = |d: &Option<TaskData>| -> Result<Option<Evaluation>> {
            match d {
                Some(d) if !d.is_empty() => Ok(Some(evaluate(self.model.as_ref(), d, kind)?)),
                _ => Ok(None),
            }
        };
        let val = span("evaluation", || eval(&self.val))?;
        // With a validation set the test set is looked at once, at the end.
        let test = if self.val.is_none() || last {
            span("evaluation", || eval(&self.test))?
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
        let e = evaluate(self.model.as_ref(), test, self.config.loss)?;
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
}

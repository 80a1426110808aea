//! Checkpointing and exact resume: the checkpoint written every N steps, when interrupted and
//! at the end, and [`Trainer::resume`], all or nothing.

use std::path::Path;

use super::{Callback, Trainer};
use crate::error::{Error, Result};

impl Trainer {
    /// Continues from a checkpoint written by a trainer with the same configuration (except
    /// [`crate::train::TrainConfig::RESUMABLE_CHANGES`]) on the same data (when fingerprints are set).
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
        crate::io::load_training_state(path, self.model.as_mut(), self.optimizer.as_mut())?;
        self.state = saved.state;
        self.last_checkpoint = Some(self.state.step);
        // Loading restores the base learning rate as the live one; the uninterrupted run has
        // the schedule's rate of its last step there (an epoch resumed after its last step
        // reports it in its row before taking any step).
        if let Some(last) = self.state.step.checked_sub(1) {
            let base = self.config.optimizer.lr();
            self.optimizer
                .set_lr(self.config.schedule.lr_at(base, last));
        }
        Ok(())
    }

    pub(super) fn final_checkpoint(
        &mut self,
        clock: &dyn Fn() -> f64,
        cb: &mut dyn Callback,
    ) -> Result<()> {
        if self.checkpoint.is_some() && self.last_checkpoint != Some(self.state.step) {
            self.state.total_seconds = clock();
            self.save_checkpoint(cb)?;
        }
        Ok(())
    }

    pub(super) fn save_checkpoint(&mut self, cb: &mut dyn Callback) -> Result<()> {
        let Some(path) = self.checkpoint.clone() else {
            return Ok(());
        };
        if self.collective.as_ref().is_some_and(|c| c.rank() != 0) {
            self.last_checkpoint = Some(self.state.step); // rank 0 writes it
            return Ok(());
        }
        super::state::save(
            &path,
            self.model.as_ref(),
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
}

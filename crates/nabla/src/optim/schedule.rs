//! Learning-rate schedules: a pure function of the step, so resuming at step k continues
//! exactly.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The learning rate as a function of the step (counted from 0) and a base rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// Always the base rate.
    Constant,
    /// `base · gamma^⌊step / every⌋`.
    Step {
        /// Steps between decays.
        every: u64,
        /// Factor per decay.
        gamma: f64,
    },
    /// Cosine annealing from `base` to `min_lr` over `total` steps, then `min_lr`.
    Cosine {
        /// Length of the schedule in steps.
        total: u64,
        /// Final rate.
        min_lr: f64,
    },
    /// Linear warm-up from `base/steps` to `base` over `steps` steps, then `then` (with its
    /// step count starting after the warm-up).
    Warmup {
        /// Warm-up length.
        steps: u64,
        /// The schedule after warm-up.
        then: Box<LrSchedule>,
    },
}

impl LrSchedule {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::arg("lr schedule", m));
        match self {
            LrSchedule::Constant => Ok(()),
            LrSchedule::Step { every, gamma } => {
                if *every == 0 || !(gamma.is_finite() && *gamma > 0.0) {
                    bad(format!(
                        "step every {every} gamma {gamma}: need every ≥ 1, gamma > 0"
                    ))
                } else {
                    Ok(())
                }
            }
            LrSchedule::Cosine { total, min_lr } => {
                if *total == 0 || !(min_lr.is_finite() && *min_lr >= 0.0) {
                    bad(format!(
                        "cosine total {total} min {min_lr}: need total ≥ 1, min ≥ 0"
                    ))
                } else {
                    Ok(())
                }
            }
            LrSchedule::Warmup { steps, then } => {
                if *steps == 0 {
                    bad("warm-up of 0 steps".into())
                } else {
                    then.validate()
                }
            }
        }
    }

    /// The rate at `step` for base rate `base`.
    pub fn lr_at(&self, base: f64, step: u64) -> f64 {
        match self {
            LrSchedule::Constant => base,
            LrSchedule::Step { every, gamma } => {
                base * gamma.powi((step / (*every).max(1)).min(i32::MAX as u64) as i32)
            }
            LrSchedule::Cosine { total, min_lr } => {
                let frac = step.min(*total) as f64 / (*total).max(1) as f64;
                min_lr + (base - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * frac).cos())
            }
            LrSchedule::Warmup { steps, then } => {
                if step < *steps {
                    base * (step + 1) as f64 / *steps as f64
                } else {
                    then.lr_at(base, step - steps)
                }
            }
        }
    }
}

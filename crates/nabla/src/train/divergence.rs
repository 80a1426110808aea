//! Divergence: the error that names the step, the first operation that produced a non-finite
//! value (with its layer's name), any non-finite parameters and the last good checkpoint.

use super::Trainer;
use crate::autograd::Anomaly;
use crate::error::Error;
use crate::tensor::Tensor;

impl Trainer {
    pub(super) fn diverged(&self, what: &str, anomaly: Option<Anomaly>) -> Error {
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

//! Gradient clipping by global norm.

use crate::autograd::GradStore;
use crate::error::{Error, Result};
use crate::tensor::kernels::rows::lane_sum;
use crate::tensor::{Float, Tensor};

/// Scales the gradients of `params` so that their global L2 norm is at most `max_norm`, and
/// returns the norm before clipping. Gradients are replaced by scaled copies (gradients in a
/// store may share storage, so they are never scaled in place).
pub fn clip_grad_norm<T: Float>(
    grads: &mut GradStore<T>,
    params: &[Tensor<T>],
    max_norm: f64,
) -> Result<f64> {
    if !(max_norm > 0.0 && max_norm.is_finite()) {
        return Err(Error::arg(
            "clip_grad_norm",
            format!("max norm {max_norm} must be finite and > 0"),
        ));
    }
    let mut sq = 0.0f64;
    for p in params {
        if let Some(g) = grads.get(p) {
            // Eight interleaved f64 sums (one running sum was a chain of 806,528 dependent
            // additions, ~4% of a baby-GPT step): a fixed order on every thread count and tier.
            let d = g.data()?;
            sq += crate::isa::vectorized(|| lane_sum(&d, |v, _| v.to_f64() * v.to_f64()));
        }
    }
    let norm = sq.sqrt();
    if norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for p in params {
            if let Some(g) = grads.get(p) {
                let scaled = g.detach().mul_scalar(scale)?;
                grads.insert(p, scaled);
            }
        }
    }
    Ok(norm)
}

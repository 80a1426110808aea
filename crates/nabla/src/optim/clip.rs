//! Gradient clipping by global norm.

use crate::autograd::GradStore;
use crate::error::{Error, Result};
use crate::tensor::{Float, Tensor};

/// Scales the gradients of `params` so that their global L2 norm is at most `max_norm`, and
/// returns the norm before clipping. A gradient that nothing else holds (as `backward`'s are)
/// is scaled in place; one that is shared or carries a graph is replaced by a scaled copy.
///
/// ```
/// use nabla::{optim::clip_grad_norm, Tensor};
/// let w = Tensor::<f64>::from_vec(vec![3.0, 4.0], &[2]).unwrap().requires_grad();
/// let mut grads = w.square().unwrap().sum_all().unwrap().backward().unwrap(); // 2w = [6, 8]
/// assert_eq!(clip_grad_norm(&mut grads, &[w.clone()], 5.0).unwrap(), 10.0);
/// let g = grads.get(&w).unwrap().to_vec().unwrap();
/// assert!((g[0] - 3.0).abs() < 1e-6 && (g[1] - 4.0).abs() < 1e-6);
/// ```
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
    let norm = grad_norm(grads, params)?;
    scale_to_norm(grads, params, max_norm, norm)?;
    Ok(norm)
}

/// The global L2 norm of the gradients of `params` that `grads` holds (a parameter listed
/// twice counts twice), summed in f64 in a fixed order.
///
/// ```
/// use nabla::{optim::grad_norm, Tensor};
/// let w = Tensor::<f32>::from_vec(vec![3.0, 4.0], &[2]).unwrap().requires_grad();
/// let grads = w.sum_all().unwrap().backward().unwrap(); // ones
/// assert_eq!(grad_norm(&grads, &[w]).unwrap(), 2f64.sqrt());
/// ```
pub fn grad_norm<T: Float>(grads: &GradStore<T>, params: &[Tensor<T>]) -> Result<f64> {
    use rayon::prelude::*;
    let sum = |p: &Tensor<T>| -> Result<f64> {
        match grads.get(p) {
            Some(g) => {
                let d = g.data()?;
                Ok(crate::isa::vectorized(
                    #[inline(always)]
                    || sum_squares(&d),
                ))
            }
            None => Ok(0.0),
        }
    };
    // Each parameter's sum on whichever thread, the sums then added in parameter order: the
    // same bits on any thread count (one thread read them all: ~3% of a baby-GPT step).
    let sums: Vec<f64> = if crate::tensor::kernels::threads() >= 2 && params.len() > 1 {
        params.par_iter().map(sum).collect::<Result<_>>()?
    } else {
        params.iter().map(sum).collect::<Result<_>>()?
    };
    // From +0 in parameter order (`Iterator::sum` starts floats at −0: an empty list's norm
    // would be −0).
    Ok(sums.iter().fold(0.0, |a, b| a + b).sqrt())
}

/// The factor [`clip_grad_norm`] scales gradients of global norm `norm` by:
/// `max_norm / (norm + 1e-6)` above `max_norm`, else 1.
pub(crate) fn clip_scale(max_norm: f64, norm: f64) -> f64 {
    if norm > max_norm {
        max_norm / (norm + 1e-6)
    } else {
        1.0
    }
}

/// [`clip_grad_norm`]'s scaling, given the `norm` [`grad_norm`] computed (`max_norm` checked
/// by the caller).
fn scale_to_norm<T: Float>(
    grads: &mut GradStore<T>,
    params: &[Tensor<T>],
    max_norm: f64,
    norm: f64,
) -> Result<()> {
    let scale = clip_scale(max_norm, norm);
    if scale != 1.0 {
        for p in params {
            if let Some(g) = grads.remove(p) {
                grads.insert(p, g.scaled_owned(scale)?);
            }
        }
    }
    Ok(())
}

/// `Σ v²` in f64 over 32 interleaved partial sums (four AVX-512 vectors, so the additions
/// run at the load rate: one running sum was a chain of 806,528 dependent additions, ~4% of a
/// baby-GPT step, and eight were still bound by the addition's latency), added pairwise at
/// the end: a fixed order on every thread count and tier.
#[inline(always)]
fn sum_squares<T: Float>(xs: &[T]) -> f64 {
    const LANES: usize = 32;
    let mut acc = [0.0f64; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            let v = v.to_f64();
            *a += v * v;
        }
    }
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&v| v.to_f64() * v.to_f64())
        .sum();
    let mut w = LANES / 2;
    while w > 0 {
        for i in 0..w {
            acc[i] += acc[i + w];
        }
        w /= 2;
    }
    acc[0] + tail
}

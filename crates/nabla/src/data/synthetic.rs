//! Seeded synthetic data sets, generated in memory: nothing to download.

use super::Classification;
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// `classes` interleaved spiral arms of `points` points each in 2-D, radius 0 to 1, with
/// Gaussian angle noise of standard deviation `noise` radians. Not linearly separable.
pub fn spiral(points: usize, classes: usize, noise: f64, seed: u64) -> Result<Classification> {
    if points == 0 || classes < 2 || !(noise >= 0.0 && noise.is_finite()) {
        return Err(Error::arg(
            "spiral",
            format!("{points} points × {classes} classes, noise {noise}: need ≥ 1 point, ≥ 2 classes, noise ≥ 0"),
        ));
    }
    let mut rng = Rng::new(seed);
    let mut xs = Vec::with_capacity(points * classes * 2);
    let mut labels = Vec::with_capacity(points * classes);
    for c in 0..classes {
        for i in 0..points {
            let r = i as f64 / points as f64;
            let theta =
                c as f64 * std::f64::consts::TAU / classes as f64 + 4.0 * r + noise * rng.normal();
            xs.push((r * theta.sin()) as f32);
            xs.push((r * theta.cos()) as f32);
            labels.push(c);
        }
    }
    let n = labels.len();
    Ok(Classification {
        x: Tensor::from_vec(xs, &[n, 2])?,
        labels,
        classes,
    })
}

/// The four XOR points `(0,0)→0, (0,1)→1, (1,0)→1, (1,1)→0`: the classic problem no linear
/// model solves.
pub fn xor() -> Classification {
    Classification {
        x: Tensor::from_vec(vec![0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0], &[4, 2])
            .expect("internal: 8 values for [4, 2]"),
        labels: vec![0, 1, 1, 0],
        classes: 2,
    }
}

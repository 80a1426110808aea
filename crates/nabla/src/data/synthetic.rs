//! Seeded synthetic data sets, generated in memory: nothing to download.

use super::{Classification, Regression};
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

/// Two interleaving half-circles ("moons") of `points` points each, with Gaussian noise.
pub fn moons(points: usize, noise: f64, seed: u64) -> Result<Classification> {
    check("moons", points, noise)?;
    let mut rng = Rng::new(seed);
    let mut xs = Vec::with_capacity(points * 4);
    let mut labels = Vec::with_capacity(points * 2);
    for c in 0..2 {
        for i in 0..points {
            let t = std::f64::consts::PI * i as f64 / (points.max(2) - 1) as f64;
            let (x, y) = if c == 0 {
                (t.cos(), t.sin())
            } else {
                (1.0 - t.cos(), 0.5 - t.sin())
            };
            xs.push((x + noise * rng.normal()) as f32);
            xs.push((y + noise * rng.normal()) as f32);
            labels.push(c);
        }
    }
    finish(xs, labels, 2)
}

/// Two concentric circles (outer class 0 of radius 1, inner class 1 of radius `factor`).
pub fn circles(points: usize, noise: f64, factor: f64, seed: u64) -> Result<Classification> {
    check("circles", points, noise)?;
    if !(factor > 0.0 && factor < 1.0) {
        return Err(Error::arg(
            "circles",
            format!("factor {factor} is not in (0, 1)"),
        ));
    }
    let mut rng = Rng::new(seed);
    let mut xs = Vec::with_capacity(points * 4);
    let mut labels = Vec::with_capacity(points * 2);
    for (c, r) in [(0usize, 1.0), (1, factor)] {
        for _ in 0..points {
            let t = std::f64::consts::TAU * rng.uniform();
            xs.push((r * t.cos() + noise * rng.normal()) as f32);
            xs.push((r * t.sin() + noise * rng.normal()) as f32);
            labels.push(c);
        }
    }
    finish(xs, labels, 2)
}

/// 1-D regression: `y = sin(3x) + noise` for `x` uniform in [−π, π]; a fraction
/// `outliers` of the targets is replaced by large errors (±(3…6)).
pub fn sine(points: usize, noise: f64, outliers: f64, seed: u64) -> Result<Regression> {
    check("sine", points, noise)?;
    if !(0.0..=1.0).contains(&outliers) {
        return Err(Error::arg(
            "sine",
            format!("outlier fraction {outliers} is not in [0, 1]"),
        ));
    }
    let mut rng = Rng::new(seed);
    let (mut xs, mut ys) = (Vec::with_capacity(points), Vec::with_capacity(points));
    for _ in 0..points {
        let x = rng.uniform_in(-std::f64::consts::PI, std::f64::consts::PI);
        let mut y = (3.0 * x).sin() + noise * rng.normal();
        if rng.uniform() < outliers {
            let sign = if rng.uniform() < 0.5 { -1.0 } else { 1.0 };
            y += sign * rng.uniform_in(3.0, 6.0);
        }
        xs.push(x as f32);
        ys.push(y as f32);
    }
    Ok(Regression {
        x: Tensor::from_vec(xs, &[points, 1])?,
        y: Tensor::from_vec(ys, &[points, 1])?,
    })
}

fn check(name: &'static str, points: usize, noise: f64) -> Result<()> {
    if points == 0 || !(noise >= 0.0 && noise.is_finite()) {
        return Err(Error::arg(
            name,
            format!("{points} points, noise {noise}: need ≥ 1 point and noise ≥ 0"),
        ));
    }
    Ok(())
}

fn finish(xs: Vec<f32>, labels: Vec<usize>, classes: usize) -> Result<Classification> {
    let n = labels.len();
    Ok(Classification {
        x: Tensor::from_vec(xs, &[n, 2])?,
        labels,
        classes,
    })
}

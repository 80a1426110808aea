//! Chapter 6: L2 and L1 losses — the mean and the median, Gaussian and Laplace noise, outliers.
//!
//! `cargo run --release -p nabla-book --bin ch06_losses [-- --outliers 0.1]`

use nabla::nn::loss::{l1, mse, Reduction};
use nabla::optim::{Adam, AdamConfig, Optimizer};
use nabla::Tensor;
use nabla_book::parsed;

/// A loss between predictions and targets (`mse`, `l1`).
type Loss = fn(&Tensor<f32>, &Tensor<f32>, Reduction) -> nabla::Result<Tensor<f32>>;

/// Fits y ≈ a·x + c to the points by minimising `loss` with Adam; returns (a, c).
fn fit(x: &Tensor<f32>, y: &Tensor<f32>, loss: Loss) -> nabla::Result<(f32, f32)> {
    let a = Tensor::<f32>::zeros(&[1, 1])?.requires_grad();
    let c = Tensor::<f32>::zeros(&[1])?.requires_grad();
    let params = vec![("a".to_string(), a.clone()), ("c".to_string(), c.clone())];
    let mut opt = Adam::new(params, AdamConfig::adam(0.05))?;
    for _ in 0..2000 {
        let l = loss(&x.matmul(&a)?.add(&c)?, y, Reduction::Mean)?;
        opt.step(&l.backward()?)?;
    }
    Ok((a.item()?, c.item()?))
}

fn main() -> nabla::Result<()> {
    let outliers: f64 = parsed("outliers", "0.1", "a fraction");
    // ANCHOR: constant
    // The best constant for a set of numbers: L2 gives their mean, L1 their median.
    let ys = Tensor::<f32>::from_vec(vec![1.0, 2.0, 3.0, 4.0, 100.0], &[5, 1])?;
    let x0 = Tensor::<f32>::zeros(&[5, 1])?; // no feature: the model is the constant c
    let (_, c2) = fit(&x0, &ys, mse)?;
    let (_, c1) = fit(&x0, &ys, l1)?;
    println!(
        "data 1 2 3 4 100: L2 gives {c2:.2} (the mean is 22), L1 gives {c1:.2} (the median is 3)"
    );
    // ANCHOR_END: constant
    // ANCHOR: line
    // y = 2x + 1 plus Gaussian noise, with a fraction of the points replaced by gross errors.
    let n = 200;
    let x = Tensor::<f32>::randn(&[n, 1], 0.0, 1.0, 11)?;
    let noise = Tensor::<f32>::randn(&[n, 1], 0.0, 0.3, 12)?.to_vec()?;
    let (xv, mut yv) = (x.to_vec()?, Vec::with_capacity(n));
    let bad = (outliers * n as f64).round() as usize;
    for i in 0..n {
        let clean = 2.0 * xv[i] + 1.0 + noise[i];
        yv.push(if i < bad { clean + 15.0 } else { clean });
    }
    let y = Tensor::from_vec(yv, &[n, 1])?;
    let (a2, c2) = fit(&x, &y, mse)?;
    let (a1, c1) = fit(&x, &y, l1)?;
    println!("y = 2x + 1, {bad} of {n} points moved up by 15:");
    println!("  L2 fit: y = {a2:.3}x + {c2:.3}");
    println!("  L1 fit: y = {a1:.3}x + {c1:.3}");
    // ANCHOR_END: line
    Ok(())
}

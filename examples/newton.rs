//! Second derivatives at work, with nabla's higher-order autodiff.
//!
//! 1. **Newton–CG vs gradient descent.** L2-regularised logistic regression on quadratic
//!    features of the two-moons data (ill-conditioned: the features' scales differ). Newton–CG
//!    solves `H·p = −∇L` by conjugate gradients using only Hessian-vector products
//!    (`nabla::autograd::hvp`, reverse over reverse: `H` is never formed), then steps with a
//!    backtracking line search. Gradient descent steps with `1/λ_max`, the largest Hessian
//!    eigenvalue found by power iteration (again with `hvp`), the largest stable fixed step.
//!    Both run until the loss is within 1e-9 of the optimum.
//! 2. **A gradient penalty.** An MLP trained on two moons with cross-entropy plus
//!    `λ·mean‖∂m/∂x‖²`, `m` the margin between the two logits (double backprop: the penalty is
//!    a function of a gradient, so training differentiates through the gradient), against the
//!    same MLP without it.
//!
//! Run: `cargo run --release --example newton`

use std::time::Instant;

use anyhow::{bail, Result};
use nabla::autograd::{grad, hvp, GradOptions};
use nabla::data::synthetic;
use nabla::nn::loss::{self, Reduction, Target};
use nabla::nn::{Mlp, MlpConfig, Module};
use nabla::optim::{Adam, AdamConfig, Optimizer};
use nabla::Tensor;
use nabla_cli::experiment::table;

const LAMBDA: f64 = 1e-3;

/// Features `[x, y, x², y², x·y]` (and a bias column) of two moons, and the 0/1 targets.
fn logistic_data(points: usize) -> Result<(Tensor<f64>, Tensor<f64>)> {
    let d = synthetic::moons(points, 0.2, 3)?;
    let x = d.x.to_vec()?;
    let mut f = Vec::new();
    for p in x.chunks(2) {
        let (a, b) = (p[0] as f64, p[1] as f64);
        f.extend([1.0, a, b, a * a, b * b, a * b]);
    }
    let n = d.labels.len();
    let y: Vec<f64> = d.labels.iter().map(|&l| l as f64).collect();
    Ok((Tensor::from_vec(f, &[n, 6])?, Tensor::from_vec(y, &[n, 1])?))
}

/// `L(w) = mean BCE(X·w, y) + λ/2·‖w‖²`.
fn logistic_loss(x: &Tensor<f64>, y: &Tensor<f64>, w: &Tensor<f64>) -> nabla::Result<Tensor<f64>> {
    let data = loss::bce_with_logits(&x.matmul(w)?, y, Reduction::Mean)?;
    data.add(&w.square()?.sum_all()?.mul_scalar(LAMBDA / 2.0)?)
}

fn gradient(x: &Tensor<f64>, y: &Tensor<f64>, w: &Tensor<f64>) -> Result<(f64, Tensor<f64>)> {
    let w = w.detach().requires_grad();
    let l = logistic_loss(x, y, &w)?;
    let g = grad(std::slice::from_ref(&l), &[w], GradOptions::default())?.remove(0);
    Ok((l.item()?, g))
}

fn dot(a: &Tensor<f64>, b: &Tensor<f64>) -> Result<f64> {
    Ok(a.mul(b)?.sum_all()?.item()?)
}

/// `H(w)·v`.
fn hess_vec(
    x: &Tensor<f64>,
    y: &Tensor<f64>,
    w: &Tensor<f64>,
    v: &Tensor<f64>,
) -> Result<Tensor<f64>> {
    let w = w.detach().requires_grad();
    let (_, hv) = hvp(
        || logistic_loss(x, y, &w),
        std::slice::from_ref(&w),
        std::slice::from_ref(v),
    )?;
    Ok(hv.into_iter().next().expect("one parameter"))
}

struct Run {
    iterations: usize,
    hvps: usize,
    loss: f64,
    ms: f64,
}

/// Newton–CG from zero until the gradient norm is below 1e-10.
fn newton_cg(x: &Tensor<f64>, y: &Tensor<f64>) -> Result<Run> {
    let t = Instant::now();
    let mut w = Tensor::<f64>::zeros(&[6, 1])?;
    let (mut hvps, mut iterations) = (0, 0);
    loop {
        let (l, g) = gradient(x, y, &w)?;
        if dot(&g, &g)?.sqrt() < 1e-10 || iterations == 50 {
            return Ok(Run {
                iterations,
                hvps,
                loss: l,
                ms: t.elapsed().as_secs_f64() * 1e3,
            });
        }
        // CG on H·p = −g
        let mut p = Tensor::<f64>::zeros(&[6, 1])?;
        let mut r = g.neg()?;
        let mut d = r.clone();
        let mut rr = dot(&r, &r)?;
        for _ in 0..20 {
            let hd = hess_vec(x, y, &w, &d)?;
            hvps += 1;
            let alpha = rr / dot(&d, &hd)?;
            p = p.add(&d.mul_scalar(alpha)?)?;
            r = r.sub(&hd.mul_scalar(alpha)?)?;
            let next = dot(&r, &r)?;
            if next.sqrt() < 1e-12 {
                break;
            }
            d = r.add(&d.mul_scalar(next / rr)?)?;
            rr = next;
        }
        // backtracking line search (Armijo)
        let slope = dot(&g, &p)?;
        let mut step = 1.0;
        loop {
            let trial = w.add(&p.mul_scalar(step)?)?;
            if logistic_loss(x, y, &trial)?.item()? <= l + 1e-4 * step * slope || step < 1e-8 {
                w = trial;
                break;
            }
            step *= 0.5;
        }
        iterations += 1;
    }
}

/// Largest Hessian eigenvalue at `w` by power iteration on `hvp`.
fn lambda_max(x: &Tensor<f64>, y: &Tensor<f64>, w: &Tensor<f64>) -> Result<f64> {
    let mut v = Tensor::<f64>::ones(&[6, 1])?;
    let mut lambda = 0.0;
    for _ in 0..100 {
        let hv = hess_vec(x, y, w, &v)?;
        lambda = dot(&v, &hv)? / dot(&v, &v)?;
        v = hv.mul_scalar(1.0 / dot(&hv, &hv)?.sqrt())?;
    }
    Ok(lambda)
}

/// Gradient descent with step `1/λ_max` (the loss is convex and its curvature is largest at the
/// start, where all margins are 0) until the loss is within `tol` of `target`.
fn gradient_descent(
    x: &Tensor<f64>,
    y: &Tensor<f64>,
    target: f64,
    tol: f64,
    cap: usize,
) -> Result<Run> {
    let t = Instant::now();
    let mut w = Tensor::<f64>::zeros(&[6, 1])?;
    let lr = 1.0 / lambda_max(x, y, &w)?;
    for i in 0..cap {
        let (l, g) = gradient(x, y, &w)?;
        if l <= target + tol {
            return Ok(Run {
                iterations: i,
                hvps: 100,
                loss: l,
                ms: t.elapsed().as_secs_f64() * 1e3,
            });
        }
        w = w.sub(&g.mul_scalar(lr)?)?;
    }
    let (l, _) = gradient(x, y, &w)?;
    Ok(Run {
        iterations: cap,
        hvps: 100,
        loss: l,
        ms: t.elapsed().as_secs_f64() * 1e3,
    })
}

/// Mean over a batch of `‖∂m/∂x‖²`, `m = logit₁ − logit₀` the classifier's margin: how steep
/// the decision function is in its input. (Each row's margin depends on its own input only, so
/// the gradient of the summed margin holds every row's gradient.)
fn input_gradient_penalty(
    model: &Mlp<f32>,
    x: &Tensor<f32>,
    create_graph: bool,
) -> nabla::Result<Tensor<f32>> {
    let x = x.detach().requires_grad();
    let logits = model.forward(&x)?;
    let out = logits
        .narrow(1, 1, 1)?
        .sub(&logits.narrow(1, 0, 1)?)?
        .sum_all()?;
    let opts = GradOptions {
        create_graph,
        ..Default::default()
    };
    let gx = grad(&[out], &[x], opts)?.remove(0);
    gx.square()?.sum(&[1], false)?.mean_all()
}

struct Penalised {
    lambda: f64,
    accuracy: f64,
    steepness: f64,
}

/// Trains a 2-32-32-2 tanh MLP on moons for `steps` Adam steps with a gradient penalty weight.
fn train_with_penalty(lambda: f64, steps: usize) -> Result<Penalised> {
    let data = synthetic::moons(200, 0.15, 7)?;
    let mut cfg = MlpConfig::new(&[2, 32, 32, 2]);
    cfg.activation = nabla::nn::Activation::Tanh;
    cfg.seed = 11;
    let model = Mlp::<f32>::new(&cfg)?;
    let mut opt = Adam::new(model.named_parameters(), AdamConfig::adam(0.01))?;
    for _ in 0..steps {
        let logits = model.forward(&data.x)?;
        let mut l =
            loss::cross_entropy(&logits, Target::Classes(&data.labels), 0.0, Reduction::Mean)?;
        if lambda > 0.0 {
            l = l.add(&input_gradient_penalty(&model, &data.x, true)?.mul_scalar(lambda)?)?;
        }
        opt.step(&l.backward()?)?;
    }
    let pred = nabla::no_grad(|| model.forward(&data.x))?.argmax(1)?;
    let correct = pred
        .iter()
        .zip(&data.labels)
        .filter(|(a, b)| a == b)
        .count();
    Ok(Penalised {
        lambda,
        accuracy: correct as f64 / data.labels.len() as f64,
        steepness: input_gradient_penalty(&model, &data.x, false)?.item()? as f64,
    })
}

fn main() -> Result<()> {
    let (x, y) = logistic_data(500)?;
    let newton = newton_cg(&x, &y)?;
    let gd = gradient_descent(&x, &y, newton.loss, 1e-9, 1_000_000)?;
    if gd.loss > newton.loss + 1e-9 {
        bail!(
            "gradient descent did not reach the Newton loss in {} steps",
            gd.iterations
        );
    }
    let rows = vec![
        vec![
            "Newton–CG (hvp)".into(),
            newton.iterations.to_string(),
            format!("{} gradients + {} hvps", newton.iterations + 1, newton.hvps),
            format!("{:.12}", newton.loss),
            format!("{:.1}", newton.ms),
        ],
        vec![
            "gradient descent, step 1/λ_max".into(),
            gd.iterations.to_string(),
            format!(
                "{} gradients + {} hvps (power iteration)",
                gd.iterations + 1,
                gd.hvps
            ),
            format!("{:.12}", gd.loss),
            format!("{:.1}", gd.ms),
        ],
    ];
    println!(
        "logistic regression, 1000 points, features [1, x, y, x², y², xy], λ = {LAMBDA}; until loss ≤ L* + 1e-9:\n{}",
        table(&["method", "iterations", "work", "final loss", "ms"], &rows)
    );
    let runs = [0.0, 0.001, 0.01, 0.1]
        .iter()
        .map(|&l| train_with_penalty(l, 300))
        .collect::<Result<Vec<_>>>()?;
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                format!("{}", r.lambda),
                format!("{:.1}%", 100.0 * r.accuracy),
                format!("{:.3}", r.steepness),
            ]
        })
        .collect();
    println!(
        "\nMLP 2-32-32-2 tanh on moons, 300 Adam steps, loss = CE + λ·mean‖∂m/∂x‖² (m = logit₁ − logit₀):\n{}",
        table(&["λ", "train accuracy", "mean ‖∂m/∂x‖² after training"], &rows)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newton_cg_needs_far_fewer_iterations_than_gradient_descent() {
        let (x, y) = logistic_data(100).unwrap();
        let newton = newton_cg(&x, &y).unwrap();
        assert!(newton.iterations <= 15, "{}", newton.iterations);
        let gd = gradient_descent(&x, &y, newton.loss, 1e-6, 200_000).unwrap();
        assert!(gd.loss <= newton.loss + 1e-6, "gd stuck at {}", gd.loss);
        assert!(
            gd.iterations > 10 * newton.iterations,
            "{} vs {}",
            gd.iterations,
            newton.iterations
        );
    }

    #[test]
    fn the_gradient_penalty_makes_the_model_flatter_in_its_input() {
        let plain = train_with_penalty(0.0, 60).unwrap();
        let penalised = train_with_penalty(0.1, 60).unwrap();
        assert!(
            penalised.steepness < plain.steepness,
            "{} vs {}",
            penalised.steepness,
            plain.steepness
        );
    }
}

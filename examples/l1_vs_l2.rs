//! L1 against L2 loss for linear regression.
//!
//! 1. Data with outliers: the L2 fit is dragged towards them, the L1 fit is not.
//! 2. Why: the gradient of L2 with respect to a prediction is 2r (proportional to the residual
//!    r), the gradient of L1 is sign(r) (the same size for every point). Both are computed here
//!    by nabla's autograd, not written down.
//! 3. Which loss is right depends on the noise: L2 is the maximum-likelihood fit under Gaussian
//!    noise, L1 under Laplace noise. Over many random data sets, each estimates the slope more
//!    precisely under "its" noise.
//!
//! Run: `cargo run --release --example l1_vs_l2`

use anyhow::Result;
use nabla::nn::loss::{self, Reduction};
use nabla::optim::{Adam, AdamConfig, LrSchedule, Optimizer};
use nabla::{Rng, Tensor};
use nabla_cli::experiment::{image_dir, table};
use nabla_cli::plots::{chart, Series, Style};

const SLOPE: f64 = 2.0;
const INTERCEPT: f64 = 1.0;

struct Config {
    outlier_points: usize,
    trials: usize,
    points_per_trial: usize,
    steps: u64,
    plots: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Loss {
    L1,
    L2,
}

#[derive(Clone, Copy)]
enum Noise {
    Gaussian,
    Laplace,
}

/// Noise of variance 1.
fn noise(kind: Noise, rng: &mut Rng) -> f64 {
    match kind {
        Noise::Gaussian => rng.normal(),
        Noise::Laplace => {
            // Laplace with scale b = 1/√2 (variance 2b² = 1), by inverting its CDF.
            let u = rng.uniform() - 0.5;
            -(0.5f64.sqrt()) * u.signum() * (1.0 - 2.0 * u.abs()).max(f64::MIN_POSITIVE).ln()
        }
    }
}

/// Fits `T` independent lines at once: `x` and `y` are `[T, n]`, slopes and intercepts `[T, 1]`
/// broadcast over each row. The loss sums the per-line mean losses, so each line's gradient
/// is its own. Returns (slopes, intercepts).
fn fit_lines(
    x: &Tensor<f32>,
    y: &Tensor<f32>,
    kind: Loss,
    steps: u64,
) -> Result<(Vec<f32>, Vec<f32>)> {
    nabla::alloc::retain_freed_memory();
    let t = x.shape()[0];
    let n = x.shape()[1] as f64;
    let slope = Tensor::<f32>::zeros(&[t, 1])?.requires_grad();
    let intercept = Tensor::<f32>::zeros(&[t, 1])?.requires_grad();
    let params = vec![
        ("slope".to_string(), slope.clone()),
        ("intercept".to_string(), intercept.clone()),
    ];
    let mut opt = Adam::new(params, AdamConfig::adam(0.1))?;
    let sched = LrSchedule::Cosine {
        total: steps,
        min_lr: 1e-4,
    };
    for step in 0..steps {
        opt.set_lr(sched.lr_at(0.1, step));
        let pred = x.mul(&slope)?.add(&intercept)?;
        let per_point = match kind {
            Loss::L1 => loss::l1(&pred, y, Reduction::None)?,
            Loss::L2 => loss::mse(&pred, y, Reduction::None)?,
        };
        let l = per_point.sum_all()?.mul_scalar(1.0 / n)?;
        opt.step(&l.backward()?)?;
    }
    Ok((slope.to_vec().unwrap(), intercept.to_vec().unwrap()))
}

struct Findings {
    outlier_fit: Vec<(Loss, f32, f32)>,
    /// (residual, dL1/dpred, dL2/dpred)
    gradients: Vec<(f64, f64, f64)>,
    /// (noise name, slope MSE with L1, slope MSE with L2)
    mle: Vec<(&'static str, f64, f64)>,
}

fn run(cfg: &Config) -> Result<Findings> {
    // 1. Outliers: 15% of the points are 8 units too high.
    let mut rng = Rng::new(0);
    let n = cfg.outlier_points;
    let xs: Vec<f64> = (0..n).map(|_| rng.uniform_in(-2.0, 2.0)).collect();
    let ys: Vec<f64> = xs
        .iter()
        .map(|&x| {
            let outlier = if rng.uniform() < 0.15 { 8.0 } else { 0.0 };
            SLOPE * x + INTERCEPT + 0.3 * rng.normal() + outlier
        })
        .collect();
    let xt = Tensor::from_vec(xs.iter().map(|&v| v as f32).collect(), &[1, n])?;
    let yt = Tensor::from_vec(ys.iter().map(|&v| v as f32).collect(), &[1, n])?;
    let mut outlier_fit = Vec::new();
    for kind in [Loss::L1, Loss::L2] {
        let (s, b) = fit_lines(&xt, &yt, kind, cfg.steps)?;
        outlier_fit.push((kind, s[0], b[0]));
    }

    // 2. The gradients of each loss with respect to the prediction, by autograd.
    let residuals: Vec<f64> = (-12..=12).map(|i| i as f64 * 0.25).collect();
    let pred = Tensor::<f64>::from_vec(residuals.clone(), &[residuals.len()])?.requires_grad();
    let zero = Tensor::<f64>::zeros(&[residuals.len()])?;
    let g1 = loss::l1(&pred, &zero, Reduction::Sum)?.backward()?;
    let g2 = loss::mse(&pred, &zero, Reduction::Sum)?.backward()?;
    let (g1, g2) = (
        g1.get(&pred).expect("used").to_vec()?,
        g2.get(&pred).expect("used").to_vec()?,
    );
    let gradients = residuals
        .iter()
        .zip(g1)
        .zip(g2)
        .map(|((&r, a), b)| (r, a, b))
        .collect::<Vec<_>>();

    // 3. Maximum likelihood: many small data sets under each noise.
    let mut mle = Vec::new();
    for (name, kind) in [("Gaussian", Noise::Gaussian), ("Laplace", Noise::Laplace)] {
        let (t, m) = (cfg.trials, cfg.points_per_trial);
        let mut rng = Rng::new(7);
        let mut xv = Vec::with_capacity(t * m);
        let mut yv = Vec::with_capacity(t * m);
        for _ in 0..t * m {
            let x = rng.uniform_in(-2.0, 2.0);
            xv.push(x as f32);
            yv.push((SLOPE * x + INTERCEPT + noise(kind, &mut rng)) as f32);
        }
        let x = Tensor::from_vec(xv, &[t, m])?;
        let y = Tensor::from_vec(yv, &[t, m])?;
        let err = |slopes: Vec<f32>| {
            slopes
                .iter()
                .map(|&s| (s as f64 - SLOPE).powi(2))
                .sum::<f64>()
                / t as f64
        };
        let l1 = err(fit_lines(&x, &y, Loss::L1, cfg.steps)?.0);
        let l2 = err(fit_lines(&x, &y, Loss::L2, cfg.steps)?.0);
        mle.push((name, l1, l2));
    }

    if cfg.plots {
        let dir = image_dir()?;
        let line = |s: f64, b: f64| vec![(-2.0, b - 2.0 * s), (2.0, b + 2.0 * s)];
        let mut series = vec![Series::new(
            "data (15% outliers)",
            xs.iter().zip(&ys).map(|(&a, &b)| (a, b)).collect(),
        )
        .style(Style::Dots)];
        series.push(Series::new("true line", line(SLOPE, INTERCEPT)).style(Style::Line));
        for &(k, s, b) in &outlier_fit {
            series.push(
                Series::new(format!("{k:?} fit"), line(s as f64, b as f64)).style(Style::Line),
            );
        }
        chart(
            &dir.join("l1_vs_l2_fit.png"),
            "Linear fits with outliers",
            "x",
            "y",
            &series,
            false,
        )?;
        let g = vec![
            Series::new(
                "L1: dL/dŷ = sign(r)",
                gradients.iter().map(|g| (g.0, g.1)).collect(),
            ),
            Series::new(
                "L2: dL/dŷ = 2r",
                gradients.iter().map(|g| (g.0, g.2)).collect(),
            ),
        ];
        chart(
            &dir.join("l1_vs_l2_gradients.png"),
            "Gradient of each loss against the residual",
            "residual r = ŷ − y",
            "dL/dŷ",
            &g,
            false,
        )?;
    }
    Ok(Findings {
        outlier_fit,
        gradients,
        mle,
    })
}

fn main() -> Result<()> {
    let f = run(&Config {
        outlier_points: 100,
        trials: 2000,
        points_per_trial: 30,
        steps: 1500,
        plots: true,
    })?;
    let rows: Vec<Vec<String>> = std::iter::once(vec![
        "true".into(),
        format!("{SLOPE:.3}"),
        format!("{INTERCEPT:.3}"),
    ])
    .chain(
        f.outlier_fit
            .iter()
            .map(|(k, s, b)| vec![format!("{k:?}"), format!("{s:.3}"), format!("{b:.3}")]),
    )
    .collect();
    println!(
        "Fits to 100 points with 15% outliers (y + 8):\n{}",
        table(&["fit", "slope", "intercept"], &rows)
    );
    let rows: Vec<Vec<String>> = f
        .gradients
        .iter()
        .filter(|g| [-3.0, -1.0, -0.25, 0.0, 0.25, 1.0, 3.0].contains(&g.0))
        .map(|g| {
            vec![
                format!("{:+.2}", g.0),
                format!("{:+.2}", g.1),
                format!("{:+.2}", g.2),
            ]
        })
        .collect();
    println!(
        "Gradient of the loss with respect to the prediction:\n{}",
        table(&["residual r", "L1", "L2"], &rows)
    );
    let rows: Vec<Vec<String>> = f
        .mle
        .iter()
        .map(|(n, l1, l2)| {
            let better = if l1 < l2 { "L1" } else { "L2" };
            vec![
                n.to_string(),
                format!("{l1:.5}"),
                format!("{l2:.5}"),
                better.to_string(),
            ]
        })
        .collect();
    println!(
        "Mean squared error of the fitted slope over 2000 data sets of 30 points (noise variance 1):\n{}",
        table(&["noise", "L1 fit", "L2 fit", "more precise"], &rows)
    );
    println!("plots: examples/images/l1_vs_l2_fit.png, l1_vs_l2_gradients.png");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l1_resists_outliers_and_each_loss_wins_under_its_noise() {
        let f = run(&Config {
            outlier_points: 100,
            trials: 600,
            points_per_trial: 30,
            steps: 800,
            plots: false,
        })
        .unwrap();
        let slope = |k: Loss| f.outlier_fit.iter().find(|r| r.0 == k).unwrap().1 as f64;
        assert!((slope(Loss::L1) - SLOPE).abs() < (slope(Loss::L2) - SLOPE).abs());
        for &(r, g1, g2) in &f.gradients {
            assert_eq!(
                g1,
                if r > 0.0 {
                    1.0
                } else if r < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            );
            assert!((g2 - 2.0 * r).abs() < 1e-12);
        }
        let (gauss, laplace) = (f.mle[0], f.mle[1]);
        assert!(
            gauss.2 < gauss.1,
            "Gaussian: L2 {} should beat L1 {}",
            gauss.2,
            gauss.1
        );
        assert!(
            laplace.1 < laplace.2,
            "Laplace: L1 {} should beat L2 {}",
            laplace.1,
            laplace.2
        );
    }
}

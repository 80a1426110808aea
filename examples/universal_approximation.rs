//! Universal approximation: one hidden layer of tanh units fits sin(3x) on [−π, π], and the
//! error falls as the layer gets wider. Each width is trained with full-batch Adam at the best of
//! three learning rates (chosen by training loss).
//!
//! Run: `cargo run --release --example universal_approximation`

use anyhow::Result;
use nabla::nn::{Activation, Mlp, MlpConfig, Module};
use nabla::{Rng, Tensor};
use nabla_cli::experiment::{fit_regression, image_dir, mse_of, table, RegressionLoss};
use nabla_cli::plots::{chart, model_curve, Series, Style};

struct Config {
    widths: Vec<usize>,
    points: usize,
    steps: u64,
    plots: bool,
}

/// `points` samples of y = sin(3x), x uniform on [−π, π] (no noise: the error measured is the
/// approximation error).
fn target(points: usize, seed: u64) -> Result<(Tensor<f32>, Tensor<f32>)> {
    let mut rng = Rng::new(seed);
    let xs: Vec<f32> = (0..points)
        .map(|_| rng.uniform_in(-std::f64::consts::PI, std::f64::consts::PI) as f32)
        .collect();
    let ys: Vec<f32> = xs.iter().map(|x| (3.0 * x).sin()).collect();
    Ok((
        Tensor::from_vec(xs, &[points, 1])?,
        Tensor::from_vec(ys, &[points, 1])?,
    ))
}

/// (width, parameters, test MSE) per width, and the models' curves for the plot.
fn run(cfg: &Config) -> Result<Vec<(usize, usize, f64)>> {
    let (x, y) = target(cfg.points, 0)?;
    let (xt, yt) = target(1000, 1)?;
    let grid: Vec<f32> = (0..400)
        .map(|i| (-std::f64::consts::PI + std::f64::consts::TAU * i as f64 / 399.0) as f32)
        .collect();
    let mut rows = Vec::new();
    let mut curves = vec![Series::new(
        "sin(3x)",
        grid.iter()
            .map(|&v| (v as f64, (3.0 * v as f64).sin()))
            .collect(),
    )
    .style(Style::Line)];
    for &w in &cfg.widths {
        // Each width gets the best of three learning rates, judged by its training loss.
        let mut best: Option<(f64, Mlp)> = None;
        for lr in [0.003, 0.01, 0.03] {
            let mut c = MlpConfig::new(&[1, w, 1]);
            c.activation = Activation::Tanh;
            c.init = nabla::nn::Init::KaimingUniform;
            c.seed = w as u64;
            let model = Mlp::<f32>::new(&c)?;
            let l = fit_regression(&model, &x, &y, RegressionLoss::L2, cfg.steps, lr)?;
            if best.as_ref().is_none_or(|(b, _)| l < *b) {
                best = Some((l, model));
            }
        }
        let (_, model) = best.expect("three learning rates tried");
        let params = model.parameters().iter().map(|p| p.numel()).sum();
        rows.push((w, params, mse_of(&model, &xt, &yt)?));
        if [1, 4, 16, 64].contains(&w) {
            curves.push(
                Series::new(format!("width {w}"), model_curve(&model, &grid)?).style(Style::Line),
            );
        }
    }
    if cfg.plots {
        let dir = image_dir()?;
        chart(
            &dir.join("universal_approximation_fits.png"),
            "One hidden layer fitting sin(3x)",
            "x",
            "y",
            &curves,
            false,
        )?;
        let err = vec![Series::new(
            "test MSE",
            rows.iter().map(|&(w, _, m)| (w as f64, m)).collect(),
        )];
        chart(
            &dir.join("universal_approximation_error.png"),
            "Test error against width",
            "hidden units",
            "test MSE (log scale)",
            &err,
            true,
        )?;
    }
    Ok(rows)
}

fn main() -> Result<()> {
    let rows = run(&Config {
        widths: vec![1, 2, 4, 8, 16, 32, 64, 128],
        points: 512,
        steps: 3000,
        plots: true,
    })?;
    let t: Vec<Vec<String>> = rows
        .iter()
        .map(|(w, p, m)| vec![w.to_string(), p.to_string(), format!("{m:.2e}")])
        .collect();
    println!("{}", table(&["hidden units", "parameters", "test MSE"], &t));
    println!("plots: examples/images/universal_approximation_fits.png, universal_approximation_error.png");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_falls_as_the_hidden_layer_widens() {
        let rows = run(&Config {
            widths: vec![1, 4, 32],
            points: 256,
            steps: 1500,
            plots: false,
        })
        .unwrap();
        let mse: Vec<f64> = rows.iter().map(|r| r.2).collect();
        assert!(mse[1] < mse[0] && mse[2] < mse[1], "{mse:?}");
        assert!(mse[2] < mse[0] / 10.0, "{mse:?}");
    }
}

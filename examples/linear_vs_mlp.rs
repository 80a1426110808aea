//! Softmax regression (a linear model) against an MLP on the 3-class spiral, and an MLP
//! *without* activations, which can do no better than the linear model: stacked linear maps
//! are one linear map. The example multiplies the trained stack out into a single `W` and `b`
//! and checks that it computes the same function.
//!
//! Run: `cargo run --release --example linear_vs_mlp`

use anyhow::Result;
use nabla::data::synthetic::spiral;
use nabla::nn::{Activation, Mlp, MlpConfig, Module};
use nabla::{no_grad, Tensor};
use nabla_cli::experiment::{accuracy_of, fit_classifier, image_dir, table};
use nabla_cli::plots::decision_regions;

struct Config {
    points: usize,
    steps: u64,
    plots: bool,
}

struct Findings {
    /// (name, parameters, train accuracy, test accuracy)
    rows: Vec<(String, usize, f64, f64)>,
    /// max |stack(x) − (x·W + b)| over the test points, for the no-activation MLP.
    collapse_error: f64,
    collapsed_w: Vec<f32>,
}

fn param(m: &Mlp, name: &str) -> Tensor<f32> {
    m.named_parameters()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t.detach())
        .expect("the MLP has this parameter")
}

fn run(cfg: &Config) -> Result<Findings> {
    let train = spiral(cfg.points, 3, 0.1, 0)?;
    let test = spiral(cfg.points, 3, 0.1, 1)?;
    let models = [
        ("softmax regression 2→3", vec![2, 3], Activation::Relu),
        ("MLP 2-64-64-3, ReLU", vec![2, 64, 64, 3], Activation::Relu),
        (
            "MLP 2-64-64-3, no activation",
            vec![2, 64, 64, 3],
            Activation::Identity,
        ),
    ];
    let mut rows = Vec::new();
    let mut trained = Vec::new();
    for (i, (name, sizes, act)) in models.iter().enumerate() {
        let mut c = MlpConfig::new(sizes);
        c.activation = *act;
        c.seed = 10 + i as u64;
        let model = Mlp::<f32>::new(&c)?;
        fit_classifier(&model, &train.x, &train.labels, cfg.steps, 0.01)?;
        let params = model.parameters().iter().map(|p| p.numel()).sum();
        let tr = accuracy_of(&model, &train.x, &train.labels)?;
        let te = accuracy_of(&model, &test.x, &test.labels)?;
        if cfg.plots {
            let file = format!("linear_vs_mlp_{i}.png");
            decision_regions(
                &image_dir()?.join(file),
                name,
                &model,
                &test.x,
                &test.labels,
            )?;
        }
        rows.push((name.to_string(), params, tr, te));
        trained.push(model);
    }
    // Collapse the activation-free stack: x·W1 + b1 → ·W2 + b2 → ·W3 + b3
    //   = x·(W1·W2·W3) + ((b1·W2 + b2)·W3 + b3).
    let lin = &trained[2];
    let (w1, w2, w3) = (
        param(lin, "layers.0.weight"),
        param(lin, "layers.2.weight"),
        param(lin, "layers.4.weight"),
    );
    let (b1, b2, b3) = (
        param(lin, "layers.0.bias"),
        param(lin, "layers.2.bias"),
        param(lin, "layers.4.bias"),
    );
    let w = w1.matmul(&w2)?.matmul(&w3)?;
    let b = b1
        .unsqueeze(0)?
        .matmul(&w2)?
        .add(&b2)?
        .matmul(&w3)?
        .add(&b3)?;
    let direct = no_grad(|| lin.forward(&test.x))?;
    let collapsed = test.x.matmul(&w)?.add(&b)?;
    let collapse_error = direct
        .to_vec()?
        .iter()
        .zip(collapsed.to_vec()?)
        .map(|(a, b)| (a - b).abs() as f64)
        .fold(0.0, f64::max);
    Ok(Findings {
        rows,
        collapse_error,
        collapsed_w: w.to_vec().unwrap(),
    })
}

fn main() -> Result<()> {
    let f = run(&Config {
        points: 300,
        steps: 1500,
        plots: true,
    })?;
    let rows: Vec<Vec<String>> = f
        .rows
        .iter()
        .map(|(n, p, tr, te)| {
            vec![
                n.clone(),
                p.to_string(),
                format!("{:.1}%", 100.0 * tr),
                format!("{:.1}%", 100.0 * te),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &["model", "parameters", "train accuracy", "test accuracy"],
            &rows
        )
    );
    println!(
        "no-activation MLP collapsed to one linear map: W (2×3) = {:?}\n\
         max |stack(x) − (x·W + b)| on the test set = {:.2e}",
        f.collapsed_w
            .iter()
            .map(|v| (v * 1000.0).round() / 1000.0)
            .collect::<Vec<_>>(),
        f.collapse_error
    );
    println!("plots: examples/images/linear_vs_mlp_{{0,1,2}}.png");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mlp_beats_linear_and_the_activation_free_stack_is_linear() {
        let f = run(&Config {
            points: 100,
            steps: 600,
            plots: false,
        })
        .unwrap();
        let (linear, mlp, flat) = (f.rows[0].3, f.rows[1].3, f.rows[2].3);
        assert!(mlp >= linear + 0.30, "MLP {mlp} vs linear {linear}");
        assert!(
            (flat - linear).abs() <= 0.03,
            "no-activation {flat} vs linear {linear}"
        );
        assert!(
            f.collapse_error < 1e-4,
            "collapse error {}",
            f.collapse_error
        );
    }
}

//! What backpropagation costs in memory. Backward needs the forward pass's tensors (a product's
//! gradient needs the other factor, ReLU's needs where its input was positive), so a training
//! step keeps every layer's output alive until `backward` has run. A forward pass under
//! `no_grad` records nothing and keeps only the tensor being computed and its input.
//!
//! Bytes are measured by the library: `Tensor::graph_stats().saved_bytes` (plus the input
//! batch) for the training graph, and the largest (input + output) pair alive during a
//! `no_grad` forward. Parameters are not counted: both need them.
//!
//! Run: `cargo run --release --example backprop_memory`

use anyhow::Result;
use nabla::nn::loss::{self, Reduction, Target};
use nabla::nn::{Mlp, MlpConfig, Module};
use nabla::{no_grad, Tensor};
use nabla_cli::experiment::{image_dir, table};
use nabla_cli::plots::{chart, Series};

struct Config {
    depths: Vec<usize>,
    batches: Vec<usize>,
    width: usize,
    plots: bool,
}

struct Row {
    depth: usize,
    batch: usize,
    train_bytes: usize,
    forward_peak: usize,
    no_grad_saved: usize,
}

fn measure(depth: usize, batch: usize, width: usize) -> Result<Row> {
    let mut sizes = vec![784];
    sizes.extend(std::iter::repeat_n(width, depth));
    sizes.push(10);
    let model = Mlp::<f32>::new(&MlpConfig::new(&sizes))?;
    let x = Tensor::<f32>::rand_uniform(&[batch, 784], 0.0, 1.0, 1)?;
    let labels: Vec<usize> = (0..batch).map(|i| i % 10).collect();

    // Training: the loss's graph holds every intermediate tensor until it is dropped.
    let l = loss::cross_entropy(
        &model.forward(&x)?,
        Target::Classes(&labels),
        0.0,
        Reduction::Mean,
    )?;
    // The input batch is alive in both cases; count it in both.
    let train_bytes = l.graph_stats().saved_bytes + x.nbytes();
    l.backward()?;
    drop(l);

    // Inference: layer by layer under no_grad; only the input and output of the current layer
    // are alive at any moment.
    let (mut h, mut peak) = (x.clone(), 0);
    no_grad(|| -> Result<()> {
        for layer in model.layers().layers() {
            let out = layer.forward(&h)?;
            peak = peak.max(h.nbytes() + out.nbytes());
            h = out;
        }
        Ok(())
    })?;
    let no_grad_saved = h.graph_stats().saved_bytes;
    Ok(Row {
        depth,
        batch,
        train_bytes,
        forward_peak: peak,
        no_grad_saved,
    })
}

fn run(cfg: &Config) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &b in &cfg.batches {
        for &d in &cfg.depths {
            rows.push(measure(d, b, cfg.width)?);
        }
    }
    if cfg.plots {
        let mut series = Vec::new();
        for &b in &cfg.batches {
            let pick = |f: &dyn Fn(&Row) -> usize| -> Vec<(f64, f64)> {
                rows.iter()
                    .filter(|r| r.batch == b)
                    .map(|r| (r.depth as f64, f(r) as f64 / 1e6))
                    .collect()
            };
            series.push(Series::new(
                format!("training graph, batch {b}"),
                pick(&|r| r.train_bytes),
            ));
            series.push(Series::new(
                format!("no_grad forward, batch {b}"),
                pick(&|r| r.forward_peak),
            ));
        }
        chart(
            &image_dir()?.join("backprop_memory.png"),
            "Bytes kept for backward vs. a forward pass under no_grad",
            "hidden layers (width 256)",
            "MB (log scale)",
            &series,
            true,
        )?;
    }
    Ok(rows)
}

fn main() -> Result<()> {
    let rows = run(&Config {
        depths: vec![1, 2, 4, 8, 16],
        batches: vec![32, 128, 512],
        width: 256,
        plots: true,
    })?;
    let t: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.depth.to_string(),
                r.batch.to_string(),
                format!("{:.2}", r.train_bytes as f64 / 1e6),
                format!("{:.2}", r.forward_peak as f64 / 1e6),
                r.no_grad_saved.to_string(),
                format!("{:.1}×", r.train_bytes as f64 / r.forward_peak as f64),
            ]
        })
        .collect();
    println!(
        "MLP 784-(256 × depth)-10, f32:\n{}",
        table(
            &[
                "hidden layers",
                "batch",
                "training: graph + input MB",
                "no_grad peak MB",
                "no_grad graph bytes",
                "ratio"
            ],
            &t
        )
    );
    println!("plot: examples/images/backprop_memory.png");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_keeps_more_than_inference_and_grows_with_depth_and_batch() {
        let rows = run(&Config {
            depths: vec![1, 4],
            batches: vec![16, 64],
            width: 64,
            plots: false,
        })
        .unwrap();
        for r in &rows {
            assert!(
                r.train_bytes > r.forward_peak,
                "depth {} batch {}",
                r.depth,
                r.batch
            );
            assert_eq!(r.no_grad_saved, 0);
        }
        let at = |d: usize, b: usize| {
            rows.iter()
                .find(|r| r.depth == d && r.batch == b)
                .unwrap()
                .train_bytes as f64
        };
        // each extra hidden layer keeps two [16, 64] f32 tensors: X·W + b (one fused op) and the ReLU
        assert_eq!(
            at(4, 16) - at(1, 16),
            (3 * 2 * 16 * 64 * 4) as f64,
            "deeper keeps more"
        );
        // activations dominate and scale with the batch (4× batch → close to 4× bytes)
        let ratio = at(4, 64) / at(4, 16);
        assert!((3.5..=4.0).contains(&ratio), "{ratio}");
    }
}

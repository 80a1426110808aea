//! Softmax for training, one-hot(argmax) for prediction.
//!
//! Training reads the probabilities: the cross-entropy gradient with respect to the logits is
//! `softmax(z) − onehot(y)` (checked here against autograd). Prediction is the one-hot vector of
//! the arg-max; softmax is monotone, so the arg-max of the probabilities and of the logits are
//! the same class. What the probabilities add is confidence: a calibration table groups test
//! points by their top probability and compares it with how often those predictions are right.
//!
//! Run: `cargo run --release --example softmax_onehot`

use anyhow::Result;
use nabla::data::synthetic::spiral;
use nabla::nn::loss::{self, Reduction, Target};
use nabla::nn::{Mlp, MlpConfig, Module};
use nabla::{no_grad, Tensor};
use nabla_cli::experiment::{fit_classifier, image_dir, table};
use nabla_cli::plots::{chart, Series, Style};

struct Config {
    points: usize,
    steps: u64,
    plots: bool,
}

struct Bucket {
    lo: f64,
    hi: f64,
    count: usize,
    confidence: f64,
    accuracy: f64,
}

struct Findings {
    samples: usize,
    same_class: usize,
    test_accuracy: f64,
    buckets: Vec<Bucket>,
    /// max |autograd ∂L/∂z − (softmax(z) − onehot(y))/n|
    gradient_gap: f64,
}

fn run(cfg: &Config) -> Result<Findings> {
    // A noisy spiral: the classes overlap, so confidence varies.
    let train = spiral(cfg.points, 3, 0.6, 0)?;
    let test = spiral(cfg.points, 3, 0.6, 1)?;
    let model = Mlp::<f32>::new(&MlpConfig::new(&[2, 32, 32, 3]))?;
    fit_classifier(&model, &train.x, &train.labels, cfg.steps, 0.01)?;

    // The cross-entropy gradient is softmax − one-hot (averaged over the batch).
    let z = no_grad(|| model.forward(&test.x))?.requires_grad();
    let l = loss::cross_entropy(&z, Target::Classes(&test.labels), 0.0, Reduction::Mean)?;
    let g = l.backward()?.get(&z).expect("z was used").to_vec()?;
    let p = loss::predict_proba(&z.detach())?;
    let onehot = Tensor::<f32>::one_hot(&test.labels, 3)?;
    let n = test.len() as f32;
    let expected = p
        .sub(&onehot)?
        .mul_scalar(1.0 / n as f64)
        .unwrap()
        .to_vec()?;
    let gradient_gap = g
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs() as f64)
        .fold(0.0, f64::max);

    // Prediction: one-hot(argmax) of the probabilities equals that of the logits.
    let from_probs = p.one_hot_argmax()?.to_vec()?;
    let from_logits = z.detach().one_hot_argmax()?.to_vec()?;
    let same_class = from_probs
        .chunks(3)
        .zip(from_logits.chunks(3))
        .filter(|(a, b)| a == b)
        .count();
    let pred = loss::predict_class(&p)?;
    let probs = p.to_vec()?;
    let edges = [1.0 / 3.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0 + 1e-9];
    let mut buckets: Vec<Bucket> = edges
        .windows(2)
        .map(|w| Bucket {
            lo: w[0],
            hi: w[1],
            count: 0,
            confidence: 0.0,
            accuracy: 0.0,
        })
        .collect();
    for (i, (&c, &y)) in pred.iter().zip(&test.labels).enumerate() {
        let conf = probs[i * 3 + c] as f64;
        if let Some(b) = buckets.iter_mut().find(|b| conf >= b.lo && conf < b.hi) {
            b.count += 1;
            b.confidence += conf;
            b.accuracy += f64::from(u8::from(c == y));
        }
    }
    for b in &mut buckets {
        if b.count > 0 {
            b.confidence /= b.count as f64;
            b.accuracy /= b.count as f64;
        }
    }
    let test_accuracy = loss::accuracy(&pred, &test.labels);
    if cfg.plots {
        let used: Vec<&Bucket> = buckets.iter().filter(|b| b.count > 0).collect();
        let series = vec![
            Series::new(
                "perfect calibration",
                vec![(1.0 / 3.0, 1.0 / 3.0), (1.0, 1.0)],
            )
            .style(Style::Line),
            Series::new(
                "nabla MLP (test set)",
                used.iter().map(|b| (b.confidence, b.accuracy)).collect(),
            ),
        ];
        chart(
            &image_dir()?.join("softmax_calibration.png"),
            "Reliability: confidence against accuracy",
            "mean top softmax probability in bucket",
            "accuracy in bucket",
            &series,
            false,
        )?;
    }
    Ok(Findings {
        samples: test.len(),
        same_class,
        test_accuracy,
        buckets,
        gradient_gap,
    })
}

fn main() -> Result<()> {
    let f = run(&Config {
        points: 600,
        steps: 1500,
        plots: true,
    })?;
    println!(
        "test accuracy {:.1}% on {} points; one-hot(argmax) of softmax = of logits for {} of {}; \
         max |∂L/∂z − (softmax − onehot)/n| = {:.1e}\n",
        100.0 * f.test_accuracy,
        f.samples,
        f.same_class,
        f.samples,
        f.gradient_gap
    );
    let rows: Vec<Vec<String>> = f
        .buckets
        .iter()
        .filter(|b| b.count > 0)
        .map(|b| {
            vec![
                format!("[{:.2}, {:.2})", b.lo, b.hi.min(1.0)),
                b.count.to_string(),
                format!("{:.3}", b.confidence),
                format!("{:.3}", b.accuracy),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &["top probability", "points", "mean confidence", "accuracy"],
            &rows
        )
    );
    println!("plot: examples/images/softmax_calibration.png");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_agrees_and_confidence_tracks_accuracy() {
        let f = run(&Config {
            points: 300,
            steps: 800,
            plots: false,
        })
        .unwrap();
        assert_eq!(f.same_class, f.samples);
        assert!(f.gradient_gap < 1e-6, "{}", f.gradient_gap);
        let used: Vec<&Bucket> = f.buckets.iter().filter(|b| b.count >= 20).collect();
        let (low, high) = (used.first().unwrap(), used.last().unwrap());
        assert!(
            high.accuracy > low.accuracy + 0.2,
            "{} vs {}",
            high.accuracy,
            low.accuracy
        );
    }
}

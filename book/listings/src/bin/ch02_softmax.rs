//! Chapter 2: softmax, cross-entropy, and prediction by one-hot argmax.
//!
//! `cargo run --release -p nabla-book --bin ch02_softmax [-- --steps 300]`

use nabla::nn::loss::{accuracy, cross_entropy, predict_class, Reduction, Target};
use nabla::optim::{Optimizer, Sgd, SgdConfig};
use nabla::{no_grad, Tensor};
use nabla_book::{parsed, row};

fn main() -> nabla::Result<()> {
    let steps: usize = parsed("steps", "300", "a count");
    // ANCHOR: softmax
    // Two examples, three classes: the logits a linear model would give.
    let z = Tensor::<f32>::from_vec(vec![2.0, 1.0, 0.1, -1.0, 3.0, 0.5], &[2, 3])?;
    let p = z.softmax(1)?; // e^z / Σ e^z, row by row
    let hot = p.one_hot_argmax()?; // 1 at each row's largest probability, 0 elsewhere
    for r in 0..2 {
        let (zr, pr) = (&z.to_vec()?[r * 3..][..3], &p.to_vec()?[r * 3..][..3]);
        let sum: f32 = pr.iter().sum();
        println!("logits {}  softmax {}  (sum {sum:.4})", row(zr), row(pr));
    }
    println!("one-hot argmax: {:?}", hot.to_vec()?);
    // softmax keeps the order of a row's logits, so the largest probability is the largest logit:
    println!(
        "argmax of logits {:?} = argmax of probabilities {:?}",
        z.argmax(1)?,
        p.argmax(1)?
    );
    // ANCHOR_END: softmax
    // ANCHOR: train
    // Three clouds of 100 points in the plane, one per class, centred on a triangle.
    let centres = [(0.0f32, 2.0f32), (-1.7, -1.0), (1.7, -1.0)];
    let noise = Tensor::<f32>::randn(&[300, 2], 0.0, 0.8, 3)?.to_vec()?;
    let mut xs = Vec::new();
    let mut labels = Vec::new();
    for (i, pt) in noise.chunks(2).enumerate() {
        let c = i % 3;
        xs.extend([centres[c].0 + pt[0], centres[c].1 + pt[1]]);
        labels.push(c);
    }
    let x = Tensor::from_vec(xs, &[300, 2])?;
    let w = Tensor::<f32>::zeros(&[2, 3])?.requires_grad();
    let b = Tensor::<f32>::zeros(&[3])?.requires_grad();
    let params = vec![("w".to_string(), w.clone()), ("b".to_string(), b.clone())];
    let mut opt = Sgd::new(params, SgdConfig::new(0.5))?;
    for step in 0..=steps {
        let logits = x.matmul(&w)?.add(&b)?; // O = X·W + b: one score per class
                                             // cross-entropy: −log softmax(O)[label], averaged; softmax is fused into the loss
        let loss = cross_entropy(&logits, Target::Classes(&labels), 0.0, Reduction::Mean)?;
        if step % (steps / 5).max(1) == 0 {
            let acc = accuracy(&predict_class(&logits)?, &labels);
            println!(
                "step {step:3}  cross-entropy {:.4}  accuracy {:.1}%",
                loss.item()?,
                100.0 * acc
            );
        }
        opt.step(&loss.backward()?)?;
    }
    // ANCHOR_END: train
    // ANCHOR: predict
    // Prediction needs no softmax and no gradient: the argmax of the logits.
    let new = Tensor::<f32>::from_vec(vec![0.0, 2.5, -2.0, -1.0, 0.3, 0.0], &[3, 2])?;
    let classes = no_grad(|| new.matmul(&w)?.add(&b)?.argmax(1))?;
    println!("points (0, 2.5), (−2, −1), (0.3, 0): classes {classes:?}");
    // ANCHOR_END: predict
    Ok(())
}

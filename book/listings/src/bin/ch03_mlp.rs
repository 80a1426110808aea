//! Chapter 3: activations and the MLP — why a stack of linear maps is still linear, and what
//! one non-linearity between them buys.
//!
//! `cargo run --release -p nabla-book --bin ch03_mlp [-- --activation relu --width 64]`

use nabla::data::synthetic::spiral;
use nabla::nn::loss::{accuracy, cross_entropy, predict_class, Reduction, Target};
use nabla::nn::{Activation, Mlp, MlpConfig, Module};
use nabla::optim::{Adam, AdamConfig, Optimizer};
use nabla::{no_grad, Tensor};
use nabla_book::{arg, parsed, usage};

fn main() -> nabla::Result<()> {
    let activation = match arg("activation", "relu").as_str() {
        "relu" => Activation::Relu,
        "tanh" => Activation::Tanh,
        "identity" => Activation::Identity,
        other => usage(&format!(
            "--activation {other:?}: expected relu, tanh or identity"
        )),
    };
    let width: usize = parsed("width", "64", "a count");
    // ANCHOR: linear
    // Two linear maps in a row, x·W1·W2, are one linear map x·(W1·W2) ...
    let x = Tensor::<f32>::randn(&[4, 2], 0.0, 1.0, 5)?;
    let w1 = Tensor::<f32>::randn(&[2, 8], 0.0, 1.0, 6)?;
    let w2 = Tensor::<f32>::randn(&[8, 3], 0.0, 1.0, 7)?;
    let two = x.matmul(&w1)?.matmul(&w2)?;
    let one = x.matmul(&w1.matmul(&w2)?)?;
    let gap = two
        .sub(&one)?
        .abs()?
        .to_vec()?
        .into_iter()
        .fold(0.0f32, f32::max);
    println!("largest |x·W1·W2 − x·(W1·W2)|: {gap:.1e} (rounding)");
    // ... and a linear f keeps f(a·u + b·v) = a·f(u) + b·f(v); ReLU does not.
    let (u, v) = (x.narrow(0, 0, 1)?, x.narrow(0, 1, 1)?);
    let mix = u.mul_scalar(2.0)?.add(&v.mul_scalar(-3.0)?)?;
    let f = |t: &Tensor<f32>| t.matmul(&w1);
    let g = |t: &Tensor<f32>| t.matmul(&w1)?.relu();
    let err = |lhs: Tensor<f32>, rhs: Tensor<f32>| -> nabla::Result<f32> {
        Ok(lhs
            .sub(&rhs)?
            .abs()?
            .to_vec()?
            .into_iter()
            .fold(0.0, f32::max))
    };
    let lin = err(
        f(&mix)?,
        f(&u)?.mul_scalar(2.0)?.add(&f(&v)?.mul_scalar(-3.0)?)?,
    )?;
    let non = err(
        g(&mix)?,
        g(&u)?.mul_scalar(2.0)?.add(&g(&v)?.mul_scalar(-3.0)?)?,
    )?;
    println!("f(2u − 3v) vs 2f(u) − 3f(v): linear {lin:.1e}, with ReLU {non:.3}");
    // ANCHOR_END: linear
    // ANCHOR: spiral
    // Three interleaved spiral arms: no straight line separates them.
    let data = spiral(200, 3, 0.2, 0)?;
    let mut config = MlpConfig::new(&[2, width, width, 3]);
    config.activation = activation;
    let model = Mlp::<f32>::new(&config)?;
    let mut opt = Adam::new(model.named_parameters(), AdamConfig::adam(0.01))?;
    for step in 0..=1000 {
        let logits = model.forward(&data.x)?;
        let loss = cross_entropy(&logits, Target::Classes(&data.labels), 0.0, Reduction::Mean)?;
        if step % 250 == 0 {
            println!("step {step:4}  loss {:.4}", loss.item()?);
        }
        opt.step(&loss.backward()?)?;
    }
    let predicted = no_grad(|| predict_class(&model.forward(&data.x)?))?;
    println!(
        "2-{width}-{width}-3 MLP, {activation:?}: training accuracy {:.1}% ({} parameters)",
        100.0 * accuracy(&predicted, &data.labels),
        config.parameter_count()
    );
    // ANCHOR_END: spiral
    Ok(())
}

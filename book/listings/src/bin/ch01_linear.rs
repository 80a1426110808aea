//! Chapter 1: tensors and the linear model O = X·W + b, fitted by gradient descent.
//!
//! `cargo run --release -p nabla-book --bin ch01_linear [-- --lr 0.1]`

use nabla::nn::loss::{mse, Reduction};
use nabla::optim::{Optimizer, Sgd, SgdConfig};
use nabla::Tensor;
use nabla_book::{num, parsed, row};

fn main() -> nabla::Result<()> {
    let lr: f64 = parsed("lr", "0.1", "a number");
    // ANCHOR: data
    // n = 200 examples of d = 3 features, p = 2 outputs: W is d×p, b has p values.
    let (n, d, p) = (200, 3, 2);
    let x = Tensor::<f32>::randn(&[n, d], 0.0, 1.0, 1)?;
    let w_true = Tensor::from_vec(vec![2.0, -1.0, 0.5, 0.0, -3.0, 1.5], &[d, p])?;
    let b_true = Tensor::from_vec(vec![0.5, -2.0], &[p])?;
    let noise = Tensor::<f32>::randn(&[n, p], 0.0, 0.1, 2)?;
    // X·W is [200, 3]·[3, 2] = [200, 2]; b ([2]) is added to every row (broadcasting).
    let y = x.matmul(&w_true)?.add(&b_true)?.add(&noise)?;
    println!(
        "X {:?} · W {:?} + b {:?} = O {:?}",
        x.shape(),
        w_true.shape(),
        b_true.shape(),
        y.shape()
    );
    // ANCHOR_END: data
    // ANCHOR: fit
    let w = Tensor::<f32>::zeros(&[d, p])?.requires_grad();
    let b = Tensor::<f32>::zeros(&[p])?.requires_grad();
    let params = vec![("w".to_string(), w.clone()), ("b".to_string(), b.clone())];
    let mut opt = Sgd::new(params, SgdConfig::new(lr))?;
    for step in 0..=100 {
        let o = x.matmul(&w)?.add(&b)?; // O = X·W + b
        let loss = mse(&o, &y, Reduction::Mean)?; // the mean of (O − Y)²
        if step % 20 == 0 {
            println!("step {step:3}  loss {}", num(loss.item()?));
        }
        let grads = loss.backward()?; // ∂loss/∂W and ∂loss/∂b
        opt.step(&grads)?; // W ← W − η·∂loss/∂W, and b likewise
    }
    // ANCHOR_END: fit
    let (wv, bv) = (w.to_vec()?, b.to_vec()?);
    println!("learned W (true W in brackets), row by row:");
    for r in 0..d {
        let t = w_true.to_vec()?;
        println!("  {}   [{}]", row(&wv[r * p..][..p]), row(&t[r * p..][..p]));
    }
    println!("learned b: {}   [{}]", row(&bv), row(&b_true.to_vec()?));
    Ok(())
}

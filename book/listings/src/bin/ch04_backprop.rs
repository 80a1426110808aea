//! Chapter 4: backpropagation — the chain rule by hand on a two-layer network, the same
//! numbers from nabla, a finite-difference check, and what backward keeps in memory.
//!
//! `cargo run --release -p nabla-book --bin ch04_backprop [-- --batch 128]`

use nabla::nn::{Mlp, MlpConfig, Module};
use nabla::testing::{gradcheck, GradcheckOptions};
use nabla::Tensor;
use nabla_book::parsed;

fn main() -> nabla::Result<()> {
    let batch: usize = parsed("batch", "128", "a count");
    // ANCHOR: by_hand
    // x (1×2) → a = x·W1 (1×2) → h = relu(a) → y = h·W2 (1×1) → L = (y − t)²
    let x: [f64; 2] = [1.0, 2.0];
    let w1: [[f64; 2]; 2] = [[0.5, -0.3], [0.8, 0.2]];
    let w2: [f64; 2] = [1.5, -1.0];
    let t: f64 = 0.5;
    // forward, keeping a and h: backward needs them
    let a = [
        x[0] * w1[0][0] + x[1] * w1[1][0],
        x[0] * w1[0][1] + x[1] * w1[1][1],
    ];
    let h = [a[0].max(0.0), a[1].max(0.0)];
    let y = h[0] * w2[0] + h[1] * w2[1];
    let loss = (y - t) * (y - t);
    // backward: each local derivative times the gradient arriving from above
    let dy = 2.0 * (y - t); // ∂L/∂y
    let dw2 = [h[0] * dy, h[1] * dy]; // ∂L/∂W2 = hᵀ·∂L/∂y
    let dh = [w2[0] * dy, w2[1] * dy]; // ∂L/∂h = ∂L/∂y·W2ᵀ
    let relu_prime = |v: f64| if v > 0.0 { 1.0 } else { 0.0 };
    let da = [dh[0] * relu_prime(a[0]), dh[1] * relu_prime(a[1])]; // through relu
    let dw1 = [[x[0] * da[0], x[0] * da[1]], [x[1] * da[0], x[1] * da[1]]]; // xᵀ·∂L/∂a
    println!("forward: a = {a:?}, h = {h:?}, y = {y:.4}, L = {loss:.4}");
    println!("by hand: dL/dW1 = {dw1:?}, dL/dW2 = {dw2:?}");
    // ANCHOR_END: by_hand
    // ANCHOR: nabla
    let xt = Tensor::<f64>::from_vec(x.to_vec(), &[1, 2])?;
    let w1t = Tensor::<f64>::from_vec(w1.concat(), &[2, 2])?.requires_grad();
    let w2t = Tensor::<f64>::from_vec(w2.to_vec(), &[2, 1])?.requires_grad();
    let f = |w1: &Tensor<f64>, w2: &Tensor<f64>| {
        xt.matmul(w1)?
            .relu()?
            .matmul(w2)?
            .add_scalar(-t)?
            .square()?
            .sum_all()
    };
    let l = f(&w1t, &w2t)?;
    let grads = l.backward()?;
    let g1 = grads.get(&w1t).expect("W1 has a gradient").to_vec()?;
    let g2 = grads.get(&w2t).expect("W2 has a gradient").to_vec()?;
    println!("nabla:   dL/dW1 = {g1:?}, dL/dW2 = {g2:?}");
    // ANCHOR_END: nabla
    // ANCHOR: gradcheck
    // Central differences (L(w + ε) − L(w − ε)) / 2ε for every weight, against backward.
    let report = gradcheck(
        |ws| f(&ws[0], &ws[1]),
        &[w1t.detach(), w2t.detach()],
        &GradcheckOptions::default(),
    )?;
    let verdict = if report.passed { "passed" } else { "FAILED" };
    println!("gradcheck {verdict}");
    println!("elements checked: {}", report.checked);
    // ANCHOR_END: gradcheck
    // ANCHOR: memory
    // What the recorded graph of a 784-512-256-10 MLP keeps for backward, per batch size.
    let model = Mlp::<f32>::new(&MlpConfig::new(&[784, 512, 256, 10]))?;
    let input = Tensor::<f32>::randn(&[batch, 784], 0.0, 1.0, 9)?;
    let out = model.forward(&input)?.square()?.mean_all()?;
    let stats = out.graph_stats();
    println!(
        "batch {batch}: {} recorded ops keep {} bytes of forward values ({:.1} KiB per example)",
        stats.ops,
        stats.saved_bytes,
        stats.saved_bytes as f64 / batch as f64 / 1024.0
    );
    let none = nabla::no_grad(|| model.forward(&input))?;
    println!("under no_grad: {} recorded ops", none.graph_stats().ops);
    // ANCHOR_END: memory
    Ok(())
}

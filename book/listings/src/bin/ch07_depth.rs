//! Chapter 7: depth — fewer units for the same function (an exact construction), and why deep
//! networks are harder to train (vanishing gradients, initialisation, residual connections).
//!
//! `cargo run --release -p nabla-book --bin ch07_depth [-- --depth 30]`

use nabla::Tensor;
use nabla_book::parsed;

/// The tent map on [0, 1] as a width-2 ReLU layer: t(x) = 2·relu(x) − 4·relu(x − ½).
fn tent(x: &Tensor<f64>) -> nabla::Result<Tensor<f64>> {
    let a = x.relu()?.mul_scalar(2.0)?;
    let b = x.add_scalar(-0.5)?.relu()?.mul_scalar(4.0)?;
    a.sub(&b)
}

/// The number of straight pieces of the function sampled at `ys` on a uniform grid (a new
/// piece wherever the slope changes).
fn pieces(ys: &[f64]) -> usize {
    let slopes: Vec<f64> = ys.windows(2).map(|w| w[1] - w[0]).collect();
    1 + slopes
        .windows(2)
        .filter(|s| (s[1] - s[0]).abs() > 1e-9)
        .count()
}

fn main() -> nabla::Result<()> {
    let depth: usize = parsed("depth", "30", "a count");
    // ANCHOR: sawtooth
    // k tent layers of 2 units each: a sawtooth with 2^(k−1) teeth, 2^k straight pieces.
    let grid = 4096;
    let xs: Vec<f64> = (0..=grid).map(|i| i as f64 / grid as f64).collect();
    let mut y = Tensor::from_vec(xs.clone(), &[grid + 1, 1])?;
    for k in 1..=6 {
        y = tent(&y)?;
        let n = pieces(&y.to_vec()?);
        println!(
            "depth {k}: {:>2} ReLU units in total, {n:>2} pieces; one hidden layer needs {:>2} units",
            2 * k,
            n - 1
        );
    }
    // ANCHOR_END: sawtooth
    // ANCHOR: gradients
    // How much of the gradient at the last of `depth` tanh layers (width 64) reaches the
    // network's input, at initialisation with W ~ N(0, gain²/64): |∂L/∂x| / |∂L/∂h_last|.
    let width = 64;
    for (name, gain, residual) in [
        ("gain 0.5", 0.5, false),
        ("gain 1 (Xavier)", 1.0, false),
        ("gain 0.5, residual", 0.5, true),
    ] {
        let ws: Vec<Tensor<f64>> = (0..depth)
            .map(|l| Tensor::randn(&[width, width], 0.0, gain / 8.0, 100 + l as u64))
            .collect::<nabla::Result<_>>()?;
        let layer = |h: &Tensor<f64>, w: &Tensor<f64>| -> nabla::Result<Tensor<f64>> {
            let f = h.matmul(w)?.tanh()?;
            if residual {
                h.add(&f)
            } else {
                Ok(f)
            }
        };
        let x = Tensor::<f64>::randn(&[32, width], 0.0, 1.0, 1)?.requires_grad();
        let mut h = x.clone();
        for w in &ws[..depth - 1] {
            h = layer(&h, w)?;
        }
        let last_in = h.detach().requires_grad(); // the last layer's input, as a leaf
        let norm = |g: &Tensor<f64>| -> nabla::Result<f64> {
            Ok(g.to_vec()?.iter().map(|v| v * v).sum::<f64>().sqrt())
        };
        let through_all = layer(&h, &ws[depth - 1])?
            .square()?
            .mean_all()?
            .backward()?;
        let at_last = layer(&last_in, &ws[depth - 1])?
            .square()?
            .mean_all()?
            .backward()?;
        let ratio = norm(through_all.get(&x).expect("x has a gradient"))?
            / norm(at_last.get(&last_in).expect("the last input has one"))?;
        println!("{depth} tanh layers, {name:<20} |∂L/∂x| / |∂L/∂h_last| = {ratio:.2e}");
    }
    // ANCHOR_END: gradients
    Ok(())
}

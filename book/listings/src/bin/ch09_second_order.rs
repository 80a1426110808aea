//! Chapter 9: gradients of gradients — second derivatives, Hessian-vector products, and
//! Newton's method against gradient descent.
//!
//! `cargo run --release -p nabla-book --bin ch09_second_order [-- --lr 1.0]`

use nabla::autograd::{grad, hessian, hvp, GradOptions};
use nabla::nn::loss::{bce_with_logits, Reduction};
use nabla::Tensor;
use nabla_book::parsed;

/// Solves the 3×3 system `a·x = b` (Gaussian elimination with partial pivoting).
fn solve3(mut a: [[f64; 3]; 3], mut b: [f64; 3]) -> [f64; 3] {
    for c in 0..3 {
        let p = (c..3)
            .max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))
            .unwrap();
        a.swap(c, p);
        b.swap(c, p);
        for r in c + 1..3 {
            let f = a[r][c] / a[c][c];
            let pivot = a[c];
            for (x, p) in a[r].iter_mut().zip(pivot).skip(c) {
                *x -= f * p;
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = [0.0; 3];
    for r in (0..3).rev() {
        x[r] = (b[r] - (r + 1..3).map(|k| a[r][k] * x[k]).sum::<f64>()) / a[r][r];
    }
    x
}

fn main() -> nabla::Result<()> {
    let lr: f64 = parsed("lr", "1.0", "a number");
    // ANCHOR: second
    // f(x) = x³ at x = 2: f′ = 3x² = 12, f″ = 6x = 12. The first gradient is built with a
    // graph of its own (create_graph), so it can be differentiated again.
    let x = Tensor::<f64>::scalar(2.0).requires_grad();
    let y = x.mul(&x)?.mul(&x)?;
    let with_graph = GradOptions {
        create_graph: true,
        ..Default::default()
    };
    let dy = grad(&[y], std::slice::from_ref(&x), with_graph)?.remove(0);
    let d2y = grad(std::slice::from_ref(&dy), &[x], GradOptions::default())?.remove(0);
    println!("f = x³ at 2: f′ = {}, f″ = {}", dy.item()?, d2y.item()?);
    // ANCHOR_END: second
    // ANCHOR: newton
    // Logistic regression on two overlapping classes: z = X·w (a column of ones for the
    // bias), loss = mean binary cross-entropy. Smooth and convex: Newton's method applies.
    let n = 200;
    let noise = Tensor::<f64>::randn(&[n, 2], 0.0, 1.0, 21)?.to_vec()?;
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    for i in 0..n {
        let c = (i % 2) as f64;
        rows.extend([noise[2 * i] + 1.5 * c, noise[2 * i + 1] - c, 1.0]);
        labels.push(c);
    }
    let xs = Tensor::from_vec(rows, &[n, 3])?;
    let t = Tensor::from_vec(labels, &[n, 1])?;
    let loss =
        |w: &Tensor<f64>| bce_with_logits(&xs.matmul(&w.reshape(&[3, 1])?)?, &t, Reduction::Mean);
    let norm = |g: &[f64]| g.iter().map(|v| v * v).sum::<f64>().sqrt();
    let (mut w_gd, mut w_newton) = (vec![0.0; 3], vec![0.0; 3]);
    println!("step   |∇L| gradient descent (lr {lr})   |∇L| Newton");
    for step in 0..=8 {
        let wg = Tensor::from_vec(w_gd.clone(), &[3])?.requires_grad();
        let g_gd = grad(&[loss(&wg)?], &[wg], GradOptions::default())?
            .remove(0)
            .to_vec()?;
        let wn = Tensor::from_vec(w_newton.clone(), &[3])?.requires_grad();
        let g_n = grad(
            &[loss(&wn)?],
            std::slice::from_ref(&wn),
            GradOptions::default(),
        )?
        .remove(0)
        .to_vec()?;
        println!("{step:4}   {:>28.3e}   {:>10.3e}", norm(&g_gd), norm(&g_n));
        // gradient descent: w ← w − η·∇L
        for (w, g) in w_gd.iter_mut().zip(&g_gd) {
            *w -= lr * g;
        }
        // Newton: w ← w − H⁻¹·∇L, with H the Hessian (3×3, by differentiating twice)
        let h = hessian(|w| loss(w), &wn)?.to_vec()?;
        let rows: [[f64; 3]; 3] = std::array::from_fn(|r| std::array::from_fn(|c| h[r * 3 + c]));
        let step = solve3(rows, [g_n[0], g_n[1], g_n[2]]);
        for (w, s) in w_newton.iter_mut().zip(step) {
            *w -= s;
        }
    }
    // ANCHOR_END: newton
    // ANCHOR: hvp
    // H·v without forming H: differentiate ∇L·v once more (two backward passes, any size).
    let w = Tensor::from_vec(w_newton.clone(), &[3])?.requires_grad();
    let v = Tensor::from_vec(vec![1.0, -1.0, 0.5], &[3])?;
    let (_, hv) = hvp(
        || loss(&w),
        std::slice::from_ref(&w),
        std::slice::from_ref(&v),
    )?;
    let full = hessian(|w| loss(w), &w)?.matmul(&v.reshape(&[3, 1])?)?;
    let gap = hv[0]
        .sub(&full.reshape(&[3])?)?
        .abs()?
        .to_vec()?
        .into_iter()
        .fold(0.0, f64::max);
    println!(
        "H·v by hvp {:.6?}, from the full Hessian: equal to {gap:.0e}",
        hv[0].to_vec()?
    );
    // ANCHOR_END: hvp
    Ok(())
}

//! Depth as representation, exactly: the tent map `t(x) = 1 − |2x − 1|` composed k times
//! (2^(k−1) teeth, 2^k − 1 interior kinks) is computed *exactly* by a ReLU network of depth k
//! and width 2 whose weights are set by hand, with 6k + 1 parameters; any one-hidden-layer ReLU
//! network needs at least 2^k − 1 units (a unit adds at most one kink), i.e. 3(2^k − 1) + 1
//! parameters. No training is involved on either side:
//!
//! * deep: `t(x) = 2·relu(x) − 4·relu(x − ½)` on [0, 1], so each hidden layer computes
//!   `(relu(t), relu(t − ½))` of the previous layer's `t`; the output layer forms `2h₁ − 4h₂`.
//!   Run in f64; its error is measured against `t∘…∘t` computed directly.
//! * shallow, n units: the best fit we can compute, not a trained one — kinks on the uniform
//!   grid `j/n` (j = 0…n−1) and the output layer by least squares on 16,384 points (in the
//!   equivalent hat-function basis, a tridiagonal system). With n = 2^k it is exact (the grid
//!   holds every kink of the target); below 2^k − 1 units no placement can be.
//!
//! Run: `cargo run --release --example depth_representation`

use anyhow::Result;
use nabla::nn::{Mlp, MlpConfig, Module};
use nabla::{no_grad, Rng, Tensor};
use nabla_cli::experiment::{image_dir, table};
use nabla_cli::plots::{chart, Series, Style};

/// The tent map composed `k` times.
fn sawtooth(x: f64, k: u32) -> f64 {
    (0..k).fold(x, |v, _| 1.0 - (2.0 * v - 1.0).abs())
}

/// Test inputs: the dyadic grid of 4,097 points and 20,000 uniform draws on [0, 1].
fn test_points() -> Vec<f64> {
    let mut rng = Rng::new(7);
    let mut xs: Vec<f64> = (0..=4096).map(|i| i as f64 / 4096.0).collect();
    xs.extend((0..20_000).map(|_| rng.uniform()));
    xs
}

/// The depth-k, width-2 ReLU network that computes `t∘…∘t` (k times), weights set by hand.
fn deep_tent(k: u32) -> Result<Mlp<f64>> {
    let mut sizes = vec![1];
    sizes.extend(std::iter::repeat_n(2, k as usize));
    sizes.push(1);
    let model = Mlp::<f64>::new(&MlpConfig::new(&sizes))?;
    let params = model.named_parameters();
    let last = params.len() / 2 - 1;
    for (i, pair) in params.chunks(2).enumerate() {
        let (w, b): (Vec<f64>, Vec<f64>) = match i {
            0 => (vec![1.0, 1.0], vec![0.0, -0.5]),
            i if i == last => (vec![2.0, -4.0], vec![0.0]),
            // [in, out]: from (h₁, h₂) to t = 2h₁ − 4h₂, then (relu(t), relu(t − ½)).
            _ => (vec![2.0, 2.0, -4.0, -4.0], vec![0.0, -0.5]),
        };
        pair[0].1.update_data(|d| d.copy_from_slice(&w))?;
        pair[1].1.update_data(|d| d.copy_from_slice(&b))?;
    }
    Ok(model)
}

/// Max |network − target| over `xs`.
fn deep_error(k: u32, xs: &[f64]) -> Result<f64> {
    let model = deep_tent(k)?;
    let x = Tensor::<f64>::from_vec(xs.to_vec(), &[xs.len(), 1])?;
    let y = no_grad(|| model.forward(&x))?.to_vec()?;
    Ok(xs
        .iter()
        .zip(y)
        .map(|(&x, y)| (y - sawtooth(x, k)).abs())
        .fold(0.0, f64::max))
}

/// The least-squares continuous piecewise-linear fit with knots `j/n` (j = 0…n): the function a
/// one-hidden-layer ReLU net with n units (kinks at j/n, j < n) and an output bias computes.
/// Returns the values at the n + 1 knots.
fn shallow_fit(n: usize, k: u32) -> Vec<f64> {
    // Hat basis φ_j, j = 0..=n: normal equations are tridiagonal.
    let m = 16_384;
    let (mut diag, mut off, mut rhs) = (vec![0.0; n + 1], vec![0.0; n], vec![0.0; n + 1]);
    for i in 0..m {
        let x = (i as f64 + 0.5) / m as f64;
        let y = sawtooth(x, k);
        let s = x * n as f64;
        let j = (s.floor() as usize).min(n - 1);
        let (a, b) = (1.0 - (s - j as f64), s - j as f64);
        diag[j] += a * a;
        diag[j + 1] += b * b;
        off[j] += a * b;
        rhs[j] += a * y;
        rhs[j + 1] += b * y;
    }
    // Thomas algorithm (the matrix is symmetric positive definite).
    let mut c = vec![0.0; n + 1];
    let mut d = vec![0.0; n + 1];
    for j in 0..=n {
        let prev = if j == 0 { 0.0 } else { off[j - 1] * c[j - 1] };
        let den = diag[j] - prev;
        c[j] = if j < n { off[j] / den } else { 0.0 };
        d[j] = (rhs[j] - if j == 0 { 0.0 } else { off[j - 1] * d[j - 1] }) / den;
    }
    for j in (0..n).rev() {
        d[j] -= c[j] * d[j + 1];
    }
    d
}

/// Max error of [`shallow_fit`] over `xs`.
fn shallow_error(n: usize, k: u32, xs: &[f64]) -> f64 {
    let v = shallow_fit(n, k);
    xs.iter()
        .map(|&x| {
            let s = x * n as f64;
            let j = (s.floor() as usize).min(n - 1);
            let t = s - j as f64;
            ((1.0 - t) * v[j] + t * v[j + 1] - sawtooth(x, k)).abs()
        })
        .fold(0.0, f64::max)
}

struct Row {
    k: u32,
    deep_params: usize,
    deep_error: f64,
    same_budget_error: f64,
    shallow_units: Option<usize>,
}

/// The fewest units (searched up to 2^(k+1)) whose shallow fit reaches max error ≤ ε.
fn units_needed(k: u32, eps: f64, xs: &[f64]) -> Option<usize> {
    (1..=(2usize << k)).find(|&n| shallow_error(n, k, xs) <= eps)
}

const EPS: f64 = 1e-3;

fn run(ks: &[u32]) -> Result<Vec<Row>> {
    let xs = test_points();
    ks.iter()
        .map(|&k| {
            let deep_params = 6 * k as usize + 1;
            Ok(Row {
                k,
                deep_params,
                deep_error: deep_error(k, &xs)?,
                // 1 → n → 1 has 3n + 1 parameters.
                same_budget_error: shallow_error((deep_params - 1) / 3, k, &xs),
                shallow_units: units_needed(k, EPS, &xs),
            })
        })
        .collect()
}

fn plot(rows: &[Row]) -> Result<()> {
    let pts = |f: &dyn Fn(&Row) -> Option<f64>| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|r| Some((r.k as f64, f(r)?)))
            .collect()
    };
    let series = vec![
        Series::new(
            "deep, width 2 (exact)",
            pts(&|r| Some(r.deep_params as f64)),
        ),
        Series::new(
            "one hidden layer, measured (max error ≤ 1e-3)",
            pts(&|r| r.shallow_units.map(|n| (3 * n + 1) as f64)),
        ),
        Series::new(
            "one hidden layer, lower bound 3(2^k − 1) + 1",
            pts(&|r| Some((3 * ((1usize << r.k) - 1) + 1) as f64)),
        )
        .style(Style::Line),
    ];
    chart(
        &image_dir()?.join("depth_representation.png"),
        "Parameters to represent the tent map composed k times",
        "k (compositions)",
        "parameters (log scale)",
        &series,
        true,
    )
}

fn main() -> Result<()> {
    let rows = run(&(1..=10).collect::<Vec<_>>())?;
    plot(&rows)?;
    let t: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let lower = (1usize << r.k) - 1;
            vec![
                r.k.to_string(),
                r.deep_params.to_string(),
                format!("{:.1e}", r.deep_error),
                format!("{:.2}", r.same_budget_error),
                format!("{} ({})", lower, 3 * lower + 1),
                r.shallow_units
                    .map_or("-".into(), |n| format!("{n} ({})", 3 * n + 1)),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "k",
                "deep params (6k+1)",
                "deep max error",
                "shallow max error, same params",
                "shallow units needed, lower bound (params)",
                "shallow units measured, max error ≤ 1e-3 (params)",
            ],
            &t
        )
    );
    println!("plot: examples/images/depth_representation.png");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deep_construction_is_exact_where_the_same_budget_shallow_net_is_not() {
        let rows = run(&[6]).unwrap();
        let r = &rows[0];
        assert!(r.deep_error < 1e-6, "deep error {}", r.deep_error);
        assert!(
            r.same_budget_error > 1e-2,
            "shallow error {}",
            r.same_budget_error
        );
        // The grid fit reaches 1e-3 only with at least 2^k − 1 units.
        assert!(r.shallow_units.unwrap() >= (1 << 6) - 1);
    }
}

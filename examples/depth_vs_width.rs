//! Depth against width at equal parameter counts, on a target that rewards depth: a sawtooth
//! made by composing the tent map t(x) = 1 − |2x − 1| with itself four times (8 teeth, 16
//! linear pieces). A deep ReLU network can build it by composition, doubling the number of
//! pieces with every layer (width 2 per layer suffices); a one-hidden-layer network needs one
//! unit per kink. Whether gradient descent finds the compositional solution is another matter:
//! the table shows where depth wins (small budgets) and where the wide network, once it has
//! enough units for every kink, fits better. Each network is the best of 2 seeds × 2 learning
//! rates (by training loss), trained with full-batch Adam. A third column re-trains each deep
//! network with what `depth_optimisation` found makes deep nets trainable: Kaiming weights,
//! residual blocks (branches scaled by 1/√depth) and a learning-rate warm-up (a tenth of the
//! steps).
//!
//! Run: `cargo run --release --example depth_vs_width`

use anyhow::Result;
use nabla::nn::loss::{self, Reduction};
use nabla::nn::{Activation, Init, Linear, Mlp, MlpConfig, Module, Residual, Sequential};
use nabla::{Rng, Tensor};
use nabla_cli::experiment::{fit_warmup, image_dir, mse_of, table};
use nabla_cli::plots::{chart, model_curve, Series, Style};

struct Config {
    /// (width, hidden layers) of each deep network; the shallow one gets the same parameters.
    deep: Vec<(usize, usize)>,
    compositions: u32,
    steps: u64,
    seeds: u64,
    plots: bool,
    /// Also train the residual + warm-up variant of each deep network.
    residual: bool,
}

struct Row {
    params: usize,
    deep: (usize, usize),
    shallow_width: usize,
    deep_mse: f64,
    shallow_mse: f64,
    residual_mse: f64,
}

fn sawtooth(x: f64, k: u32) -> f64 {
    (0..k).fold(x, |v, _| 1.0 - (2.0 * v - 1.0).abs())
}

fn data(n: usize, k: u32, seed: u64) -> Result<(Tensor<f32>, Tensor<f32>)> {
    let mut rng = Rng::new(seed);
    // Inputs centred on [−1, 1]; the target is the sawtooth of (x + 1)/2.
    let xs: Vec<f64> = (0..n).map(|_| rng.uniform_in(-1.0, 1.0)).collect();
    let ys: Vec<f32> = xs
        .iter()
        .map(|&x| sawtooth((x + 1.0) / 2.0, k) as f32)
        .collect();
    let xs: Vec<f32> = xs.iter().map(|&x| x as f32).collect();
    Ok((
        Tensor::from_vec(xs, &[n, 1])?,
        Tensor::from_vec(ys, &[n, 1])?,
    ))
}

/// Zero biases put every first-layer ReLU kink at x = 0 and leave half the units dead on one
/// side; biases drawn from U(−1, 1) spread the kinks over the input range instead.
fn spread_biases(m: &dyn Module, seed: u64) -> Result<()> {
    let mut rng = Rng::new(seed);
    for (name, p) in m.named_parameters() {
        if name.ends_with("bias") {
            p.update_data(|b| {
                b.iter_mut()
                    .for_each(|v| *v = rng.uniform_in(-1.0, 1.0) as f32)
            })?;
        }
    }
    Ok(())
}

fn params(sizes: &[usize]) -> usize {
    sizes.windows(2).map(|w| w[0] * w[1] + w[1]).sum()
}

/// Trains the networks `make(seed)` with each seed and learning rate (after `warmup` warm-up
/// steps); returns the best test MSE (by training loss) and the model.
fn best_fit(
    make: &dyn Fn(u64) -> Result<Box<dyn Module>>,
    warmup: u64,
    cfg: &Config,
    train: &(Tensor<f32>, Tensor<f32>),
    test: &(Tensor<f32>, Tensor<f32>),
) -> Result<(f64, Box<dyn Module>)> {
    let mut best: Option<(f64, f64, Box<dyn Module>)> = None;
    for seed in 0..cfg.seeds {
        for lr in [0.01, 0.03] {
            let m = make(seed)?;
            let l = fit_warmup(m.as_ref(), &train.0, cfg.steps, warmup, lr, |out| {
                loss::mse(out, &train.1, Reduction::Mean)
            })?;
            if best.as_ref().is_none_or(|b| l < b.0) {
                best = Some((l, mse_of(m.as_ref(), &test.0, &test.1)?, m));
            }
        }
    }
    let (_, mse, m) = best.expect("at least one run");
    Ok((mse, m))
}

/// An MLP of `sizes` (Kaiming-uniform weights, spread biases).
fn plain(sizes: &[usize], seed: u64) -> Result<Box<dyn Module>> {
    let mut c = MlpConfig::new(sizes);
    c.seed = 100 + seed;
    let m = Mlp::<f32>::new(&c)?;
    spread_biases(&m, 200 + seed)?;
    Ok(Box::new(m))
}

/// What `depth_optimisation` found trains deep nets: Kaiming weights and a residual block
/// around every hidden layer after the first, its branch scaled by 1/√depth.
fn residual(width: usize, depth: usize, seed: u64) -> Result<Box<dyn Module>> {
    let mut rng = Rng::new(100 + seed);
    let layer =
        |i: usize, o: usize, rng: &mut Rng| Linear::new(i, o, true, Init::KaimingNormal, rng);
    let mut net = Sequential::new()
        .with(layer(1, width, &mut rng)?)
        .with(Activation::Relu);
    for _ in 1..depth {
        let l = layer(width, width, &mut rng)?;
        let s = 1.0 / (depth as f32).sqrt();
        l.weight
            .update_data(|w| w.iter_mut().for_each(|v| *v *= s))?;
        net = net.with(Residual::new(
            Sequential::new().with(l).with(Activation::Relu),
        ));
    }
    let net = net.with(layer(width, 1, &mut rng)?);
    spread_biases(&net, 200 + seed)?;
    Ok(Box::new(net))
}

fn run(cfg: &Config) -> Result<Vec<Row>> {
    let train = data(1000, cfg.compositions, 0)?;
    let test = data(2000, cfg.compositions, 1)?;
    let mut rows = Vec::new();
    let mut fits = Vec::new();
    for &(w, depth) in &cfg.deep {
        let mut deep_sizes = vec![1];
        deep_sizes.extend(std::iter::repeat_n(w, depth));
        deep_sizes.push(1);
        let p = params(&deep_sizes);
        // 1 → W → 1 has 3W + 1 parameters.
        let shallow_width = (p - 1) / 3;
        let (deep_mse, deep_model) = best_fit(&|s| plain(&deep_sizes, s), 0, cfg, &train, &test)?;
        let (shallow_mse, shallow_model) =
            best_fit(&|s| plain(&[1, shallow_width, 1], s), 0, cfg, &train, &test)?;
        let (residual_mse, residual_model) = if cfg.residual {
            best_fit(
                &|s| residual(w, depth, s),
                cfg.steps / 10,
                cfg,
                &train,
                &test,
            )?
        } else {
            (f64::NAN, plain(&deep_sizes, 0)?)
        };
        rows.push(Row {
            params: p,
            deep: (w, depth),
            shallow_width,
            deep_mse,
            shallow_mse,
            residual_mse,
        });
        fits.push((
            w,
            depth,
            shallow_width,
            deep_model,
            shallow_model,
            residual_model,
        ));
    }
    if cfg.plots {
        let grid: Vec<f32> = (0..1000).map(|i| -1.0 + 2.0 * i as f32 / 999.0).collect();
        let (w, depth, sw, deep, shallow, res) = fits.first().expect("one configuration");
        let curve = |m: &dyn Module| model_curve(m, &grid);
        let series = vec![
            Series::new(
                "target",
                grid.iter()
                    .map(|&x| (x as f64, sawtooth((x as f64 + 1.0) / 2.0, cfg.compositions)))
                    .collect(),
            )
            .style(Style::Line),
            Series::new(
                format!("deep: {depth} layers of {w}"),
                curve(deep.as_ref())?,
            )
            .style(Style::Line),
            Series::new(
                format!("shallow: 1 layer of {sw}"),
                curve(shallow.as_ref())?,
            )
            .style(Style::Line),
            Series::new(
                format!("deep residual + warm-up: {depth} × {w}"),
                curve(res.as_ref())?,
            )
            .style(Style::Line),
        ];
        chart(
            &image_dir()?.join("depth_vs_width_fits.png"),
            "Sawtooth (tent map composed 4 times), equal parameters",
            "x",
            "y",
            &series,
            false,
        )?;
        let err = vec![
            Series::new(
                "deep, narrow",
                rows.iter().map(|r| (r.params as f64, r.deep_mse)).collect(),
            ),
            Series::new(
                "shallow, wide",
                rows.iter()
                    .map(|r| (r.params as f64, r.shallow_mse))
                    .collect(),
            ),
            Series::new(
                "deep, residual + warm-up",
                rows.iter()
                    .map(|r| (r.params as f64, r.residual_mse))
                    .collect(),
            ),
        ];
        chart(
            &image_dir()?.join("depth_vs_width_error.png"),
            "Test error at equal parameter counts",
            "parameters",
            "test MSE (log scale)",
            &err,
            true,
        )?;
    }
    Ok(rows)
}

fn main() -> Result<()> {
    let rows = run(&Config {
        deep: vec![(6, 4), (8, 4), (10, 5)],
        compositions: 4,
        steps: 4000,
        seeds: 2,
        plots: true,
        residual: true,
    })?;
    let t: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.params.to_string(),
                format!("{} layers × {}", r.deep.1, r.deep.0),
                format!("{:.2e}", r.deep_mse),
                format!("1 layer × {}", r.shallow_width),
                format!("{:.2e}", r.shallow_mse),
                format!("{:.2e}", r.residual_mse),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "parameters",
                "deep",
                "deep test MSE",
                "shallow",
                "shallow test MSE",
                "deep residual + warm-up test MSE",
            ],
            &t
        )
    );
    println!("plots: examples/images/depth_vs_width_fits.png, depth_vs_width_error.png");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_narrow_beats_shallow_wide_at_a_small_equal_budget() {
        let rows = run(&Config {
            deep: vec![(6, 4)],
            compositions: 4,
            steps: 4000,
            seeds: 2,
            plots: false,
            residual: false,
        })
        .unwrap();
        let r = &rows[0];
        assert!(
            r.deep_mse < 0.7 * r.shallow_mse,
            "deep {} vs shallow {}",
            r.deep_mse,
            r.shallow_mse
        );
    }
}

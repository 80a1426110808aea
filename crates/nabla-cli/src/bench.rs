//! `nabla bench`: the three training workloads of the cross-system benchmark, timed, one JSON
//! line each. `bench/pytorch_reference.py` runs the same workloads in PyTorch.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use nabla::data::batch_indices;
use nabla::data::mnist::{load_mnist_dir, Split, FASHION_MNIST_DIR};
use nabla::data::synthetic::spiral;
use nabla::nn::loss::{self, Reduction, Target};
use nabla::nn::{
    Activation, Conv2d, Flatten, Init, Linear, MaxPool2d, Mlp, MlpConfig, Module, Sequential,
};
use nabla::ops::Conv2dOptions;
use nabla::optim::{Adam, AdamConfig, Optimizer};
use nabla::{no_grad, Rng, Tensor};
use serde_json::json;

use crate::args::{BenchArgs, Workload};
use crate::train::set_threads;

/// One optimizer step on a batch: forward, cross-entropy, backward, Adam; with the other
/// threads kept awake through it (`nabla::threads::warm`, as `nabla train` does) unless `cold`.
fn step(model: &Mlp, opt: &mut Adam, x: &Tensor<f32>, labels: &[usize], cold: bool) -> Result<f32> {
    nabla::threads::warm_if(!cold, || {
        let out = model.forward(x)?;
        let l = loss::cross_entropy(&out, Target::Classes(labels), 0.0, Reduction::Mean)?;
        let v = l.item()?;
        opt.step(&l.backward()?)?;
        Ok(v)
    })
}

fn model(sizes: &[usize]) -> Result<(Mlp, Adam)> {
    let m = Mlp::<f32>::new(&MlpConfig::new(sizes))?;
    let opt = Adam::new(m.named_parameters(), AdamConfig::adam(1e-3))?;
    Ok((m, opt))
}

fn threads() -> usize {
    rayon::current_num_threads()
}

/// tiny: 2-64-64-3 on a 3-class spiral of 1000 points per class, batch 32, `steps` steps.
fn tiny(steps: u64, cold: bool) -> Result<serde_json::Value> {
    let data = spiral(1000, 3, 0.2, 0)?;
    let (m, mut opt) = model(&[2, 64, 64, 3])?;
    let mut rng = Rng::new(1);
    let mut batches = Vec::new();
    let start = Instant::now();
    let mut last = 0.0;
    for _ in 0..steps {
        if batches.is_empty() {
            batches = batch_indices(data.len(), 32, Some(&mut rng), true)?;
            batches.reverse();
        }
        let Some(idx) = batches.pop() else {
            bail!("internal: no batch of 32 in the spiral");
        };
        let x = data.x.index_select(0, &idx)?;
        let y: Vec<usize> = idx.iter().map(|&i| data.labels[i]).collect();
        last = step(&m, &mut opt, &x, &y, cold)?;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(
        json!({"name": "tiny", "system": "nabla", "threads": threads(), "warm": !cold, "steps": steps,
              "seconds": secs, "steps_per_s": steps as f64 / secs, "final_loss": last}),
    )
}

/// fashion: 784-512-256-10 on Fashion-MNIST (pixels/255), batch 128, one shuffled epoch
/// (or `max_steps`), then test accuracy (not timed).
fn fashion(dir: &PathBuf, max_steps: Option<u64>, cold: bool) -> Result<serde_json::Value> {
    let train = load_mnist_dir(dir, Split::Train)?;
    let test = load_mnist_dir(dir, Split::Test)?;
    let (m, mut opt) = model(&[784, 512, 256, 10])?;
    let mut rng = Rng::new(1);
    let batches = batch_indices(train.len(), 128, Some(&mut rng), false)?;
    let limit = max_steps.unwrap_or(u64::MAX) as usize;
    let start = Instant::now();
    let mut steps = 0;
    for idx in batches.iter().take(limit) {
        let x = train.x.index_select(0, idx)?;
        let y: Vec<usize> = idx.iter().map(|&i| train.labels[i]).collect();
        step(&m, &mut opt, &x, &y, cold)?;
        steps += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let out = no_grad(|| m.forward(&test.x))?;
    let acc = loss::accuracy(&loss::predict_class(&out)?, &test.labels);
    Ok(
        json!({"name": "fashion", "system": "nabla", "threads": threads(), "warm": !cold, "steps": steps,
              "epoch_seconds": secs, "test_accuracy": acc}),
    )
}

/// wide: 784-2048-2048-10 on Fashion-MNIST, batch 512, `steps` steps; GFLOP/s counts
/// 6 · weights · batch per step (forward 2, backward 4 multiply-adds per weight and sample).
fn wide(dir: &PathBuf, steps: u64, cold: bool) -> Result<serde_json::Value> {
    let train = load_mnist_dir(dir, Split::Train)?;
    let sizes = [784, 2048, 2048, 10];
    let (m, mut opt) = model(&sizes)?;
    let weights: usize = sizes.windows(2).map(|w| w[0] * w[1]).sum();
    let mut rng = Rng::new(1);
    let batches = batch_indices(train.len(), 512, Some(&mut rng), true)?;
    if batches.len() < 2 {
        bail!(
            "{}: the wide workload needs at least 1024 training images, found {}",
            dir.display(),
            train.len()
        );
    }
    // one untimed warm-up step (first-touch of all buffers)
    let warm = &batches[0];
    let y0: Vec<usize> = warm.iter().map(|&i| train.labels[i]).collect();
    step(&m, &mut opt, &train.x.index_select(0, warm)?, &y0, cold)?;
    let start = Instant::now();
    for s in 0..steps as usize {
        let idx = &batches[1 + s % (batches.len() - 1)];
        let x = train.x.index_select(0, idx)?;
        let y: Vec<usize> = idx.iter().map(|&i| train.labels[i]).collect();
        step(&m, &mut opt, &x, &y, cold)?;
    }
    let secs = start.elapsed().as_secs_f64();
    let gflops = 6.0 * weights as f64 * 512.0 * steps as f64 / secs / 1e9;
    Ok(
        json!({"name": "wide", "system": "nabla", "threads": threads(), "warm": !cold, "steps": steps,
              "seconds": secs, "gflops": gflops}),
    )
}

/// The benchmark CNN: conv(1→32, 3×3, pad 1)–ReLU–maxpool 2–conv(32→64, 3×3, pad 1)–ReLU–
/// maxpool 2–Linear(3136→128)–ReLU–Linear(128→10), Kaiming-uniform weights.
pub fn cnn_model(seed: u64) -> nabla::Result<Sequential<f32>> {
    let mut rng = Rng::new(seed);
    let pad1 = Conv2dOptions {
        padding: (1, 1),
        ..Default::default()
    };
    let init = Init::KaimingUniform;
    Ok(Sequential::new()
        .with(Conv2d::new(1, 32, (3, 3), pad1, true, init, &mut rng)?)
        .with(Activation::Relu)
        .with(MaxPool2d::new((2, 2)))
        .with(Conv2d::new(32, 64, (3, 3), pad1, true, init, &mut rng)?)
        .with(Activation::Relu)
        .with(MaxPool2d::new((2, 2)))
        .with(Flatten::new())
        .with(Linear::new(3136, 128, true, init, &mut rng)?)
        .with(Activation::Relu)
        .with(Linear::new(128, 10, true, init, &mut rng)?))
}

/// cnn: [`cnn_model`] on Fashion-MNIST images `[128, 1, 28, 28]` (pixels/255), Adam 1e-3, one
/// shuffled epoch (or `max_steps`), then test accuracy (not timed).
fn cnn(dir: &PathBuf, max_steps: Option<u64>, cold: bool) -> Result<serde_json::Value> {
    let train = load_mnist_dir(dir, Split::Train)?;
    let test = load_mnist_dir(dir, Split::Test)?;
    let m = cnn_model(0)?;
    let mut opt = Adam::new(m.named_parameters(), AdamConfig::adam(1e-3))?;
    let mut rng = Rng::new(1);
    let batches = batch_indices(train.len(), 128, Some(&mut rng), false)?;
    let limit = max_steps.unwrap_or(u64::MAX) as usize;
    let images = |x: Tensor<f32>| {
        let n = x.shape()[0];
        x.reshape(&[n, 1, 28, 28])
    };
    let start = Instant::now();
    let mut steps = 0;
    for idx in batches.iter().take(limit) {
        let x = images(train.x.index_select(0, idx)?)?;
        let y: Vec<usize> = idx.iter().map(|&i| train.labels[i]).collect();
        nabla::threads::warm_if(!cold, || {
            let l =
                loss::cross_entropy(&m.forward(&x)?, Target::Classes(&y), 0.0, Reduction::Mean)?;
            opt.step(&l.backward()?)
        })?;
        steps += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let mut correct = Vec::new();
    for chunk in (0..test.len()).collect::<Vec<_>>().chunks(1000) {
        let x = images(test.x.index_select(0, chunk)?)?;
        correct.extend(loss::predict_class(&no_grad(|| m.forward(&x))?)?);
    }
    let acc = loss::accuracy(&correct, &test.labels);
    Ok(
        json!({"name": "cnn", "system": "nabla", "threads": threads(), "warm": !cold, "steps": steps,
              "epoch_seconds": secs, "seconds_per_step": secs / steps.max(1) as f64,
              "test_accuracy": acc}),
    )
}

/// Runs `nabla bench`.
/// infer: `calls` single-row predictions (each timed: median and p99 in µs), then batches of
/// 256 rows for at least a second (rows/s), through `Predictor`, on inputs drawn N(0, 1) of the
/// model's input shape. The model: `model`'s file, else a 784-512-256-10 ReLU MLP.
fn infer(model: Option<&PathBuf>, calls: u64) -> Result<serde_json::Value> {
    let net = match model {
        Some(p) => nabla::io::load_model(p)?.0,
        None => nabla::nn::ModelSpec::mlp(&MlpConfig::new(&[784, 512, 256, 10])).build()?,
    };
    let what = model.map_or("mlp 784-512-256-10".to_string(), |p| {
        p.display().to_string()
    });
    let sample = net.spec().input.clone();
    let shaped = |rows: usize| [&[rows][..], &sample[..]].concat();
    let predictor = nabla::nn::Predictor::new(net).with_batch(256)?;
    let one = Tensor::<f32>::randn(&shaped(1), 0.0, 1.0, 1)?;
    let many = Tensor::<f32>::randn(&shaped(256), 0.0, 1.0, 2)?;
    // Warm-up (first-touch allocations, the thread pool).
    for _ in 0..100 {
        predictor.predict(&one)?;
    }
    let mut times = Vec::with_capacity(calls as usize);
    for _ in 0..calls {
        let t = Instant::now();
        std::hint::black_box(predictor.predict(&one)?);
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    predictor.predict(&many)?;
    let (start, mut batches) = (Instant::now(), 0u64);
    while batches < 10 || start.elapsed().as_secs_f64() < 1.0 {
        std::hint::black_box(predictor.predict(&many)?);
        batches += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(
        json!({"name": "infer", "system": "nabla", "model": what, "threads": threads(),
        "calls": calls, "batch1_median_us": at(0.5), "batch1_p99_us": at(0.99),
        "batch256_rows_per_s": (batches * 256) as f64 / secs}),
    )
}

pub fn run(args: &BenchArgs) -> Result<()> {
    set_threads(args.threads)?;
    if let Some(t) = args.max_isa {
        nabla::isa::set_max(Some(t));
    }
    // Every line names the instruction-set tier its kernels ran on.
    let tier = nabla::isa::active().name();
    let print = |mut v: serde_json::Value| {
        v["isa_tier"] = json!(tier);
        crate::outln!("{v}");
    };
    if cfg!(debug_assertions) && std::env::var_os("NABLA_NO_DEBUG_WARNING").is_none() {
        eprintln!("warning: this is a debug build; benchmark numbers mean nothing (use --release)");
    }
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(FASHION_MNIST_DIR));
    let all = args.workload == Workload::All;
    if args.steps == Some(0) {
        bail!("--steps must be at least 1");
    }
    // The peak is measured first (and reused by wide for its ratio).
    let mut peak = None;
    if all || args.workload == Workload::Peak {
        let p = crate::peak::peak(threads());
        print(p.clone());
        peak = Some(p);
    }
    if all || args.workload == Workload::Tiny {
        print(tiny(args.steps.unwrap_or(10_000), args.cold)?);
    }
    if all || args.workload == Workload::Fashion {
        print(fashion(&dir, args.steps, args.cold)?);
    }
    if args.workload == Workload::Cnn {
        print(cnn(&dir, args.steps, args.cold)?);
    }
    if args.workload == Workload::Infer {
        print(infer(args.model.as_ref(), args.steps.unwrap_or(10_000))?);
    } else if args.model.is_some() {
        bail!("--model is for --workload infer");
    }
    if all || args.workload == Workload::Wide {
        let mut w = wide(&dir, args.steps.unwrap_or(40), args.cold)?;
        let p = peak.get_or_insert_with(|| crate::peak::peak(threads()));
        if let (Some(g), Some(top)) = (w["gflops"].as_f64(), p["gflops"].as_f64()) {
            w["peak_gflops"] = json!(top);
            w["of_peak"] = json!(g / top);
        }
        print(w);
    }
    Ok(())
}

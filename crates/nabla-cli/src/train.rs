//! `nabla train`: the training loop, progress output and the run directory.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use nabla::autograd::{detect_anomaly, Anomaly};
use nabla::data::{batch_indices, Normalizer};
use nabla::io::{load_training_state, save_training_state, TrainingState};
use nabla::nn::loss::predict_class;
use nabla::nn::{Activation, Init, Mlp, MlpConfig, Module};
use nabla::optim::{clip_grad_norm, Adam, AdamConfig, LrSchedule, Optimizer, Sgd, SgdConfig};
use nabla::{Rng, Tensor};
use serde_json::json;
use std::collections::BTreeMap;

use clap::Parser;

use crate::args::{LossName, OptimizerName, ScheduleName, Task, TrainArgs, TrainOnly};
use crate::dataset::{self, TaskData};
use crate::metrics::{batch_loss, evaluate, EpochMetrics, Evaluation};
use crate::model::{save_model, ModelMeta};
use crate::plots;

/// Sets the thread count of the GEMM and of the element-wise kernels.
pub fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(n) = threads {
        if n == 0 {
            bail!("--threads must be at least 1");
        }
        // matrixmultiply reads this once, at its first product.
        std::env::set_var("MATMUL_NUM_THREADS", n.to_string());
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("cannot configure the thread pool")?;
    }
    Ok(())
}

fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn run_dir(args: &TrainArgs, name: &str) -> Result<PathBuf> {
    let dir = match &args.out {
        Some(d) => d.clone(),
        None => {
            let base = PathBuf::from("runs").join(format!("{name}-{}", utc_stamp()));
            let mut dir = base.clone();
            let mut i = 1;
            while dir.exists() {
                dir = PathBuf::from(format!("{}-{i}", base.display()));
                i += 1;
            }
            dir
        }
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("{}: cannot create the run directory", dir.display()))?;
    Ok(dir)
}

fn write_metrics(dir: &Path, rows: &[EpochMetrics]) -> Result<()> {
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v}"));
    let mut csv = String::from(
        "epoch,step,lr,train_loss,train_accuracy,val_loss,val_accuracy,test_loss,test_accuracy,seconds,samples_per_second\n",
    );
    for r in rows {
        writeln!(
            csv,
            "{},{},{},{},{},{},{},{},{},{},{}",
            r.epoch,
            r.step,
            r.lr,
            r.train_loss,
            opt(r.train_accuracy),
            opt(r.val_loss),
            opt(r.val_accuracy),
            opt(r.test_loss),
            opt(r.test_accuracy),
            r.seconds,
            r.samples_per_second
        )?;
    }
    nabla::io::write_atomic(&dir.join("metrics.csv"), csv.as_bytes())?;
    let json = serde_json::to_string_pretty(rows)?;
    nabla::io::write_atomic(&dir.join("metrics.json"), json.as_bytes())?;
    Ok(())
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2}%", 100.0 * v))
}

const CHECKPOINT: &str = "checkpoint.safetensors";

/// Runs `nabla train`; `argv` are its arguments after `train`, kept in checkpoints so that
/// `--resume` can continue with the same settings.
pub fn run(args: &TrainArgs, argv: &[String]) -> Result<()> {
    let Some(dir) = &args.resume else {
        return train(args, argv, None);
    };
    let ckpt = dir.join(CHECKPOINT);
    if !ckpt.is_file() {
        bail!(
            "{}: no checkpoint to resume from (train with --checkpoint-every N to write one)",
            ckpt.display()
        );
    }
    let file = nabla::io::read_tensor_file(&ckpt)?;
    let saved: Vec<String> = file
        .metadata
        .get("extra.argv")
        .and_then(|a| serde_json::from_str(a).ok())
        .with_context(|| {
            format!(
                "{}: the checkpoint does not record its command line",
                ckpt.display()
            )
        })?;
    let parsed = TrainOnly::try_parse_from(
        std::iter::once("nabla train".to_string()).chain(saved.iter().cloned()),
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "{}: the saved command line no longer parses: {}",
            ckpt.display(),
            e.to_string().lines().next().unwrap_or("")
        )
    })?;
    let mut resumed = parsed.args;
    resumed.out = Some(dir.clone());
    resumed.resume = None;
    resumed.quiet |= args.quiet;
    resumed.threads = args.threads.or(resumed.threads);
    train(&resumed, &saved, Some(&ckpt))
}

/// One batch: forward pass and loss. Returns (outputs, loss, labels).
fn forward_batch(
    model: &Mlp,
    data: &TaskData,
    idx: &[usize],
    kind: LossName,
    smoothing: f64,
) -> Result<(Tensor<f32>, Tensor<f32>, Vec<usize>)> {
    Ok(match data {
        TaskData::Class(c) => {
            let x = c.x.index_select(0, idx)?;
            let labels: Vec<usize> = idx.iter().map(|&i| c.labels[i]).collect();
            let out = model.forward(&x)?;
            let l = batch_loss(kind, &out, &labels, None, smoothing)?;
            (out, l, labels)
        }
        TaskData::Reg(r) => {
            let x = r.x.index_select(0, idx)?;
            let y = r.y.index_select(0, idx)?;
            let out = model.forward(&x)?;
            let l = batch_loss(kind, &out, &[], Some(&y), 0.0)?;
            (out, l, vec![])
        }
    })
}

/// Parameters holding NaN or ±∞, with how many of their values: the layer to blame when the
/// weights themselves went bad (a bad checkpoint, or an update that overflowed).
fn non_finite_parameters(params: &[(String, Tensor)]) -> String {
    let bad: Vec<String> = params
        .iter()
        .filter(|(_, p)| !p.all_finite())
        .map(|(name, p)| {
            let values = p.to_vec().unwrap_or_default();
            let n = values.iter().filter(|v| !v.is_finite()).count();
            format!("{name} {:?} ({n} of {})", p.shape(), p.numel())
        })
        .collect();
    if bad.is_empty() {
        String::new()
    } else {
        format!("; non-finite parameters: {}", bad.join(", "))
    }
}

fn diverged(
    step: u64,
    epoch: usize,
    what: &str,
    anomaly: Option<Anomaly>,
    params: &[(String, Tensor)],
    last_good: Option<u64>,
    dir: &Path,
) -> anyhow::Error {
    let mut culprit = match anomaly {
        Some(a) => format!("; first non-finite value in forward order: {a}"),
        None => String::new(),
    };
    let bad_params = non_finite_parameters(params);
    culprit += &bad_params;
    let kept = match last_good {
        // The weights were already bad when this step began: the checkpoint holds them.
        Some(s) if s == step && !bad_params.is_empty() => format!(
            "; the checkpoint of step {s}, {}, already holds them",
            dir.join(CHECKPOINT).display()
        ),
        Some(s) => format!(
            "; the last good checkpoint (step {s}) is {}",
            dir.join(CHECKPOINT).display()
        ),
        None => String::new(),
    };
    anyhow::anyhow!("training diverged at step {step} (epoch {epoch}): {what}{culprit}{kept}; try a smaller --lr or --clip")
}

fn train(args: &TrainArgs, argv: &[String], resume_from: Option<&Path>) -> Result<()> {
    if cfg!(debug_assertions) && std::env::var_os("NABLA_NO_DEBUG_WARNING").is_none() {
        eprintln!(
            "warning: this is a debug build, training runs many times slower; use \
             `cargo run --release -p nabla-cli -- train`"
        );
    }
    set_threads(args.threads)?;
    let data = dataset::load(&args.data)?;
    let d = &data.defaults;
    let loss_kind = args.loss.unwrap_or(match data.task {
        Task::Classification => LossName::CrossEntropy,
        Task::Regression => LossName::Mse,
    });
    if (loss_kind == LossName::CrossEntropy) != (data.task == Task::Classification) {
        bail!(
            "--loss {loss_kind:?} does not fit a {:?} data set",
            data.task
        );
    }
    let activation: Activation = args.activation.as_deref().unwrap_or(d.activation).parse()?;
    let hidden = args.hidden.clone().unwrap_or_else(|| d.hidden.clone());
    let epochs = args.epochs.unwrap_or(d.epochs);
    let batch = args.batch_size.unwrap_or(d.batch);
    let lr = args.lr.unwrap_or(d.lr);
    let optimizer = args.optimizer.unwrap_or(d.optimizer);
    let weight_decay = args.weight_decay.unwrap_or(d.weight_decay);
    let schedule_name = args.schedule.unwrap_or(d.schedule);
    let dropout = args.dropout.unwrap_or(d.dropout);
    let smoothing = args.label_smoothing.unwrap_or(d.label_smoothing);
    if args.checkpoint_every == Some(0) {
        bail!("--checkpoint-every must be at least 1");
    }
    if epochs == 0 || batch == 0 {
        bail!("--epochs and --batch-size must be at least 1");
    }
    if hidden.contains(&0) {
        bail!("--hidden {hidden:?}: every width must be at least 1");
    }

    let normalizer = Normalizer::fit(data.train.x(), d.normalization)?;
    let (train, test) = (
        data.train.normalized(&normalizer)?,
        data.test.normalized(&normalizer)?,
    );
    let (train, val) = if args.val_fraction == 0.0 {
        (train, None)
    } else {
        let (tr, va) = train.split(args.val_fraction, args.data.seed ^ 0x0A11_DA7E)?;
        (tr, Some(va))
    };

    let mut sizes = vec![train.features()];
    sizes.extend(&hidden);
    sizes.push(data.outputs);
    let config = MlpConfig {
        sizes,
        activation,
        dropout,
        init: match activation {
            Activation::Tanh | Activation::Sigmoid => Init::XavierUniform,
            _ => Init::KaimingUniform,
        },
        seed: args.data.seed,
    };
    let mut model = Mlp::<f32>::new(&config)?;
    if let Some(k) = args.checkpoint_activations {
        if k == 0 {
            bail!("--checkpoint-activations must be at least 1 (hidden blocks per segment)");
        }
        model.set_checkpoint_every(Some(k))?;
    }
    let params = model.named_parameters();
    let mut opt: Box<dyn Optimizer> = match optimizer {
        OptimizerName::Sgd => Box::new(Sgd::new(
            params,
            SgdConfig {
                lr,
                momentum: args.momentum,
                nesterov: args.nesterov,
                weight_decay,
            },
        )?),
        OptimizerName::Adam => Box::new(Adam::new(
            params,
            AdamConfig {
                weight_decay,
                ..AdamConfig::adam(lr)
            },
        )?),
        OptimizerName::Adamw => Box::new(Adam::new(
            params,
            AdamConfig {
                weight_decay,
                ..AdamConfig::adamw(lr)
            },
        )?),
    };
    let n = train.len();
    if n == 0 {
        bail!("the training set is empty");
    }
    let steps_per_epoch = n.div_ceil(batch) as u64;
    let total_steps = args
        .max_steps
        .unwrap_or(u64::MAX)
        .min(steps_per_epoch * epochs as u64)
        .max(1);
    let main = match schedule_name {
        ScheduleName::Constant => LrSchedule::Constant,
        ScheduleName::Cosine => LrSchedule::Cosine {
            total: total_steps.saturating_sub(args.warmup).max(1),
            min_lr: lr / 100.0,
        },
        ScheduleName::Step => LrSchedule::Step {
            every: (total_steps / 4).max(1),
            gamma: 0.5,
        },
    };
    let schedule = if args.warmup > 0 {
        LrSchedule::Warmup {
            steps: args.warmup,
            then: Box::new(main),
        }
    } else {
        main
    };
    schedule.validate()?;

    let dir = run_dir(args, &data.name)?;
    let settings = json!({
        "dataset": data.name, "source": data.source, "task": data.task,
        "train_samples": n, "validation_samples": val.as_ref().map_or(0, TaskData::len),
        "test_samples": test.len(),
        "model": config, "loss": format!("{loss_kind:?}"), "label_smoothing": smoothing,
        "optimizer": format!("{optimizer:?}"), "lr": lr, "weight_decay": weight_decay,
        "momentum": args.momentum, "nesterov": args.nesterov,
        "schedule": schedule, "clip": args.clip, "epochs": epochs, "batch_size": batch,
        "max_steps": args.max_steps, "threads": args.threads.unwrap_or_else(rayon::current_num_threads),
        "normalization": normalizer.mode, "seed": args.data.seed,
        "nabla_version": env!("CARGO_PKG_VERSION"),
    });
    nabla::io::write_atomic(
        &dir.join("config.json"),
        serde_json::to_string_pretty(&settings)?.as_bytes(),
    )?;

    let tty = std::io::stdout().is_terminal();
    let show = !args.quiet;
    if show {
        println!(
            "training {} on {} ({} train / {} test samples): {}, {} parameters, {} epochs, batch {batch}",
            model.describe(),
            data.name,
            n,
            test.len(),
            format!("{optimizer:?} lr {lr}").to_lowercase(),
            model.parameters().iter().map(|p| p.numel()).sum::<usize>(),
            epochs
        );
    }
    let mut rng = Rng::new(args.data.seed ^ 0x5EED_DA7A);
    let mut step: u64 = 0;
    let mut history: Vec<EpochMetrics> = Vec::new();
    // Where a resumed run picks up: epoch, batches already done in it, running sums.
    let (mut start_epoch, mut skip, mut sums) = (1usize, 0usize, (0.0f64, 0usize, 0usize));
    let mut last_good: Option<u64> = None;
    if let Some(ckpt) = resume_from {
        let st = load_training_state(ckpt, &mut model, opt.as_mut())?;
        let extra = |k: &str| -> Result<&String> {
            st.extra
                .get(k)
                .with_context(|| format!("{}: checkpoint metadata lacks '{k}'", ckpt.display()))
        };
        let num = |k: &str| -> Result<f64> {
            extra(k)?.parse().with_context(|| {
                format!(
                    "{}: checkpoint metadata '{k}' is not a number",
                    ckpt.display()
                )
            })
        };
        step = st.step;
        start_epoch = st.epoch as usize;
        skip = num("batch")? as usize;
        sums = (
            num("loss_sum")?,
            num("correct")? as usize,
            num("seen")? as usize,
        );
        history = serde_json::from_str(extra("history")?).with_context(|| {
            format!(
                "{}: checkpoint metadata 'history' is malformed",
                ckpt.display()
            )
        })?;
        rng = Rng::from_state(st.rng);
        last_good = Some(step);
        if show {
            println!(
                "resuming {} at step {step} (epoch {start_epoch}, batch {skip})",
                dir.display()
            );
        }
    }
    let param_names = model.named_parameters();
    let start = Instant::now();
    'epochs: for epoch in start_epoch..=epochs {
        model.set_training(true);
        let t0 = Instant::now();
        let epoch_rng = rng.state();
        let batches = batch_indices(n, batch, Some(&mut rng), false)?;
        let bar = (show && tty).then(|| {
            let b = ProgressBar::new(batches.len() as u64);
            b.set_style(
                ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            b.set_prefix(format!("{epoch}/{epochs}"));
            b
        });
        let (mut loss_sum, mut correct, mut seen) = if epoch == start_epoch {
            sums
        } else {
            (0.0, 0, 0)
        };
        let first = if epoch == start_epoch { skip } else { 0 };
        for (bi, idx) in batches.iter().enumerate().skip(first) {
            if step >= total_steps {
                break;
            }
            opt.set_lr(schedule.lr_at(lr, step));
            let (out, l, labels) = if args.detect_anomaly {
                let (r, anomaly) =
                    detect_anomaly(|| forward_batch(&model, &train, idx, loss_kind, smoothing));
                if let Some(a) = anomaly {
                    return Err(diverged(
                        step,
                        epoch,
                        "an operation produced a non-finite value",
                        Some(a),
                        &param_names,
                        last_good,
                        &dir,
                    ));
                }
                r?
            } else {
                forward_batch(&model, &train, idx, loss_kind, smoothing)?
            };
            let lv = l.item()? as f64;
            if !lv.is_finite() {
                // Re-run this batch with every op checked, to name the first culprit.
                let (_, anomaly) =
                    detect_anomaly(|| forward_batch(&model, &train, idx, loss_kind, smoothing));
                return Err(diverged(
                    step,
                    epoch,
                    &format!("the loss is {lv}"),
                    anomaly,
                    &param_names,
                    last_good,
                    &dir,
                ));
            }
            let mut grads = l.backward()?;
            // One pass over the gradients: a non-finite one would poison the weights.
            for (name, p) in &param_names {
                if grads.get(p).is_some_and(|g| !g.all_finite()) {
                    return Err(diverged(
                        step,
                        epoch,
                        &format!("the gradient of {name} is not finite (loss {lv})"),
                        None,
                        &param_names,
                        last_good,
                        &dir,
                    ));
                }
            }
            if let Some(c) = args.clip {
                clip_grad_norm(&mut grads, &model.parameters(), c)?;
            }
            opt.step(&grads)?;
            step += 1;
            loss_sum += lv * idx.len() as f64;
            seen += idx.len();
            if !labels.is_empty() {
                let pred = predict_class(&out.detach())?;
                correct += pred.iter().zip(&labels).filter(|(p, l)| p == l).count();
            }
            if args.checkpoint_every.is_some_and(|k| step % k == 0) {
                let state = TrainingState {
                    step,
                    epoch: epoch as u64,
                    rng: epoch_rng,
                    model_config: config.to_json(),
                    extra: BTreeMap::from([
                        ("argv".to_string(), serde_json::to_string(argv)?),
                        ("batch".to_string(), (bi + 1).to_string()),
                        ("loss_sum".to_string(), format!("{loss_sum:?}")),
                        ("correct".to_string(), correct.to_string()),
                        ("seen".to_string(), seen.to_string()),
                        ("history".to_string(), serde_json::to_string(&history)?),
                    ]),
                };
                save_training_state(dir.join(CHECKPOINT), &model, opt.as_ref(), &state)?;
                last_good = Some(step);
            }
            if let Some(b) = &bar {
                b.inc(1);
                if bi % 10 == 0 {
                    let rate = seen as f64 / t0.elapsed().as_secs_f64().max(1e-9);
                    let acc = if labels.is_empty() {
                        String::new()
                    } else {
                        format!(" acc {:.1}%", 100.0 * correct as f64 / seen as f64)
                    };
                    b.set_message(format!(
                        "loss {:.4}{acc} {:.0} samples/s",
                        loss_sum / seen as f64,
                        rate
                    ));
                }
            }
        }
        if seen == 0 {
            break 'epochs;
        }
        let train_secs = t0.elapsed().as_secs_f64();
        model.set_training(false);
        let last_epoch = epoch == epochs || step >= total_steps;
        let val_eval: Option<Evaluation> = match &val {
            Some(v) if !v.is_empty() => Some(evaluate(&model, v, loss_kind)?),
            _ => None,
        };
        // With a validation set the test set is looked at once, at the end.
        let eval: Option<Evaluation> = if !test.is_empty() && (val.is_none() || last_epoch) {
            Some(evaluate(&model, &test, loss_kind)?)
        } else {
            None
        };
        let row = EpochMetrics {
            epoch,
            step,
            lr: opt.lr(),
            train_loss: loss_sum / seen as f64,
            train_accuracy: (data.task == Task::Classification)
                .then(|| correct as f64 / seen as f64),
            val_loss: val_eval.as_ref().map(|e| e.loss),
            val_accuracy: val_eval.as_ref().and_then(|e| e.accuracy),
            test_loss: eval.as_ref().map(|e| e.loss),
            test_accuracy: eval.as_ref().and_then(|e| e.accuracy),
            seconds: start.elapsed().as_secs_f64(),
            samples_per_second: seen as f64 / train_secs.max(1e-9),
        };
        let (which, el, ea) = if val.is_some() {
            ("val", row.val_loss, row.val_accuracy)
        } else {
            ("test", row.test_loss, row.test_accuracy)
        };
        let line = format!(
            "epoch {epoch}/{epochs}  loss {:.4}  acc {}  {which} loss {}  {which} acc {}  lr {:.3e}  {:.0} samples/s  {:.1} s",
            row.train_loss,
            pct(row.train_accuracy),
            el.map_or("-".into(), |v| format!("{v:.4}")),
            pct(ea),
            row.lr,
            row.samples_per_second,
            row.seconds
        );
        match &bar {
            Some(b) => b.finish_with_message(
                line.split_once("  ")
                    .map_or(String::new(), |x| x.1.to_string()),
            ),
            None if show => println!("{line}"),
            None => {}
        }
        history.push(row);
        if step >= total_steps {
            break;
        }
    }
    model.set_training(false);
    let meta = ModelMeta {
        config: config.clone(),
        task: data.task,
        normalizer: normalizer.clone(),
        class_names: data.class_names.clone(),
        dataset: data.name.clone(),
    };
    let model_path = dir.join("model.safetensors");
    save_model(&model_path, &model, &meta)?;
    write_metrics(&dir, &history)?;
    let mut plots_written = Vec::new();
    if !args.no_plots {
        plots_written = plots::write_run_plots(&dir, &history, &model, &test, &data.class_names)?;
    }
    let last = history.last().context("no epoch ran")?;
    let elapsed = start.elapsed().as_secs_f64();
    let headline = match (last.test_accuracy, last.test_loss) {
        (Some(a), _) => format!(
            "test accuracy {:.2}% (train {})",
            100.0 * a,
            pct(last.train_accuracy)
        ),
        (None, Some(l)) => format!("test loss {l:.4} (train {:.4})", last.train_loss),
        (None, None) => format!("train loss {:.4}", last.train_loss),
    };
    println!(
        "{}: {headline} after {} epochs, {step} steps, {elapsed:.1} s; run directory {}{}",
        data.name,
        last.epoch,
        dir.display(),
        if plots_written.is_empty() {
            String::new()
        } else {
            format!(" (plots: {})", plots_written.join(", "))
        }
    );
    Ok(())
}

//! `nabla train`'s flags as a [`TrainConfig`]: defaults from the data set, flags that do not
//! apply refused, and on `--resume` the saved settings with the few changes a resume allows.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use nabla::nn::{Activation, Init, LayerSpec, MlpConfig, ModelSpec};
use nabla::optim::{AdamConfig, LrSchedule, SgdConfig};
use nabla::train::{EarlyStopping, LossKind, OptimizerConfig, TrainConfig};

use crate::args::{
    ArchName, DataArgs, DatasetName, LossName, OptimizerName, ScheduleName, Task, TrainArgs,
};
use crate::dataset::{Defaults, Loaded};

/// Flags (clap argument ids) that `--resume` accepts besides itself.
pub const RESUME_FLAGS: [&str; 9] = [
    "distributed",
    "epochs",
    "max_steps",
    "checkpoint_every",
    "detect_anomaly",
    "threads",
    "quiet",
    "no_plots",
    "profile",
];

/// `--flag-name` for a clap id (`max_steps` → `--max-steps`).
pub fn flag(id: &str) -> String {
    format!("--{}", id.replace('_', "-"))
}

/// A value enum's command-line spelling (`LossName::CrossEntropy` → `cross-entropy`).
pub fn spelled<T: ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .map_or_else(|| "?".into(), |p| p.get_name().to_string())
}

/// The data flags with paths made absolute, so a saved run resumes from any directory.
pub fn absolute(data: &DataArgs) -> Result<DataArgs> {
    let abs = |p: &Option<PathBuf>| -> Result<Option<PathBuf>> {
        p.as_ref()
            .map(|p| {
                std::fs::canonicalize(p).with_context(|| format!("{}: cannot resolve", p.display()))
            })
            .transpose()
    };
    Ok(DataArgs {
        data_dir: abs(&data.data_dir)?,
        csv: abs(&data.csv)?,
        ..data.clone()
    })
}

/// Refuses flags that would do nothing with this data set, optimizer or loss.
pub fn check_relevant(args: &TrainArgs, given: &[String], data: &Loaded) -> Result<()> {
    let has = |id: &str| given.iter().any(|g| g == id);
    let kind = data.kind;
    let sgd = args.optimizer.unwrap_or(data.defaults.optimizer) == OptimizerName::Sgd;
    let synthetic = matches!(
        kind,
        DatasetName::Spiral | DatasetName::Moons | DatasetName::Circles | DatasetName::Sine
    );
    let rules: [(&str, bool, String); 11] = [
        (
            "data_dir",
            matches!(kind, DatasetName::Mnist | DatasetName::FashionMnist),
            "MNIST-format data (--dataset mnist or fashion-mnist)".into(),
        ),
        ("csv", kind == DatasetName::Csv, "--dataset csv".into()),
        ("text", kind == DatasetName::Text, "--dataset text".into()),
        (
            "context",
            kind == DatasetName::Text,
            "--dataset text".into(),
        ),
        (
            "target_column",
            kind == DatasetName::Csv,
            "--csv data".into(),
        ),
        (
            "test_fraction",
            matches!(kind, DatasetName::Csv | DatasetName::Text),
            "--csv and --text data (other sets have their own test split)".into(),
        ),
        (
            "task",
            kind == DatasetName::Csv || args.data.task == data.task,
            format!(
                "--csv data (the task of {} is {})",
                data.name,
                spelled(&data.task)
            ),
        ),
        (
            "points",
            synthetic,
            "generated sets (spiral, moons, circles, sine)".into(),
        ),
        (
            "noise",
            synthetic,
            "generated sets (spiral, moons, circles, sine)".into(),
        ),
        (
            "outliers",
            kind == DatasetName::Sine,
            "--dataset sine".into(),
        ),
        ("momentum", sgd, "--optimizer sgd".into()),
    ];
    for (id, applies, what) in rules {
        if has(id) && !applies {
            bail!(
                "{} applies only to {what}; this run uses {}",
                flag(id),
                describe_run(args, data)
            );
        }
    }
    if has("nesterov") && !sgd {
        bail!(
            "--nesterov applies only to --optimizer sgd; this run uses {}",
            describe_run(args, data)
        );
    }
    if has("bucket_values") && args.grad_shards.is_none() && !args.distributed {
        bail!("--bucket-values applies only to sliced gradients (--distributed or --grad-shards)");
    }
    if has("label_smoothing") && data.task != Task::Classification {
        bail!("--label-smoothing applies only to classification (cross-entropy); {} is a regression data set", data.name);
    }
    Ok(())
}

fn describe_run(args: &TrainArgs, data: &Loaded) -> String {
    let opt = args.optimizer.unwrap_or(data.defaults.optimizer);
    format!(
        "--dataset {} with --optimizer {}",
        spelled(&data.kind),
        spelled(&opt)
    )
}

/// The model of `--model FILE.json`, `--arch cnn`, or the MLP of `--hidden`/`--activation`/
/// `--dropout` over the data set's defaults; weights seeded by `--seed`.
pub fn model_spec(args: &TrainArgs, data: &Loaded, features: usize) -> Result<ModelSpec> {
    let d = &data.defaults;
    let parse_act = || -> Result<Activation> {
        Ok(args.activation.as_deref().unwrap_or(d.activation).parse()?)
    };
    let mut spec = match (&args.model, args.arch.unwrap_or(ArchName::Mlp)) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--model {}: cannot read", path.display()))?;
            let mut value: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("--model {}: not JSON", path.display()))?;
            if let Some(obj) = value.as_object_mut() {
                obj.entry("input")
                    .or_insert_with(|| serde_json::json!(data.sample_shape));
            }
            ModelSpec::from_json(&value.to_string())
                .map_err(|e| anyhow::anyhow!("--model {}: {e}", path.display()))?
        }
        (None, ArchName::Cnn) => {
            if args.hidden.is_some() {
                bail!("--hidden applies only to --arch mlp (the cnn preset has its own layers; give --model FILE.json for others)");
            }
            if data.sample_shape.len() != 3 {
                bail!(
                    "--arch cnn needs images (MNIST-format data: --dataset fashion-mnist or mnist); {} has samples of {} values",
                    data.name,
                    features
                );
            }
            cnn_preset(
                &data.sample_shape,
                data.outputs,
                parse_act()?,
                args.dropout.unwrap_or(CNN_DROPOUT),
            )?
        }
        (None, ArchName::GptTiny) => {
            if data.task != Task::Text {
                bail!(
                    "--arch gpt-tiny is a language model: it needs --dataset text --text FILE; {} is a {} data set",
                    data.name,
                    spelled(&data.task)
                );
            }
            for (id, given) in [
                ("--hidden", args.hidden.is_some()),
                ("--activation", args.activation.is_some()),
            ] {
                if given {
                    bail!("{id} applies only to --arch mlp and cnn (gpt-tiny has its own layers; give --model FILE.json for others)");
                }
            }
            let dropout = args.dropout.unwrap_or(0.0);
            if !(0.0..1.0).contains(&dropout) {
                bail!("--dropout {dropout} is not in [0, 1)");
            }
            gpt_tiny(data.outputs, features, dropout)
        }
        (None, ArchName::Mlp) if data.task == Task::Text => {
            bail!("a text data set needs a language model: --arch gpt-tiny, or --model FILE.json with a gpt layer")
        }
        (None, ArchName::Mlp) => {
            let activation = parse_act()?;
            let hidden = args.hidden.clone().unwrap_or_else(|| d.hidden.clone());
            if hidden.contains(&0) {
                bail!("--hidden {hidden:?}: every width must be at least 1");
            }
            let dropout = args.dropout.unwrap_or(d.dropout);
            if !(0.0..1.0).contains(&dropout) {
                bail!("--dropout {dropout} is not in [0, 1)");
            }
            let mut sizes = vec![features];
            sizes.extend(&hidden);
            sizes.push(data.outputs);
            ModelSpec::mlp(&MlpConfig {
                sizes,
                activation,
                dropout,
                init: match activation {
                    Activation::Tanh | Activation::Sigmoid => Init::XavierUniform,
                    _ => Init::KaimingUniform,
                },
                seed: 0,
            })
        }
    };
    spec.seed = args.data.seed;
    spec.summary(1)
        .map_err(|e| anyhow::anyhow!("the model does not fit the data's samples: {e}"))?;
    Ok(spec)
}

/// `--arch gpt-tiny`: nanoGPT's CPU "baby GPT" — 4 blocks of width 128 with 4 heads, tied
/// embedding and head, no biases — over `vocab` characters and a context of `context`, with
/// `dropout` where nanoGPT drops (its CPU configuration: 0).
pub fn gpt_tiny(vocab: usize, context: usize, dropout: f64) -> ModelSpec {
    ModelSpec {
        input: vec![context],
        layers: vec![LayerSpec::Gpt {
            vocab,
            context,
            width: 128,
            depth: 4,
            heads: 4,
            bias: false,
            tied: true,
            dropout,
        }],
        init: Init::KaimingUniform,
        seed: 0,
    }
}

/// The cnn preset's default epochs (its default settings are otherwise the image data set's:
/// AdamW 1e-3, weight decay 0.01, cosine, label smoothing 0.1, batch 128).
pub const CNN_EPOCHS: usize = 10;

/// The cnn preset's dropout before its last layer.
pub const CNN_DROPOUT: f64 = 0.3;

/// `--arch cnn`: two stages of two 3×3 convolutions (32 then 64 channels), each with batch
/// norm and the activation, each stage ending in a 2×2 max-pool; then a 256-wide hidden layer
/// and the classes.
pub fn cnn_preset(
    image: &[usize],
    classes: usize,
    activation: Activation,
    dropout: f64,
) -> Result<ModelSpec> {
    if !(0.0..1.0).contains(&dropout) {
        bail!("--dropout {dropout} is not in [0, 1)");
    }
    let act = LayerSpec::from_activation(activation);
    let conv = |c: usize| LayerSpec::Conv2d {
        out_channels: c,
        kernel_size: (3, 3),
        stride: (1, 1),
        padding: (1, 1),
        dilation: (1, 1),
        groups: 1,
        bias: false,
    };
    let bn = || LayerSpec::BatchNorm2d {
        momentum: 0.1,
        eps: 1e-5,
    };
    let pool = || LayerSpec::MaxPool2d {
        kernel_size: (2, 2),
        stride: None,
        padding: (0, 0),
    };
    let mut layers = Vec::new();
    for c in [32, 64] {
        layers.extend([
            conv(c),
            bn(),
            act.clone(),
            conv(c),
            bn(),
            act.clone(),
            pool(),
        ]);
    }
    layers.extend([
        LayerSpec::Flatten,
        LayerSpec::Linear {
            out_features: 256,
            bias: true,
        },
        act.clone(),
    ]);
    if dropout > 0.0 {
        layers.push(LayerSpec::Dropout { p: dropout });
    }
    layers.push(LayerSpec::Linear {
        out_features: classes,
        bias: true,
    });
    Ok(ModelSpec {
        input: image.to_vec(),
        layers,
        init: Init::KaimingUniform,
        seed: 0,
    })
}

/// The [`TrainConfig`] for a new run: flags over the data set's defaults.
pub fn build(args: &TrainArgs, data: &Loaded, features: usize) -> Result<TrainConfig> {
    let d = &data.defaults;
    let loss = args.loss.unwrap_or(match data.task {
        Task::Classification | Task::Text => LossName::CrossEntropy,
        Task::Regression => LossName::Mse,
    });
    if (loss == LossName::CrossEntropy) != (data.task != Task::Regression) {
        bail!(
            "--loss {} does not fit a {} data set ({}); use {}",
            spelled(&loss),
            spelled(&data.task),
            data.name,
            if data.task != Task::Regression {
                "cross-entropy"
            } else {
                "mse, l1 or huber"
            }
        );
    }
    let lr = args.lr.unwrap_or(d.lr); // checked with every other setting by validate()
    let model = model_spec(args, data, features)?;
    let mut config = TrainConfig::new(model, optimizer(args, data, lr));
    config.loss = LossKind::from(loss);
    config.label_smoothing = args
        .label_smoothing
        .unwrap_or(if loss == LossName::CrossEntropy {
            d.label_smoothing
        } else {
            0.0
        });
    let cnn = args.arch == Some(ArchName::Cnn) && args.model.is_none();
    config.epochs = args
        .epochs
        .unwrap_or(if cnn { CNN_EPOCHS } else { d.epochs });
    config.batch_size = args.batch_size.unwrap_or(d.batch);
    config.max_steps = args.max_steps.or(d.max_steps);
    config.eval_every = args.eval_every.or(d.eval_every);
    config.clip = args.clip.or(d.clip);
    config.seed = args.data.seed;
    config.checkpoint_every = args.checkpoint_every;
    config.checkpoint_activations = args.checkpoint_activations;
    config.detect_anomaly = args.detect_anomaly;
    config.grad_shards = match args.grad_shards {
        None if args.distributed => Some(4),
        g => g,
    };
    config.hflip = args.hflip.unwrap_or(false);
    config.early_stopping = args.early_stopping.map(|patience| EarlyStopping {
        patience,
        min_delta: 0.0,
    });
    if config.epochs == 0 || config.batch_size == 0 {
        bail!("--epochs and --batch-size must be at least 1");
    }
    if !(0.0..1.0).contains(&args.val_fraction) {
        bail!("--val-fraction {} is not in [0, 1)", args.val_fraction);
    }
    let n = data.train.len();
    let rows = n.saturating_sub((n as f64 * args.val_fraction).round() as usize);
    config.schedule = schedule(args, d, lr, config.total_steps(rows));
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("{}", cli_words(&e.to_string())))?;
    Ok(config)
}

fn optimizer(args: &TrainArgs, data: &Loaded, lr: f64) -> OptimizerConfig {
    let weight_decay = args.weight_decay.unwrap_or(data.defaults.weight_decay);
    match args.optimizer.unwrap_or(data.defaults.optimizer) {
        OptimizerName::Sgd => OptimizerConfig::Sgd(SgdConfig {
            lr,
            momentum: args.momentum.unwrap_or(0.9),
            nesterov: args.nesterov,
            weight_decay,
        }),
        OptimizerName::Adam => OptimizerConfig::Adam(AdamConfig {
            weight_decay,
            beta2: data.defaults.beta2,
            ..AdamConfig::adam(lr)
        }),
        OptimizerName::Adamw => OptimizerConfig::Adam(AdamConfig {
            weight_decay,
            beta2: data.defaults.beta2,
            ..AdamConfig::adamw(lr)
        }),
    }
}

fn schedule(args: &TrainArgs, d: &Defaults, lr: f64, total: u64) -> LrSchedule {
    let warmup = args.warmup.unwrap_or(d.warmup);
    let main = match args.schedule.unwrap_or(d.schedule) {
        ScheduleName::Constant => LrSchedule::Constant,
        ScheduleName::Cosine => LrSchedule::Cosine {
            total: total.saturating_sub(warmup).max(1),
            min_lr: lr * d.min_lr_ratio,
        },
        ScheduleName::Step => LrSchedule::Step {
            every: (total / 4).max(1),
            gamma: 0.5,
        },
    };
    if warmup > 0 {
        LrSchedule::Warmup {
            steps: warmup,
            then: Box::new(main),
        }
    } else {
        main
    }
}

/// The library's setting names as the CLI's flags.
fn cli_words(msg: &str) -> String {
    msg.replace("train config: ", "")
        .replace("learning rate ", "--lr ")
        .replace("label smoothing", "--label-smoothing")
        .replace("clip norm", "--clip")
        .replace("checkpoint_activations", "--checkpoint-activations")
        .replace("checkpoint_every", "--checkpoint-every")
        .replace("max_steps", "--max-steps")
        .replace("grad_shards", "--grad-shards")
        .replace("hflip mirrors", "--hflip mirrors")
}

/// On `--resume`: refuses any flag but [`RESUME_FLAGS`], and applies those to the saved
/// configuration.
pub fn resumed(args: &TrainArgs, given: &[String], mut saved: TrainConfig) -> Result<TrainConfig> {
    let refused: Vec<String> = given
        .iter()
        .filter(|g| *g != "resume" && !RESUME_FLAGS.contains(&g.as_str()))
        .map(|g| flag(g))
        .collect();
    if !refused.is_empty() {
        bail!(
            "{} cannot be changed on --resume (the run continues with its saved settings and data); \
             only {} may be given",
            refused.join(", "),
            RESUME_FLAGS.map(flag).join(", ")
        );
    }
    if let Some(e) = args.epochs {
        saved.epochs = e;
    }
    if args.max_steps.is_some() {
        saved.max_steps = args.max_steps;
    }
    if args.checkpoint_every.is_some() {
        saved.checkpoint_every = args.checkpoint_every;
    }
    saved.detect_anomaly |= args.detect_anomaly;
    saved
        .validate()
        .map_err(|e| anyhow::anyhow!("{}", cli_words(&e.to_string())))?;
    Ok(saved)
}

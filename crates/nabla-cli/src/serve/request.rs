//! A playground run request: checked against the server's limits, turned into the equivalent
//! `nabla train` command line, and resolved by the same code as that command (clap parsing,
//! data loading, flag checks, [`runconfig::build`]), so the page and the CLI cannot disagree.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nabla::data::{Normalizer, TaskData};
use nabla::train::TrainConfig;
use serde::Deserialize;

use crate::args::{Command, Task, TrainArgs};
use crate::dataset::{self, Loaded};
use crate::runconfig;

/// Widest hidden layer the playground builds.
pub const MAX_WIDTH: usize = 1024;
/// Most hidden layers.
pub const MAX_LAYERS: usize = 8;
/// Most points per class of a generated set.
pub const MAX_POINTS: usize = 5000;
/// Largest batch.
pub const MAX_BATCH: usize = 4096;
/// Largest uploaded CSV, in bytes.
pub const MAX_CSV_BYTES: usize = 2 << 20;
/// Most input features (CSV columns).
pub const MAX_FEATURES: usize = 1024;
/// Most parameters of a playground model.
pub const MAX_PARAMETERS: usize = 20_000_000;
/// Epochs a playground run trains for at most (the command line says so too).
pub const EPOCHS: usize = 1000;

/// What the page sends to start a run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// spiral, moons, circles, xor, sine or csv.
    pub dataset: String,
    /// Points per class (generated sets).
    pub points: Option<usize>,
    /// Noise of generated sets.
    pub noise: Option<f64>,
    /// Test fraction (CSV; generated sets draw a fresh test set).
    pub test_fraction: Option<f64>,
    /// Hidden widths.
    pub hidden: Vec<usize>,
    /// Activation name.
    pub activation: String,
    /// cross_entropy, mse, l1, huber.
    pub loss: String,
    /// adam, sgd, adamw.
    pub optimizer: String,
    /// Learning rate.
    pub lr: f64,
    /// Batch size.
    pub batch_size: usize,
    /// Seed of data, initial weights and batch order.
    #[serde(default)]
    pub seed: u64,
    /// The CSV's text (dataset csv).
    pub csv: Option<String>,
    /// classification or regression (CSV).
    pub task: Option<String>,
    /// Most optimizer steps per second (0 or absent: as fast as the machine goes).
    pub steps_per_second: Option<f64>,
}

/// A resolved request: what the training thread needs.
pub struct Resolved {
    /// The equivalent `nabla train` command line.
    pub command: String,
    /// The loaded data (raw features).
    pub data: Loaded,
    /// The input normaliser (fitted on the training rows, as `nabla train` does).
    pub normalizer: Normalizer,
    /// Normalised training and test data.
    pub train: TaskData,
    /// Normalised test data.
    pub test: TaskData,
    /// The training configuration.
    pub config: TrainConfig,
    /// The data flags, for the model file's metadata.
    pub args: TrainArgs,
}

fn check_limits(r: &RunRequest) -> Result<()> {
    if r.hidden.is_empty() {
        bail!("hidden: give at least one hidden layer (`nabla train` has no flag for a linear model yet)");
    }
    if r.hidden.len() > MAX_LAYERS {
        bail!(
            "hidden: {} layers; the playground builds at most {MAX_LAYERS}",
            r.hidden.len()
        );
    }
    if let Some(w) = r.hidden.iter().find(|&&w| w > MAX_WIDTH || w == 0) {
        bail!("hidden: width {w}; each layer must have 1 to {MAX_WIDTH} units");
    }
    if let Some(p) = r.points.filter(|&p| p > MAX_POINTS || p == 0) {
        bail!("points: {p} per class; use 1 to {MAX_POINTS}");
    }
    if r.batch_size == 0 || r.batch_size > MAX_BATCH {
        bail!("batch_size: {}; use 1 to {MAX_BATCH}", r.batch_size);
    }
    if let Some(csv) = &r.csv {
        if csv.len() > MAX_CSV_BYTES {
            bail!(
                "csv: {} bytes; the playground takes files up to {} MiB",
                csv.len(),
                MAX_CSV_BYTES >> 20
            );
        }
    }
    step_time(r.steps_per_second)?;
    Ok(())
}

/// Slowest and fastest step rates the playground takes (0: unlimited).
pub const STEP_RATES: (f64, f64) = (0.1, 1e6);

/// The least time between two steps for a rate in steps per second (0 or none: unlimited).
pub fn step_time(rate: Option<f64>) -> Result<Option<Duration>> {
    match rate {
        None | Some(0.0) => Ok(None),
        Some(s) if s >= STEP_RATES.0 && s <= STEP_RATES.1 => {
            Ok(Some(Duration::from_secs_f64(1.0 / s)))
        }
        Some(s) => bail!(
            "steps_per_second: {s}; give 0 (as fast as possible) or {} to {}",
            STEP_RATES.0,
            STEP_RATES.1
        ),
    }
}

/// The `nabla train` arguments for `r` (the CSV, if any, at `csv_path`).
fn argv(r: &RunRequest, csv_path: &Path) -> Result<Vec<String>> {
    let generated = ["spiral", "moons", "circles", "sine"];
    let known = ["spiral", "moons", "circles", "xor", "sine", "csv"];
    if !known.contains(&r.dataset.as_str()) {
        bail!(
            "dataset: '{}' is not one of {}",
            r.dataset,
            known.join(", ")
        );
    }
    let mut a: Vec<String> = vec!["nabla".into(), "train".into()];
    let mut push = |k: &str, v: String| {
        a.push(format!("--{k}"));
        a.push(v);
    };
    push("dataset", r.dataset.clone());
    if r.dataset == "csv" {
        push("csv", csv_path.display().to_string());
        push("test-fraction", r.test_fraction.unwrap_or(0.2).to_string());
        if let Some(t) = &r.task {
            push("task", t.clone());
        }
    } else if generated.contains(&r.dataset.as_str()) {
        if let Some(p) = r.points {
            push("points", p.to_string());
        }
        if let Some(n) = r.noise {
            push("noise", n.to_string());
        }
    }
    let hidden: Vec<String> = r.hidden.iter().map(|w| w.to_string()).collect();
    push("hidden", hidden.join(","));
    push("activation", r.activation.clone());
    push("loss", r.loss.replace('_', "-"));
    push("optimizer", r.optimizer.clone());
    push("lr", r.lr.to_string());
    push("batch-size", r.batch_size.to_string());
    push("schedule", "constant".into());
    push("epochs", EPOCHS.to_string());
    push("seed", r.seed.to_string());
    Ok(a)
}

/// Parses `nabla train` arguments as the CLI does: the arguments and the ids of the flags given.
pub fn parse_train(argv: &[String]) -> Result<(TrainArgs, Vec<String>)> {
    let (cli, given) = crate::args::parse_from(argv).map_err(|e| {
        let text = e.to_string();
        let first = text.lines().next().unwrap_or("invalid arguments");
        anyhow::anyhow!("{}", first.trim_start_matches("error: "))
    })?;
    match cli.command {
        Command::Train(a) => Ok((*a, given)),
        _ => bail!("internal: not a train command"),
    }
}

/// Checks `r`, loads its data and builds its configuration exactly as `nabla train` would.
pub fn resolve(r: &RunRequest, csv_path: &Path) -> Result<Resolved> {
    check_limits(r)?;
    if r.dataset == "csv" {
        let text =
            r.csv.as_deref().filter(|t| !t.trim().is_empty()).context(
                "csv: choose a CSV file (a header row, numeric columns, the target last)",
            )?;
        std::fs::write(csv_path, text)
            .with_context(|| format!("cannot write {}", csv_path.display()))?;
    }
    let argv = argv(r, csv_path)?;
    let (args, given) = parse_train(&argv)?;
    let data = dataset::load(&args.data)?;
    if data.train.features() > MAX_FEATURES {
        bail!(
            "the CSV has {} feature columns; the playground takes at most {MAX_FEATURES}",
            data.train.features()
        );
    }
    runconfig::check_relevant(&args, &given, &data)?;
    let config = runconfig::build(&args, &data, data.train.features())?;
    let spec = config
        .model
        .as_ref()
        .context("internal: the playground's config has a model spec")?;
    let params = spec.parameter_count()?;
    if params > MAX_PARAMETERS {
        bail!(
            "the model {:?} has {params} parameters; the playground builds at most {MAX_PARAMETERS}",
            spec.as_mlp().map(|m| m.sizes).unwrap_or_default()
        );
    }
    if data.task == Task::Classification && data.outputs > 64 {
        bail!("{} classes: the playground draws at most 64", data.outputs);
    }
    let normalizer = Normalizer::fit(data.train.x(), data.defaults.normalization)?;
    let train = data.train.normalized(&normalizer)?;
    let test = data.test.normalized(&normalizer)?;
    let mut shown = argv.clone();
    if r.dataset == "csv" {
        if let Some(i) = shown.iter().position(|a| a == "--csv") {
            shown[i + 1] = "YOUR_FILE.csv".into();
        }
    }
    Ok(Resolved {
        command: shown.join(" "),
        data,
        normalizer,
        train,
        test,
        config,
        args,
    })
}

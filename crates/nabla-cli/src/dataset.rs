//! Resolving `--dataset` / `--data-dir` / `--csv` into train and test sets, with the default
//! model and training settings of each data set.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nabla::data::csv::{read_csv, Header, TargetColumn};
use nabla::data::mnist::{
    load_mnist_dir, mnist_files, Split, FASHION_MNIST_CLASSES, FASHION_MNIST_DIR,
};
use nabla::data::text::{read_text, TextData, Vocab};
use nabla::data::{synthetic, Classification, Normalization};

use crate::args::{DataArgs, DatasetName, OptimizerName, ScheduleName, Task};

pub use nabla::data::TaskData;

impl Loaded {
    /// Characters of a text's training part (0 for other data).
    pub fn train_chars(&self) -> usize {
        match &self.train {
            TaskData::Text(t) => t.tokens.len(),
            _ => 0,
        }
    }
}

/// Settings a data set trains well with; every one can be overridden by a flag.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub hidden: Vec<usize>,
    pub activation: &'static str,
    pub epochs: usize,
    pub batch: usize,
    pub optimizer: OptimizerName,
    pub lr: f64,
    pub weight_decay: f64,
    pub schedule: ScheduleName,
    pub dropout: f64,
    pub label_smoothing: f64,
    pub normalization: Normalization,
    /// Steps to stop after (text: 2,000; none otherwise).
    pub max_steps: Option<u64>,
    /// Evaluations within an epoch (text: every 250 steps).
    pub eval_every: Option<u64>,
    /// Warm-up steps.
    pub warmup: u64,
    /// Gradient clipping norm.
    pub clip: Option<f64>,
    /// Adam's β₂.
    pub beta2: f64,
    /// The cosine schedule's final rate as a fraction of the base rate.
    pub min_lr_ratio: f64,
}

/// A resolved data set.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Which data set.
    pub kind: DatasetName,
    /// Short name for run directories and plots.
    pub name: String,
    /// The files read (none for generated sets), for the data fingerprint.
    pub files: Vec<PathBuf>,
    /// Where it came from (a path, or "embedded").
    pub source: String,
    pub task: Task,
    pub train: TaskData,
    pub test: TaskData,
    /// Number of classes (classification) or target columns (regression).
    pub outputs: usize,
    pub class_names: Vec<String>,
    pub defaults: Defaults,
    /// The shape of one sample (`[1, 28, 28]` for MNIST-format images; `[features]` else).
    pub sample_shape: Vec<usize>,
    /// The loaded values are the file's times this (1/255 for IDX pixels, read as 0–1).
    pub input_scale: f32,
}

fn synthetic_defaults(hidden: Vec<usize>, epochs: usize, lr: f64) -> Defaults {
    Defaults {
        hidden,
        activation: "relu",
        epochs,
        batch: 32,
        optimizer: OptimizerName::Adam,
        lr,
        weight_decay: 0.0,
        schedule: ScheduleName::Cosine,
        dropout: 0.0,
        label_smoothing: 0.0,
        normalization: Normalization::None,
        ..PLAIN
    }
}

/// The default model for MNIST-format images (the documented Fashion-MNIST setting).
pub fn image_defaults() -> Defaults {
    Defaults {
        hidden: vec![512, 256],
        activation: "relu",
        epochs: 15,
        batch: 128,
        optimizer: OptimizerName::Adamw,
        lr: 1e-3,
        weight_decay: 0.01,
        schedule: ScheduleName::Cosine,
        dropout: 0.1,
        label_smoothing: 0.1,
        normalization: Normalization::Global,
        ..PLAIN
    }
}

/// What every data set's defaults share unless they say otherwise (no step limit, warm-up or
/// clipping; PyTorch's β₂; cosine down to 1% of the rate).
const PLAIN: Defaults = Defaults {
    hidden: Vec::new(),
    activation: "relu",
    epochs: 1,
    batch: 32,
    optimizer: OptimizerName::Adam,
    lr: 1e-3,
    weight_decay: 0.0,
    schedule: ScheduleName::Cosine,
    dropout: 0.0,
    label_smoothing: 0.0,
    normalization: Normalization::None,
    max_steps: None,
    eval_every: None,
    warmup: 0,
    clip: None,
    beta2: 0.999,
    min_lr_ratio: 0.01,
};

/// A character-level language model's settings: nanoGPT's CPU configuration ("baby GPT" on
/// Shakespeare): 2,000 steps of batch 12, AdamW 1e-3 (β₂ 0.99, weight decay 0.1), 100 steps of
/// warm-up then cosine to 1e-4, clipping at 1; an evaluation every 250 steps.
pub fn text_defaults() -> Defaults {
    Defaults {
        epochs: 1,
        batch: 12,
        optimizer: OptimizerName::Adamw,
        lr: 1e-3,
        weight_decay: 0.1,
        max_steps: Some(2000),
        eval_every: Some(250),
        warmup: 100,
        clip: Some(1.0),
        beta2: 0.99,
        min_lr_ratio: 0.1,
        ..PLAIN
    }
}

/// The default context (characters per window) of text data.
pub const TEXT_CONTEXT: usize = 64;

/// Validation windows evaluated during training (spread evenly over the held-out text).
pub const TEXT_EVAL_WINDOWS: usize = 256;

fn class_names(n: usize) -> Vec<String> {
    (0..n).map(|i| i.to_string()).collect()
}

/// Which data set the flags select.
pub fn which(args: &DataArgs) -> Result<DatasetName> {
    match (args.dataset, &args.text) {
        (Some(DatasetName::Text), None) => bail!("--dataset text needs --text FILE"),
        (None | Some(DatasetName::Text), Some(_)) => {
            if args.data_dir.is_some() || args.csv.is_some() {
                bail!("give --text alone, without --data-dir or --csv");
            }
            return Ok(DatasetName::Text);
        }
        (Some(d), Some(_)) => bail!(
            "--text applies only to --dataset text, not {}",
            crate::runconfig::spelled(&d)
        ),
        _ => {}
    }
    Ok(match (args.dataset, &args.data_dir, &args.csv) {
        (Some(DatasetName::Csv), _, None) => bail!("--dataset csv needs --csv FILE"),
        (Some(DatasetName::Mnist), None, _) => bail!("--dataset mnist needs --data-dir DIR"),
        (Some(d), _, _) => d,
        (None, Some(_), None) => DatasetName::Mnist,
        (None, None, Some(_)) => DatasetName::Csv,
        (None, Some(_), Some(_)) => bail!("give either --data-dir or --csv, not both"),
        (None, None, None) => DatasetName::Spiral,
    })
}

/// Loads the data set the flags describe.
pub fn load(args: &DataArgs) -> Result<Loaded> {
    let kind = which(args)?;
    let seed = args.seed;
    // Synthetic test sets are a fresh draw of the same distribution (another seed).
    let test_seed = seed.wrapping_add(1_000_003);
    let class = |name: &str, train: Classification, test: Classification, d: Defaults| Loaded {
        kind,
        files: Vec::new(),
        name: name.into(),
        source: "embedded (seeded)".into(),
        task: Task::Classification,
        outputs: train.classes,
        class_names: class_names(train.classes),
        sample_shape: vec![train.x.shape()[1]],
        input_scale: 1.0,
        train: TaskData::Class(train),
        test: TaskData::Class(test),
        defaults: d,
    };
    Ok(match kind {
        DatasetName::Spiral => {
            let (p, noise) = (args.points.unwrap_or(300), args.noise.unwrap_or(0.1));
            class(
                "spiral",
                synthetic::spiral(p, 3, noise, seed)?,
                synthetic::spiral(p, 3, noise, test_seed)?,
                synthetic_defaults(vec![64, 64], 60, 0.01),
            )
        }
        DatasetName::Moons => {
            let (p, noise) = (args.points.unwrap_or(300), args.noise.unwrap_or(0.1));
            class(
                "moons",
                synthetic::moons(p, noise, seed)?,
                synthetic::moons(p, noise, test_seed)?,
                synthetic_defaults(vec![32, 32], 40, 0.01),
            )
        }
        DatasetName::Circles => {
            let (p, noise) = (args.points.unwrap_or(300), args.noise.unwrap_or(0.05));
            class(
                "circles",
                synthetic::circles(p, noise, 0.5, seed)?,
                synthetic::circles(p, noise, 0.5, test_seed)?,
                synthetic_defaults(vec![32, 32], 40, 0.01),
            )
        }
        DatasetName::Xor => {
            let mut d = synthetic_defaults(vec![8], 400, 0.05);
            d.batch = 4;
            d.activation = "tanh";
            d.schedule = ScheduleName::Constant;
            class("xor", synthetic::xor(), synthetic::xor(), d)
        }
        DatasetName::Sine => {
            let (p, noise) = (args.points.unwrap_or(500), args.noise.unwrap_or(0.1));
            let mut d = synthetic_defaults(vec![64, 64], 200, 0.01);
            d.activation = "tanh";
            Loaded {
                kind,
                files: Vec::new(),
                name: "sine".into(),
                source: "embedded (seeded)".into(),
                task: Task::Regression,
                train: TaskData::Reg(synthetic::sine(p, noise, args.outliers, seed)?),
                test: TaskData::Reg(synthetic::sine(p, noise, 0.0, test_seed)?),
                outputs: 1,
                class_names: vec![],
                defaults: d,
                sample_shape: vec![1],
                input_scale: 1.0,
            }
        }
        DatasetName::FashionMnist | DatasetName::Mnist => load_mnist(args, kind)?,
        DatasetName::Csv => {
            let path = args
                .csv
                .as_ref()
                .context("--dataset csv needs --csv FILE")?;
            load_csv(path, args)?
        }
        DatasetName::Text => {
            let path = args
                .text
                .as_ref()
                .context("--dataset text needs --text FILE")?;
            load_text(path, args)?
        }
    })
}

/// A UTF-8 text: its characters as the vocabulary (the "class names"), its start for
/// training (every window), its last `--test-fraction` (default 0.1) held out (the
/// non-overlapping windows).
fn load_text(path: &Path, args: &DataArgs) -> Result<Loaded> {
    let text = read_text(path)?;
    let vocab = Vocab::from_text(&text).with_context(|| path.display().to_string())?;
    let context = args.context.unwrap_or(TEXT_CONTEXT);
    if context == 0 {
        bail!("--context must be at least 1");
    }
    let tokens = vocab.encode(&text)?;
    let fraction = args.test_fraction.unwrap_or(0.1);
    let (train, held_out) = TextData::split(tokens, vocab.len(), context, fraction)
        .with_context(|| path.display().to_string())?;
    if held_out.is_empty() && fraction > 0.0 {
        bail!(
            "{}: the held-out {:.0}% ({} characters) is shorter than one window of {context} + 1; give a smaller --context or a larger --test-fraction",
            path.display(),
            100.0 * fraction,
            held_out.tokens.len()
        );
    }
    Ok(Loaded {
        kind: DatasetName::Text,
        files: vec![path.to_path_buf()],
        name: path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "text".into()),
        source: path.display().to_string(),
        task: Task::Text,
        outputs: vocab.len(),
        class_names: vocab.to_strings(),
        train: TaskData::Text(train),
        test: TaskData::Text(held_out),
        defaults: text_defaults(),
        sample_shape: vec![context],
        input_scale: 1.0,
    })
}

/// An MNIST-format directory (Fashion-MNIST's default place without --data-dir).
fn load_mnist(args: &DataArgs, kind: DatasetName) -> Result<Loaded> {
    let dir: PathBuf = match (&args.data_dir, kind) {
        (Some(d), _) => d.clone(),
        (None, _) => PathBuf::from(FASHION_MNIST_DIR),
    };
    let train = load_mnist_dir(&dir, Split::Train)?;
    let test = load_mnist_dir(&dir, Split::Test)?;
    if test.features() != train.features() {
        bail!(
            "{}: test images have {} pixels, training images {}",
            dir.display(),
            test.features(),
            train.features()
        );
    }
    let outputs = train.classes.max(test.classes);
    let fashion = kind == DatasetName::FashionMnist;
    let names = if fashion && outputs == 10 {
        FASHION_MNIST_CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        class_names(outputs)
    };
    let mut files = mnist_files(&dir, Split::Train)?.to_vec();
    let test_files = mnist_files(&dir, Split::Test)?;
    let sample_shape = idx_image_shape(&test_files[0])?;
    files.extend(mnist_files(&dir, Split::Test)?);
    Ok(Loaded {
        kind,
        files,
        name: if fashion {
            "fashion-mnist".into()
        } else {
            "mnist".into()
        },
        source: dir.display().to_string(),
        task: Task::Classification,
        train: TaskData::Class(Classification {
            classes: outputs,
            ..train
        }),
        test: TaskData::Class(Classification {
            classes: outputs,
            ..test
        }),
        outputs,
        class_names: names,
        defaults: image_defaults(),
        sample_shape,
        input_scale: 1.0 / 255.0,
    })
}

/// `[1, rows, cols]` of an IDX image file (gzip or not).
fn idx_image_shape(path: &Path) -> Result<Vec<usize>> {
    let arr = nabla::data::idx::read_idx(path)?;
    match arr.dims[..] {
        [_, rows, cols] => Ok(vec![1, rows, cols]),
        _ => bail!(
            "{}: images need 3 IDX dimensions [n, rows, cols], found {:?}",
            path.display(),
            arr.dims
        ),
    }
}

/// Parses `--target-column` (a name, or a 0-based index).
pub fn target_column(spec: &Option<String>) -> TargetColumn {
    match spec {
        None => TargetColumn::Last,
        Some(s) => match s.parse::<usize>() {
            Ok(i) => TargetColumn::Index(i),
            Err(_) => TargetColumn::Name(s.clone()),
        },
    }
}

fn load_csv(path: &Path, args: &DataArgs) -> Result<Loaded> {
    let table = read_csv(path, &target_column(&args.target_column), Header::Auto)?;
    let mut defaults = synthetic_defaults(vec![64, 64], 100, 0.01);
    defaults.normalization = Normalization::PerFeature;
    let (train, test, outputs, names) = match args.task {
        Task::Classification => {
            let all = table.into_classification(path)?;
            let (tr, te) = all.split(args.test_fraction.unwrap_or(0.2), args.seed)?;
            let k = all.classes;
            (TaskData::Class(tr), TaskData::Class(te), k, class_names(k))
        }
        Task::Text => bail!(
            "{}: a CSV holds classes or targets, not text (use --text)",
            path.display()
        ),
        Task::Regression => {
            let all = table.into_regression()?;
            let (tr, te) = all.split(args.test_fraction.unwrap_or(0.2), args.seed)?;
            (TaskData::Reg(tr), TaskData::Reg(te), 1, vec![])
        }
    };
    let table_features = train.features();
    if train.is_empty() {
        bail!(
            "{}: no rows left for training after holding out the test set",
            path.display()
        );
    }
    Ok(Loaded {
        kind: DatasetName::Csv,
        files: vec![path.to_path_buf()],
        name: path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "csv".into()),
        source: path.display().to_string(),
        task: args.task,
        train,
        test,
        outputs,
        class_names: names,
        defaults,
        sample_shape: vec![table_features],
        input_scale: 1.0,
    })
}

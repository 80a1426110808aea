//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// nabla: train neural networks by backpropagation, on the CPU, without Python.
#[derive(Debug, Parser)]
#[command(name = "nabla", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a model (an MLP, a CNN, a GPT, or any model spec) and write a run directory
    /// (config, metrics, checkpoint, plots).
    Train(Box<TrainArgs>),
    /// Evaluate a checkpoint on a data set: loss, accuracy, per-class precision/recall,
    /// confusion matrix.
    Eval(EvalArgs),
    /// Predict classes and probabilities for inputs in an IDX or CSV file.
    Predict(PredictArgs),
    /// Check every op's gradient against finite differences and print a table.
    Gradcheck,
    /// Show a checkpoint's model summary and metadata.
    Info(InfoArgs),
    /// Time the benchmark workloads (tiny, fashion, wide); one JSON line each.
    Bench(BenchArgs),
    /// Write a model for another framework: a PyTorch nn.Sequential state dict, or ONNX.
    Export(ExportArgs),
    /// Read another framework's MLP (a PyTorch nn.Sequential state dict) as a nabla model file.
    Import(ImportArgs),
    /// Serve the playground (watch a network learn) and the backprop inspector in a browser.
    Serve(ServeArgs),
    /// Write the recorded graph of one training step (forward, loss, backward) as DOT or JSON.
    Graph(GraphArgs),
    /// Sample text from a language model trained on --dataset text, streaming each character
    /// as it is drawn.
    Generate(GenerateArgs),
}

/// `nabla generate`.
#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// A language model written by `nabla train --dataset text` (model.safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Text to continue (every character must be in the model's vocabulary; a prompt longer
    /// than the model's context is continued from its last context characters) [default: a
    /// newline, or the vocabulary's first character].
    #[arg(long)]
    pub prompt: Option<String>,
    /// Characters to generate.
    #[arg(long, default_value_t = 500)]
    pub tokens: usize,
    /// Sampling temperature: below 1 more predictable, above 1 more varied; 0 always takes
    /// the most likely character.
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    pub temperature: f64,
    /// Sample among the K most likely characters only.
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run the whole context again for every character instead of keeping the attention
    /// layers' keys and values (slower, the same characters; for comparison).
    #[arg(long)]
    pub no_cache: bool,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print the generated text only (no statistics line).
    #[arg(long)]
    pub quiet: bool,
}

/// `nabla serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Port to listen on (0: any free port; the address is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on. Only this machine can connect to the default; another address
    /// lets anyone who can reach it start training runs here (a warning is printed).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Open the page in the default browser.
    #[arg(long)]
    pub open: bool,
    /// Most runs open at once (browser tabs); more are refused with a "busy" message.
    #[arg(long, default_value_t = 4)]
    pub max_sessions: usize,
}

/// Formats `nabla graph` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// Graphviz DOT (`dot -Tsvg graph.dot > graph.svg`).
    Dot,
    /// JSON: every node with its op, shape, saved bytes and value/gradient statistics, the
    /// backward order and the totals (what the playground's inspector shows).
    Json,
}

/// `nabla graph`.
#[derive(Debug, Clone, Args)]
pub struct GraphArgs {
    /// A model file written by `nabla train` (model.safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Rows in the batch (the first rows of the model's training data; random inputs when the
    /// model file names no data set that can be loaded).
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
    pub format: GraphFormat,
    /// Where to write it.
    #[arg(long)]
    pub out: PathBuf,
}

/// Formats `nabla export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// A PyTorch `nn.Sequential` state dict in safetensors: weights [out, in], names 0.weight,
    /// 0.bias, 2.weight, …; the metadata holds the `nn.Sequential(...)` and the normaliser.
    Torch,
    /// An ONNX graph (opset 21) from raw features to logits and probabilities (or predictions),
    /// the normaliser folded in; for ONNX Runtime and other serving stacks.
    Onnx,
}

/// Formats `nabla import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    /// A PyTorch `nn.Sequential` state dict of `Linear` layers in safetensors.
    Torch,
}

/// `nabla export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// A model file written by `nabla train` (model.safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Output format.
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// The file to write (never the model file itself).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    pub overwrite: bool,
}

/// `nabla import`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// Input format.
    #[arg(long, value_enum, default_value = "torch")]
    pub format: ImportFormat,
    /// A PyTorch state dict (safetensors, float32): one written by `nabla export --format
    /// torch` (any model: its spec is in the metadata), or an nn.Sequential of Linear layers
    /// and parameter-free activations (names may have a prefix: layers.0.weight).
    #[arg(long)]
    pub state_dict: PathBuf,
    /// Layer sizes, e.g. 784-512-256-10 (default: read from the weights' shapes; when given,
    /// they must agree).
    #[arg(long)]
    pub arch: Option<String>,
    /// The activation between the layers: relu, leaky_relu[:slope], sigmoid, tanh, gelu,
    /// softplus, identity.
    #[arg(long, default_value = "relu")]
    pub activation: String,
    /// What the outputs are (default: the file's `task` metadata, as `nabla export` writes
    /// it, else classification).
    #[arg(long, value_enum)]
    pub task: Option<Task>,
    /// The nabla model file to write (for eval and predict; never the state dict itself).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    pub overwrite: bool,
}

/// Benchmark workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// 2-64-64-3 on a spiral, batch 32, 10,000 steps → steps/s.
    Tiny,
    /// 784-512-256-10 on Fashion-MNIST, batch 128, one epoch → seconds, test accuracy.
    Fashion,
    /// 784-2048-2048-10 on Fashion-MNIST, batch 512, 40 steps → GFLOP/s (and its fraction of
    /// the measured peak).
    Wide,
    /// The machine's f32 FMA peak, GFLOP/s, on --threads threads.
    Peak,
    /// conv(1→32, 3×3, pad 1)–ReLU–maxpool 2–conv(32→64, 3×3, pad 1)–ReLU–maxpool 2–
    /// Linear(3136→128)–ReLU–Linear(128→10) on Fashion-MNIST, batch 128, Adam, one epoch →
    /// seconds, test accuracy (not part of `all`: it takes a while).
    Cnn,
    /// Inference through `nabla::nn::Predictor` (evaluation mode, no graph): batch-1 latency
    /// (median and p99 over --steps calls, default 10,000) and batch-256 rows/s, of --model or
    /// a 784-512-256-10 MLP; `bench/onnx_infer.py` times ONNX Runtime on the exported model.
    Infer,
    /// The peak and the three MLP workloads.
    All,
}

/// `nabla bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Which workload.
    #[arg(long, value_enum, default_value_t = Workload::All)]
    pub workload: Workload,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Override the step count (tiny: 10,000; fashion and cnn: one epoch; wide: 40), e.g. for a
    /// smoke run.
    #[arg(long)]
    pub steps: Option<u64>,
    /// MNIST-format directory for fashion and wide (default: /usr/share/datasets/fashion-mnist).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Let the other threads sleep between the parallel parts of a step, as before
    /// `nabla::threads::warm` (which `nabla train` and the default bench use): for comparison.
    #[arg(long)]
    pub cold: bool,
    /// Hold every kernel to this instruction-set tier or narrower: scalar, avx2 or avx512
    /// (default: NABLA_MAX_ISA, else the widest the CPU has). Each result line names the tier.
    #[arg(long, value_parser = parse_isa)]
    pub max_isa: Option<nabla::isa::Isa>,
    /// A model file (`nabla train`'s model.safetensors) for --workload infer.
    #[arg(long)]
    pub model: Option<PathBuf>,
}

/// `--max-isa`'s value.
fn parse_isa(s: &str) -> Result<nabla::isa::Isa, String> {
    s.parse()
        .map_err(|_| format!("unknown tier {s:?}: expected scalar, avx2 or avx512"))
}

/// Built-in data sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetName {
    /// 3-class spiral in 2-D (embedded, seeded).
    Spiral,
    /// Two interleaving half-circles in 2-D (embedded, seeded).
    Moons,
    /// Two concentric circles in 2-D (embedded, seeded).
    Circles,
    /// The four XOR points.
    Xor,
    /// 1-D regression: y = sin(3x) + noise, with optional outliers (embedded, seeded).
    Sine,
    /// Fashion-MNIST from /usr/share/datasets/fashion-mnist (apt-get install dataset-fashion-mnist).
    FashionMnist,
    /// Any MNIST-format directory given with --data-dir.
    Mnist,
    /// A CSV file given with --csv.
    Csv,
    /// A UTF-8 text file given with --text: next-character prediction (a language model).
    Text,
}

/// Where the data come from (shared by train and eval; saved with a run, paths made absolute).
#[derive(Debug, Clone, PartialEq, Args, serde::Serialize, serde::Deserialize)]
pub struct DataArgs {
    /// Data set [default: spiral; mnist with --data-dir, csv with --csv; for eval: the one the
    /// model was trained on].
    #[arg(long, value_enum)]
    pub dataset: Option<DatasetName>,
    /// An MNIST-format directory (train-/t10k- images and labels, plain or .gz).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A CSV file of numeric columns.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// A UTF-8 text file to train a character-level language model on (its last
    /// --test-fraction is held out for validation).
    #[arg(long, value_name = "FILE")]
    pub text: Option<PathBuf>,
    /// Characters per training window of --text data (the model's context) [default: 64].
    #[arg(long)]
    pub context: Option<usize>,
    /// CSV target column, by name or 0-based index (default: the last column).
    #[arg(long)]
    pub target_column: Option<String>,
    /// CSV task: classification (integer targets) or regression.
    #[arg(long, value_enum, default_value_t = Task::Classification)]
    pub task: Task,
    /// Fraction of a CSV held out as the test set, or of a text (its end) for validation
    /// [default: 0.2 CSV; 0.1 text].
    #[arg(long, allow_negative_numbers = true)]
    pub test_fraction: Option<f64>,
    /// Points per class for synthetic sets [default: 300; sine 500].
    #[arg(long)]
    pub points: Option<usize>,
    /// Noise of synthetic sets [default: 0.1; circles 0.05].
    #[arg(long, allow_negative_numbers = true)]
    pub noise: Option<f64>,
    /// Fraction of outliers in the sine set.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub outliers: f64,
    /// Seed for data generation, shuffling and initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Classification or regression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Integer class targets, cross-entropy.
    Classification,
    /// Real targets, MSE/L1/Huber.
    Regression,
    /// The next character of a text (set by --dataset text, not a --task).
    #[value(skip)]
    Text,
}

/// Losses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LossName {
    /// Cross-entropy from logits (classification).
    CrossEntropy,
    /// Mean squared error (regression).
    Mse,
    /// Mean absolute error (regression).
    L1,
    /// Huber with delta 1 (regression).
    Huber,
}

impl From<LossName> for nabla::train::LossKind {
    fn from(l: LossName) -> Self {
        match l {
            LossName::CrossEntropy => nabla::train::LossKind::CrossEntropy,
            LossName::Mse => nabla::train::LossKind::Mse,
            LossName::L1 => nabla::train::LossKind::L1,
            LossName::Huber => nabla::train::LossKind::Huber,
        }
    }
}

/// Optimizers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptimizerName {
    /// SGD (with --momentum, --nesterov, --weight-decay).
    Sgd,
    /// Adam.
    Adam,
    /// AdamW (decoupled weight decay).
    Adamw,
}

/// Model presets of `nabla train --arch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArchName {
    /// A multi-layer perceptron (--hidden, --activation, --dropout).
    Mlp,
    /// A convolutional network for images.
    Cnn,
    /// A small GPT for --dataset text: 4 blocks of width 128 with 4 heads, the context of
    /// --context, tied embedding and head, no biases (nanoGPT's CPU "baby GPT").
    GptTiny,
}

/// Learning-rate schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScheduleName {
    /// Constant rate.
    Constant,
    /// Cosine decay to lr/100 over the run.
    Cosine,
    /// Halve every quarter of the run.
    Step,
}

/// `nabla train`.
#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    /// The data.
    #[command(flatten)]
    pub data: DataArgs,
    /// The model: mlp (shaped by --hidden, --activation, --dropout) or cnn (for images: four
    /// 3×3 convolutions with batch norm and two max-pools, then a 256-wide hidden layer with
    /// dropout; 10 epochs by default; see the README) [default: mlp].
    #[arg(long, value_enum)]
    pub arch: Option<ArchName>,
    /// The model as a JSON model spec (layers with their settings; the input shape may be
    /// left out: the data's own). Instead of --arch and its flags.
    #[arg(long, value_name = "FILE.json", conflicts_with_all = ["arch", "hidden", "activation", "dropout"])]
    pub model: Option<PathBuf>,
    /// Mirror each training image left to right with probability ½ (data augmentation;
    /// models that take images) [default: off].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub hflip: Option<bool>,
    /// Hidden layer widths, e.g. 512,256 [default: per data set: 64,64 spiral and sine; 32,32
    /// moons and circles; 8 xor; 512,256 images; 64,64 csv].
    #[arg(long, value_delimiter = ',')]
    pub hidden: Option<Vec<usize>>,
    /// Activation: relu, leaky_relu[:slope], sigmoid, tanh, gelu, softplus, identity
    /// [default: relu; tanh for xor and sine].
    #[arg(long)]
    pub activation: Option<String>,
    /// Dropout probability: after each hidden layer (mlp), before the cnn's last layer, or
    /// where nanoGPT drops (gpt-tiny: embeddings, attention, residual branches) [default: 0.1
    /// images; 0.3 cnn; 0 otherwise].
    #[arg(long, allow_negative_numbers = true)]
    pub dropout: Option<f64>,
    /// Gradient checkpointing: keep only every K-th hidden block's input for backward and
    /// recompute the blocks in between (less memory, one more forward pass; K ≈ √depth).
    #[arg(long, value_name = "K")]
    pub checkpoint_activations: Option<usize>,
    /// Loss [default: cross-entropy for classification, mse for regression].
    #[arg(long, value_enum)]
    pub loss: Option<LossName>,
    /// Label smoothing for cross-entropy [default: 0.1 images; 0 otherwise].
    #[arg(long, allow_negative_numbers = true)]
    pub label_smoothing: Option<f64>,
    /// Optimizer [default: adamw images; adam otherwise].
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerName>,
    /// Learning rate [default: 0.001 images; 0.05 xor; 0.01 otherwise].
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// SGD momentum (only with --optimizer sgd) [default: 0.9].
    #[arg(long, allow_negative_numbers = true)]
    pub momentum: Option<f64>,
    /// SGD Nesterov momentum (only with --optimizer sgd).
    #[arg(long)]
    pub nesterov: bool,
    /// Weight decay (L2 for SGD/Adam, decoupled for AdamW) [default: 0.01 images; 0 otherwise].
    #[arg(long, allow_negative_numbers = true)]
    pub weight_decay: Option<f64>,
    /// Learning-rate schedule [default: cosine; constant for xor].
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleName>,
    /// Linear warm-up steps before the schedule [default: 100 for text; 0 otherwise].
    #[arg(long)]
    pub warmup: Option<u64>,
    /// Clip gradients to this global norm [default: 1 for text; no clipping otherwise].
    #[arg(long, allow_negative_numbers = true)]
    pub clip: Option<f64>,
    /// Epochs [default: 15 images; 60 spiral; 40 moons and circles; 400 xor; 200 sine; 100 csv].
    /// With --resume: continue the run up to this many epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Mini-batch size [default: 128 images; 4 xor; 32 otherwise].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Hold out this fraction of the training set as a validation set: per-epoch metrics are
    /// then computed on it, and the test set is evaluated once, after training.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub val_fraction: f64,
    /// Stop when the validation (else test) loss has not improved for this many epochs.
    #[arg(long, value_name = "PATIENCE")]
    pub early_stopping: Option<usize>,
    /// Write a full training-state checkpoint (run directory, checkpoint.safetensors) every N
    /// optimizer steps, atomically.
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Continue the run in DIR from its last checkpoint, with the settings and data it was
    /// started with; only --epochs, --max-steps, --checkpoint-every, --detect-anomaly,
    /// --threads, --quiet, --no-plots and --profile may be given with it.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Check every operation's output for NaN/Inf as it runs (slower); without it, only the
    /// loss and gradients are checked, and the failing batch is re-run with checks to name the
    /// operation.
    #[arg(long)]
    pub detect_anomaly: bool,
    /// Stop after this many optimizer steps [default: 2000 for text; none otherwise].
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Also evaluate every N steps within an epoch (a metrics row each time) [default: 250
    /// for text, whose epoch is every window of the text; none otherwise].
    #[arg(long, value_name = "N")]
    pub eval_every: Option<u64>,
    /// Threads for matrix products and large element-wise kernels (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Run directory [default: runs/DATASET-DATE-TIME]. A directory holding another run's files
    /// is refused unless --overwrite.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace another run's files in --out (config, metrics, model, checkpoint, plots).
    #[arg(long)]
    pub overwrite: bool,
    /// Data-parallel training over MPI: run as `mpirun -np N nabla train --distributed --out DIR
    /// ...` (a nabla built with `--features mpi`). --batch-size is the global batch; rank 0
    /// prints and writes the run directory.
    #[arg(long)]
    pub distributed: bool,
    /// Compute each batch's gradient as this many fixed slices added in order; the result is
    /// the same for any number of ranks dividing it [default: 4 with --distributed; one
    /// gradient per batch otherwise].
    #[arg(long)]
    pub grad_shards: Option<usize>,
    /// Sliced gradients travel in buckets of about this many values, last layers first, each
    /// sent as soon as backward has finished it (overlapping the exchange with the rest of
    /// backward); the result does not depend on it [default: 65536].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1 << 40))]
    pub bucket_values: Option<u64>,
    /// No progress output; only the final summary line.
    #[arg(long)]
    pub quiet: bool,
    /// Skip writing PNG plots.
    #[arg(long)]
    pub no_plots: bool,
    /// Measure where the training time goes (nabla::profile): print the largest ops (forward
    /// ops, backward rules, gradient sums, the optimizer, evaluation) after training (not with
    /// --quiet) and write every op with its input shapes to profile.csv in the run directory
    /// (with --resume: the steps after the checkpoint).
    #[arg(long)]
    pub profile: bool,
}

/// `nabla eval`.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// A model checkpoint written by `nabla train` (model.safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The data (evaluated on its test split).
    #[command(flatten)]
    pub data: DataArgs,
    /// Evaluate the training split instead.
    #[arg(long)]
    pub train_split: bool,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// `nabla predict`.
#[derive(Debug, Clone, Args)]
pub struct PredictArgs {
    /// A model checkpoint written by `nabla train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Inputs: an IDX images file (plain or .gz) or a CSV of feature columns.
    #[arg(long)]
    pub input: PathBuf,
    /// For CSV inputs that also hold a target column: its name or index, to drop it.
    #[arg(long)]
    pub target_column: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Show at most this many rows.
    #[arg(long)]
    pub limit: Option<usize>,
}

/// `nabla info`.
#[derive(Debug, Clone, Args)]
pub struct InfoArgs {
    /// A checkpoint (weights or training state).
    #[arg(long)]
    pub checkpoint: PathBuf,
}

/// Parses a command line (the program name first) as `nabla` does: the arguments, and the ids
/// of the subcommand's flags given on the command line (not defaults), which `--resume` and
/// the flag checks need.
pub fn parse_from<I, S>(argv: I) -> Result<(Cli, Vec<String>), clap::Error>
where
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString> + Clone,
{
    use clap::parser::ValueSource;
    use clap::{CommandFactory, FromArgMatches};
    let command = Cli::command();
    let matches = command.clone().try_get_matches_from(argv)?;
    let cli = Cli::from_arg_matches(&matches)?;
    let Some((name, m)) = matches.subcommand() else {
        return Ok((cli, Vec::new()));
    };
    let is_flag = |id: &str| {
        command
            .find_subcommand(name)
            .is_some_and(|c| c.get_arguments().any(|a| a.get_id() == id))
    };
    let given = Some(m).map_or_else(Vec::new, |m| {
        m.ids()
            .filter(|id| is_flag(id.as_str()))
            .filter(|id| m.value_source(id.as_str()) == Some(ValueSource::CommandLine))
            .map(|id| id.to_string())
            .collect()
    });
    Ok((cli, given))
}

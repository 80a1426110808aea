//! `nabla train`: flags to a [`TrainConfig`] and data, the library's [`Trainer`] to run it, and
//! the presentation: progress, the run directory's files, plots, the summary line.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use nabla::data::{DataFingerprint, Normalizer};
use nabla::train::{read_checkpoint, EpochMetrics, StopReason, TrainConfig, Trainer};
use serde_json::json;

use crate::args::{DataArgs, TrainArgs};
use crate::dataset::{self, Loaded, TaskData};
use crate::group::Group;
use crate::model::{save_model, ModelMeta};
use crate::progress::{pct, Progress};
use crate::rundir::{Open, RunDir, CHECKPOINT};
use crate::{plots, runconfig};

/// A run stopped by SIGINT/SIGTERM after saving its state: the CLI exits 130 with this line.
#[derive(Debug)]
pub struct Interrupted(pub String);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Interrupted {}

/// Sets the thread count of the GEMM and of the element-wise kernels (default: one per core),
/// this thread being one of them: [`nabla::threads::init_pool`].
pub fn set_threads(threads: Option<usize>) -> Result<()> {
    if threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    nabla::threads::init_pool(threads).context("cannot configure the thread pool")
}

/// Everything a run needs before it starts.
struct Setup {
    /// The run directory; locked by rank 0, the only rank that writes it.
    path: PathBuf,
    _lock: Option<RunDir>,
    data: Loaded,
    data_args: DataArgs,
    config: TrainConfig,
    val_fraction: f64,
    run_id: String,
    resume: Option<PathBuf>,
}

/// Runs `nabla train`; `given` are the ids of the flags given on the command line.
pub fn run(args: &TrainArgs, given: &[String]) -> Result<()> {
    if cfg!(debug_assertions) && std::env::var_os("NABLA_NO_DEBUG_WARNING").is_none() {
        eprintln!(
            "warning: this is a debug build, training runs many times slower; use \
             `cargo run --release -p nabla-cli -- train`"
        );
    }
    set_threads(args.threads)?;
    let mut group = Group::join(args.distributed)?;
    let result = match &args.resume {
        None => new_run(args, given, &group),
        Some(dir) => resume_run(args, given, dir, &group),
    }
    .and_then(|setup| execute(args, setup, &mut group));
    if let Err(e) = &result {
        if group.size > 1 && !e.is::<Interrupted>() {
            // The other ranks may be waiting in a collective: leave without MPI_Finalize, so
            // that mpirun ends the whole job instead of waiting for this rank.
            eprintln!(
                "error: rank {}: {}",
                group.rank,
                format!("{e:#}").replace('\n', " ")
            );
            std::process::exit(1);
        }
    }
    result
}

fn new_run(args: &TrainArgs, given: &[String], group: &Group) -> Result<Setup> {
    let data_args = runconfig::absolute(&args.data)?;
    let data = dataset::load(&data_args)?;
    runconfig::check_relevant(args, given, &data)?;
    let config = runconfig::build(args, &data, data.train.features())?;
    let path = match &args.out {
        Some(d) => d.clone(),
        None if args.distributed => {
            bail!("--distributed needs --out DIR (every rank must name the same run directory)")
        }
        None => fresh_dir(&data.name),
    };
    let open = Open::New {
        overwrite: args.overwrite,
    };
    let lock = if group.leader() {
        Some(RunDir::open(&path, open)?)
    } else {
        None
    };
    Ok(Setup {
        path,
        _lock: lock,
        data,
        data_args,
        config,
        val_fraction: args.val_fraction,
        run_id: format!("{}-{}", crate::utc_stamp(), std::process::id()),
        resume: None,
    })
}

fn resume_run(args: &TrainArgs, given: &[String], dir: &Path, group: &Group) -> Result<Setup> {
    let ckpt = dir.join(CHECKPOINT);
    if !ckpt.is_file() {
        bail!(
            "{}: no checkpoint to resume from (train with --checkpoint-every N to write one)",
            ckpt.display()
        );
    }
    let saved = read_checkpoint(&ckpt)?;
    let (done, step, epoch) = (
        saved.state.history.len(),
        saved.state.step,
        saved.state.epoch,
    );
    let config = runconfig::resumed(args, given, saved.config)?;
    // A --epochs or --max-steps that leaves nothing to do is refused; a plain --resume of a
    // finished run (killed after its last checkpoint) still writes the run's files.
    let mid_epoch = saved.state.seen > 0;
    let asked = args.epochs.is_some();
    if asked && !mid_epoch && done >= config.epochs {
        bail!(
            "{}: the run already finished {done} epochs; --epochs {} would do nothing (give more than {done})",
            dir.display(),
            config.epochs
        );
    }
    if asked && mid_epoch && config.epochs < epoch {
        bail!(
            "{}: the run has reached epoch {epoch} (step {step}); --epochs {} would do nothing (give {epoch} or more)",
            dir.display(),
            config.epochs
        );
    }
    if let Some(m) = args.max_steps.filter(|&m| m <= step) {
        bail!(
            "{}: the run already took {step} steps; --max-steps {m} would do nothing (give more than {step})",
            dir.display()
        );
    }
    let meta = |k: &str| {
        saved.metadata.get(k).with_context(|| {
            format!(
                "{}: not written by `nabla train` (no '{k}')",
                ckpt.display()
            )
        })
    };
    let data_args: DataArgs = serde_json::from_str(meta("data")?)
        .with_context(|| format!("{}: metadata 'data' is malformed", ckpt.display()))?;
    let val_fraction: f64 = meta("val_fraction")?
        .parse()
        .with_context(|| format!("{}: metadata 'val_fraction' is malformed", ckpt.display()))?;
    let run_id = meta("run_id")?.clone();
    let lock = if group.leader() {
        let run = RunDir::open(dir, Open::Resume)?;
        check_owner(&run, &run_id, &ckpt)?;
        Some(run)
    } else {
        None
    };
    let data = dataset::load(&data_args)?;
    Ok(Setup {
        path: dir.to_path_buf(),
        _lock: lock,
        data,
        data_args,
        config,
        val_fraction,
        run_id,
        resume: Some(ckpt),
    })
}

/// The run directory's config.json must be the checkpoint's run's.
fn check_owner(run: &RunDir, run_id: &str, ckpt: &Path) -> Result<()> {
    let path = run.file("config.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let owner = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("run_id").and_then(|r| r.as_str()).map(String::from));
    if owner.as_deref() != Some(run_id) {
        bail!(
            "{} is from run {run_id}, but {} is from run {}: the directory was reused; start \
             afresh with --overwrite",
            ckpt.display(),
            path.display(),
            owner.unwrap_or_else(|| "unknown".into())
        );
    }
    Ok(())
}

fn fresh_dir(name: &str) -> PathBuf {
    let base = PathBuf::from("runs").join(format!("{name}-{}", crate::utc_stamp()));
    let mut dir = base.clone();
    let mut i = 1;
    while dir.exists() {
        dir = PathBuf::from(format!("{}-{i}", base.display()));
        i += 1;
    }
    dir
}

fn execute(args: &TrainArgs, mut s: Setup, group: &mut Group) -> Result<()> {
    let normalizer = Normalizer::fit(s.data.train.x(), s.data.defaults.normalization)?;
    // In place: the raw features are not needed again (one copy of the data set, not two).
    s.data.train.normalize_in_place(&normalizer)?;
    s.data.test.normalize_in_place(&normalizer)?;
    let d = &s.data;
    let (train, test) = (d.train.clone(), d.test.clone());
    let text = matches!(test, TaskData::Text(_));
    let (train, val) = if let TaskData::Text(held_out) = &test {
        // A text's held-out end is its validation set, evaluated during training on evenly
        // spread windows (`nabla eval` reads all of it).
        let spread = held_out.spread(dataset::TEXT_EVAL_WINDOWS);
        (
            train,
            (!spread.is_empty()).then_some(TaskData::Text(spread)),
        )
    } else if s.val_fraction == 0.0 {
        (train, None)
    } else {
        let (tr, va) = train.split(s.val_fraction, s.data_args.seed ^ 0x0A11_DA7E)?;
        (tr, Some(va))
    };
    let fingerprint = DataFingerprint::new(&d.name, &d.files, &train)?;
    let metadata = BTreeMap::from([
        ("data".to_string(), serde_json::to_string(&s.data_args)?),
        ("val_fraction".to_string(), s.val_fraction.to_string()),
        ("run_id".to_string(), s.run_id.clone()),
    ]);
    let rows = (train.len(), val.as_ref().map_or(0, TaskData::len));
    let mut trainer = Trainer::new(s.config.clone(), train)?
        .with_fingerprint(fingerprint)
        .with_metadata(metadata);
    if !text {
        trainer = trainer.with_test(test.clone());
    }
    if let Some(v) = val {
        trainer = trainer.with_validation(v);
    }
    if s.config.checkpoint_every.is_some() {
        trainer = trainer.with_checkpoint(s.path.join(CHECKPOINT));
    }
    if let Some(values) = args.bucket_values {
        trainer = trainer.with_bucket_values(usize::try_from(values)?)?;
    }
    if let Some(c) = group.take() {
        trainer = trainer.with_collective(c)?;
    }
    let show = !args.quiet && group.leader();
    if let Some(ckpt) = &s.resume {
        trainer.resume(ckpt)?;
        if show {
            crate::outln!(
                "resuming {} at step {} (epoch {})",
                s.path.display(),
                trainer.step(),
                trainer.epoch()
            );
        }
    }
    if group.leader() {
        write_config(&s, &normalizer, rows, args.threads)?;
    }
    install_signal_handlers(&trainer.stop_handle())?;
    if show && text {
        crate::outln!(
            "training {} on {} ({} characters, {} in the vocabulary; {} validation windows): {} lr {}, {} parameters, {} steps, batch {}",
            trainer.model().describe(),
            d.name,
            d.train_chars(),
            d.outputs,
            rows.1,
            s.config.optimizer.name(),
            s.config.optimizer.lr(),
            trainer.model().parameters().iter().map(|p| p.numel()).sum::<usize>(),
            s.config.total_steps(rows.0),
            s.config.batch_size
        );
    } else if show {
        crate::outln!(
            "training {} on {} ({} train / {} test samples): {} lr {}, {} parameters, {} epochs, batch {}",
            trainer.model().describe(),
            d.name,
            rows.0,
            test.len(),
            s.config.optimizer.name(),
            s.config.optimizer.lr(),
            trainer.model().parameters().iter().map(|p| p.numel()).sum::<usize>(),
            s.config.epochs,
            s.config.batch_size
        );
    }
    let tty = std::io::stdout().is_terminal();
    let mut progress = Progress::new(show, tty, s.config.epochs, rows.1 > 0);
    if text {
        progress = progress.in_steps(s.config.total_steps(rows.0));
    }
    if s.resume.is_some() {
        // The profile of the run's earlier segment; a new one covers this segment only.
        match std::fs::remove_file(s.path.join("profile.csv")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                bail!(
                    "{}: cannot remove: {e}",
                    s.path.join("profile.csv").display()
                )
            }
            _ => {}
        }
    }
    let reason = if args.profile {
        let (reason, prof) = nabla::profile::profile(|| trainer.fit(&mut progress));
        // Written and shown also when training failed (a divergence is when one asks).
        if group.leader() {
            nabla::io::write_atomic(&s.path.join("profile.csv"), prof.to_csv().as_bytes())?;
            if !args.quiet {
                print_profile(&prof, &s.path);
            }
        }
        reason?
    } else {
        trainer.fit(&mut progress)?
    };
    finish(args, &s, group, &mut trainer, &normalizer, &test, reason)
}

/// The 20 largest rows of a training profile, merged over input shapes.
fn print_profile(prof: &nabla::profile::Profile, dir: &Path) {
    let by_op = prof.by_op();
    let table = by_op.to_string();
    let lines: Vec<&str> = table.lines().collect();
    let shown = by_op.rows().len().min(20);
    crate::outln!(
        "where the time went ({} of {} rows; every op with its shapes in {}):",
        shown,
        by_op.rows().len(),
        dir.join("profile.csv").display()
    );
    for l in lines
        .iter()
        .take(shown + 1)
        .chain(&lines[lines.len() - 2..])
    {
        crate::outln!("{l}");
    }
}

fn write_config(
    s: &Setup,
    normalizer: &Normalizer,
    rows: (usize, usize),
    threads: Option<usize>,
) -> Result<()> {
    let d = &s.data;
    let settings = json!({
        "run_id": s.run_id,
        "command": std::env::args().collect::<Vec<_>>(),
        "dataset": d.name, "source": d.source, "task": d.task, "data": s.data_args,
        "train_samples": rows.0, "validation_samples": rows.1, "test_samples": d.test.len(),
        "normalization": normalizer.mode,
        "train_config": s.config,
        "threads": threads.unwrap_or_else(rayon::current_num_threads),
        "nabla_version": env!("CARGO_PKG_VERSION"),
    });
    nabla::io::write_atomic(
        &s.path.join("config.json"),
        serde_json::to_string_pretty(&settings)?.as_bytes(),
    )?;
    Ok(())
}

/// SIGINT/SIGTERM set the trainer's stop flag (it finishes the step and saves); a second one
/// while the flag is set exits at once with 130.
fn install_signal_handlers(stop: &Arc<AtomicBool>) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone())
            .context("cannot install a signal handler")?;
        signal_hook::flag::register(sig, stop.clone())
            .context("cannot install a signal handler")?;
    }
    Ok(())
}

fn finish(
    args: &TrainArgs,
    s: &Setup,
    group: &Group,
    trainer: &mut Trainer,
    normalizer: &Normalizer,
    test: &TaskData,
    reason: StopReason,
) -> Result<()> {
    let d = &s.data;
    let text = matches!(test, TaskData::Text(_));
    trainer.model_mut().set_training(false);
    if !group.leader() {
        // Every rank holds the same weights; rank 0 writes them.
        return match reason {
            StopReason::Interrupted => Err(Interrupted(String::new()).into()),
            _ => Ok(()),
        };
    }
    let meta = ModelMeta {
        spec: trainer
            .config()
            .model
            .clone()
            .context("internal: the CLI's config has a model spec")?,
        input_scale: d.input_scale,
        task: d.task,
        normalizer: normalizer.clone(),
        class_names: d.class_names.clone(),
        dataset: d.name.clone(),
        data: Some(s.data_args.clone()),
    };
    save_model(&s.path.join("model.safetensors"), trainer.model(), &meta)?;
    let history = trainer.history();
    write_metrics(&s.path, history)?;
    let (step, dir) = (trainer.step(), s.path.display());
    if reason == StopReason::Interrupted {
        let resume = if trainer.last_checkpoint() == Some(step) {
            format!("resume with `nabla train --resume {dir}`")
        } else {
            "no checkpoint was written (train with --checkpoint-every N to be able to resume)"
                .into()
        };
        return Err(Interrupted(format!(
            "interrupted at epoch {}, step {step}; model and metrics of the finished epochs are in {dir}; {resume}",
            trainer.epoch()
        ))
        .into());
    }
    let mut plots_written = Vec::new();
    if !args.no_plots {
        plots_written =
            plots::write_run_plots(&s.path, history, trainer.model(), test, &d.class_names)?;
    }
    let last = history.last().context("no epoch ran")?;
    let headline = match (last.val_loss, last.test_accuracy, last.test_loss) {
        (Some(l), ..) if text => format!(
            "validation loss {l:.4} nats/char ({:.4} bits/char; train {:.4})",
            l / std::f64::consts::LN_2,
            last.train_loss
        ),
        (_, a, l) => match (a, l) {
            (Some(a), _) => format!(
                "test accuracy {:.2}% (train {})",
                100.0 * a,
                pct(last.train_accuracy)
            ),
            (None, Some(l)) => format!("test loss {l:.4} (train {:.4})", last.train_loss),
            (None, None) => format!("train loss {:.4}", last.train_loss),
        },
    };
    let stopped = match reason {
        StopReason::EarlyStopped { best_epoch } => {
            format!(" (early stopping: best epoch {best_epoch})")
        }
        _ => String::new(),
    };
    crate::outln!(
        "{}: {headline} after {} epochs, {step} steps, {:.1} s{stopped}; run directory {dir}{}",
        d.name,
        last.epoch,
        last.seconds,
        if plots_written.is_empty() {
            String::new()
        } else {
            format!(" (plots: {})", plots_written.join(", "))
        }
    );
    if let Some(line) = group.report() {
        crate::outln!("{line}");
    }
    Ok(())
}

/// metrics.csv and metrics.json (floats written to round-trip exactly).
fn write_metrics(dir: &Path, rows: &[EpochMetrics]) -> Result<()> {
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:?}"));
    let mut csv = String::from(
        "epoch,step,lr,train_loss,train_accuracy,val_loss,val_accuracy,test_loss,test_accuracy,seconds,samples_per_second\n",
    );
    for r in rows {
        writeln!(
            csv,
            "{},{},{:?},{:?},{},{},{},{},{},{:?},{:?}",
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

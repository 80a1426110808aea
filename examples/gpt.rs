//! A character-level GPT on Shakespeare with the library alone: the text and its vocabulary,
//! the model as a spec, the Trainer, the loss curve, and text sampled with and without the
//! key/value cache.
//!
//! The model and settings are nanoGPT's CPU "baby GPT" (what `nabla train --arch gpt-tiny`
//! trains): token and position embeddings of width 128, 4 pre-LN transformer blocks with 4
//! heads and a GELU MLP of width 512, a final layer norm, the head tied to the token
//! embedding, no biases (806,528 parameters); windows of 64 characters, batch 12, AdamW 1e-3
//! (β₂ 0.99, weight decay 0.1), 100 warm-up steps then cosine to 1e-4, clipping at 1, 2,000
//! steps. The validation loss (nats per character) is measured every 250 steps on 256 windows
//! spread over the held-out last 10% of the text. Results: `examples/README.md`.
//!
//! Needs the corpus: `tools/get-shakespeare` (or `--text FILE` with any UTF-8 text).
//!
//! Run: `cargo run --release --example gpt [-- --steps 2000 --text FILE]`

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nabla::data::text::{read_text, TextData, Vocab};
use nabla::data::TaskData;
use nabla::nn::{generate, Init, LayerSpec, ModelSpec, SampleOptions};
use nabla::optim::{AdamConfig, LrSchedule};
use nabla::train::{Callback, EpochMetrics, OptimizerConfig, TrainConfig, Trainer};
use nabla_cli::experiment::image_dir;
use nabla_cli::plots::{chart, Series};

const CORPUS: &str = "/usr/share/datasets/shakespeare/shakespeare.txt";
const CONTEXT: usize = 64;

/// The baby GPT over `vocab` characters.
fn spec(vocab: usize, seed: u64) -> ModelSpec {
    ModelSpec {
        input: vec![CONTEXT],
        layers: vec![LayerSpec::Gpt {
            vocab,
            context: CONTEXT,
            width: 128,
            depth: 4,
            heads: 4,
            bias: false,
            tied: true,
            dropout: 0.0,
        }],
        init: Init::KaimingUniform, // (a Gpt layer draws GPT-2's N(0, 0.02²) itself)
        seed,
    }
}

/// nanoGPT's CPU settings for `steps` steps.
fn config(vocab: usize, steps: u64) -> TrainConfig {
    let adamw = AdamConfig {
        beta2: 0.99,
        weight_decay: 0.1,
        ..AdamConfig::adamw(1e-3)
    };
    let mut c = TrainConfig::new(spec(vocab, 0), OptimizerConfig::Adam(adamw));
    let warmup = 100.min(steps / 2);
    c.schedule = LrSchedule::Warmup {
        steps: warmup,
        then: Box::new(LrSchedule::Cosine {
            total: (steps - warmup).max(1),
            min_lr: 1e-4,
        }),
    };
    c.batch_size = 12;
    c.epochs = 1;
    c.max_steps = Some(steps);
    c.eval_every = Some(250.min(steps));
    c.clip = Some(1.0);
    c
}

/// Each evaluation row, printed as it comes.
#[derive(Default)]
struct Curves {
    rows: Vec<EpochMetrics>,
    quiet: bool,
}

impl Callback for Curves {
    fn epoch_end(&mut self, row: &EpochMetrics) {
        if !self.quiet {
            println!(
                "step {:>5}  train loss {:.4}  validation loss {:.4} nats/char ({:.3} bits/char)  {:.1} s",
                row.step,
                row.train_loss,
                row.val_loss.unwrap_or(f64::NAN),
                row.val_loss.unwrap_or(f64::NAN) / std::f64::consts::LN_2,
                row.seconds
            );
        }
        self.rows.push(row.clone());
    }
}

/// Trains on the text at `path` for `steps` steps: the trainer, the vocabulary and the curves.
fn train(path: &Path, steps: u64, quiet: bool) -> Result<(Trainer, Vocab, Curves)> {
    let text = read_text(path)?;
    let vocab = Vocab::from_text(&text)?;
    let (train, held_out) = TextData::split(vocab.encode(&text)?, vocab.len(), CONTEXT, 0.1)?;
    if !quiet {
        println!(
            "{}: {} characters, {} distinct; {} for training, {} held out",
            path.display(),
            text.chars().count(),
            vocab.len(),
            train.tokens.len(),
            held_out.tokens.len()
        );
    }
    let mut trainer = Trainer::new(config(vocab.len(), steps), TaskData::Text(train))?
        .with_validation(TaskData::Text(held_out.spread(256)));
    let mut curves = Curves {
        quiet,
        ..Curves::default()
    };
    trainer.fit(&mut curves)?;
    Ok((trainer, vocab, curves))
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut steps, mut path) = (2000u64, PathBuf::from(CORPUS));
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--steps", Some(v)) => steps = v.parse().context("--steps: not a number")?,
            ("--text", Some(v)) => path = PathBuf::from(v),
            (other, _) => {
                eprintln!("usage: gpt [--steps N] [--text FILE] (unknown or incomplete: {other})");
                std::process::exit(2);
            }
        }
    }
    if cfg!(debug_assertions) {
        eprintln!("note: a debug build is slow; use cargo run --release --example gpt");
    }
    // One thread per core, this one among them (1.6× faster here than rayon's default pool).
    nabla::threads::init_pool(None)?;
    let (trainer, vocab, curves) = train(&path, steps, false)?;
    let val: Vec<(f64, f64)> = curves
        .rows
        .iter()
        .filter_map(|r| r.val_loss.map(|l| (r.step as f64, l)))
        .collect();
    let train_rows: Vec<(f64, f64)> = curves
        .rows
        .iter()
        .map(|r| (r.step as f64, r.train_loss))
        .collect();
    let plot = image_dir()?.join("gpt_loss.png");
    chart(
        &plot,
        "Baby GPT on Shakespeare: loss per character",
        "step",
        "cross-entropy (nats/char)",
        &[
            Series::new("training (mean since the previous point)", train_rows),
            Series::new("validation (256 held-out windows)", val),
        ],
        false,
    )?;
    println!("plot: {}", plot.display());

    // Sampling: 500 characters with the key/value cache, then the same without it.
    let model = trainer.model();
    let prompt = vocab.encode("ROMEO.\n")?;
    let mut opts = SampleOptions {
        tokens: 500,
        temperature: 0.8,
        top_k: None,
        seed: 0,
        cache: true,
    };
    let cached = generate(model, CONTEXT, &prompt, &opts, &mut |_| Ok(()))?;
    println!(
        "\n--- sample (temperature 0.8, seed 0) ---\nROMEO.\n{}\n---",
        vocab.decode(&cached.tokens)
    );
    opts.cache = false;
    let plain = generate(model, CONTEXT, &prompt, &opts, &mut |_| Ok(()))?;
    println!(
        "generation: {:.0} characters/s with the key/value cache, {:.0} without ({:.1}× faster; \
         the same characters: {})",
        cached.tokens_per_second(),
        plain.tokens_per_second(),
        cached.tokens_per_second() / plain.tokens_per_second(),
        cached.tokens == plain.tokens
    );
    println!(
        "parameters: {}",
        model.parameters().iter().map(|p| p.numel()).sum::<usize>()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 60 steps on the corpus (CI installs it), or on a couplet repeated when it is missing on
    /// a developer's machine: the validation loss ends a nat per character below the uniform
    /// guess (ln 84 ≈ 4.43 on the corpus; 2.79 measured).
    #[test]
    fn a_short_run_learns() {
        let corpus = Path::new(CORPUS);
        let path = if corpus.is_file() {
            corpus.to_path_buf()
        } else {
            assert!(
                std::env::var_os("NABLA_REQUIRE_TEXT").is_none(),
                "NABLA_REQUIRE_TEXT is set but {CORPUS} is missing (tools/get-shakespeare)"
            );
            eprintln!("note: {CORPUS} is missing; a repeated paragraph instead");
            let p =
                std::env::temp_dir().join(format!("nabla_gpt_example_{}.txt", std::process::id()));
            let para =
                "Now is the winter of our discontent\nMade glorious summer by this sun of York;\n";
            std::fs::write(&p, para.repeat(200)).unwrap();
            p
        };
        let (_, vocab, curves) = train(&path, 60, true).unwrap();
        let uniform = (vocab.len() as f64).ln();
        let last = curves.rows.last().unwrap().val_loss.unwrap();
        assert!(
            last < uniform - 1.0,
            "validation {last} nats/char, uniform guess {uniform}"
        );
    }
}

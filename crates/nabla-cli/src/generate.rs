//! `nabla generate`: text from a language model's file, streamed as it is sampled (the
//! library's [`nabla::nn::generate`] does the sampling).

use std::io::Write;

use anyhow::{bail, Result};
use nabla::data::text::Vocab;
use nabla::nn::{generate, SampleOptions};

use crate::args::{GenerateArgs, Task};
use crate::model::load_model;

/// Runs `nabla generate`.
pub fn run(args: &GenerateArgs) -> Result<()> {
    crate::train::set_threads(args.threads)?;
    let (model, meta) = load_model(&args.checkpoint)?;
    if meta.task != Task::Text {
        bail!(
            "{}: a {} model, not a language model (train one with --dataset text --text FILE)",
            args.checkpoint.display(),
            crate::runconfig::spelled(&meta.task)
        );
    }
    let vocab = Vocab::from_strings(&meta.class_names)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.checkpoint.display()))?;
    let context = meta.spec.input_features();
    let prompt = match &args.prompt {
        Some(p) if p.is_empty() => {
            bail!("--prompt is empty (leave it out to start from a newline)")
        }
        Some(p) => p.clone(),
        None if vocab.encode("\n").is_ok() => "\n".into(),
        None => vocab.decode(&[0]),
    };
    let ids = vocab
        .encode(&prompt)
        .map_err(|e| anyhow::anyhow!("--prompt: {e}"))?;
    let opts = SampleOptions {
        tokens: args.tokens,
        temperature: args.temperature,
        top_k: args.top_k,
        seed: args.seed,
        cache: !args.no_cache,
    };
    opts.check()?;
    if ids.len() > context && !args.quiet {
        eprintln!(
            "note: the prompt's {} characters are more than the model's context of {context}: \
             it continues from the last {context}",
            ids.len()
        );
    }
    if args.prompt.is_some() {
        crate::out!("{prompt}");
    }
    let mut stdout = std::io::stdout();
    let g = generate(model.as_ref(), context, &ids, &opts, &mut |t| {
        crate::out!("{}", vocab.decode(&[t]));
        stdout.flush().ok();
        Ok(())
    })?;
    crate::outln!();
    if !args.quiet {
        eprintln!(
            "{} characters in {:.2} s: {:.0} characters/s ({}; context {context}, key/value cache {:.1} KiB)",
            g.tokens.len(),
            g.seconds,
            g.tokens_per_second(),
            if opts.cache { "with the key/value cache" } else { "without a cache" },
            g.cache_bytes as f64 / 1024.0
        );
    }
    Ok(())
}

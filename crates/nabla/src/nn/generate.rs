//! Sampling text from a language model, one token at a time: temperature, top-k, a seeded
//! generator, and a key/value cache so that each new token costs one position.

use std::time::Instant;

use crate::autograd::no_grad;
use crate::error::{Error, Result};
use crate::nn::{forward_with_cache, KvCache, Module};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// How [`generate`] samples.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleOptions {
    /// Tokens to generate.
    pub tokens: usize,
    /// Divides the logits: below 1 sharper, above 1 flatter; 0 takes the most likely token.
    pub temperature: f64,
    /// Sample among the `k` most likely tokens only.
    pub top_k: Option<usize>,
    /// Seed of the sampler.
    pub seed: u64,
    /// Keep the keys and values of earlier positions (true), or run the whole context again
    /// for every token (false: slower; the same positions, so the same logits up to rounding
    /// and the same tokens barring a near tie).
    pub cache: bool,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions {
            tokens: 200,
            temperature: 1.0,
            top_k: None,
            seed: 0,
            cache: true,
        }
    }
}

impl SampleOptions {
    /// The options' own errors, which [`generate`] returns before sampling anything: a
    /// temperature that is negative or not finite, a top-k of 0. For a caller that shows
    /// something (the prompt) before the first token.
    ///
    /// ```
    /// use nabla::nn::SampleOptions;
    /// assert!(SampleOptions::default().check().is_ok());
    /// let hot = SampleOptions { temperature: f64::NAN, ..SampleOptions::default() };
    /// assert!(hot.check().unwrap_err().to_string().contains("temperature NaN"));
    /// ```
    pub fn check(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::arg(
                "generate",
                format!("temperature {} must be finite and ≥ 0", self.temperature),
            ));
        }
        if self.top_k == Some(0) {
            return Err(Error::arg(
                "generate",
                "top-k 0 keeps no token: give at least 1",
            ));
        }
        Ok(())
    }
}

/// What [`generate`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The tokens sampled (not the prompt).
    pub tokens: Vec<u32>,
    /// Seconds spent, prompt included.
    pub seconds: f64,
    /// Bytes the key/value cache held at its largest.
    pub cache_bytes: usize,
}

impl Generation {
    /// Tokens per second.
    pub fn tokens_per_second(&self) -> f64 {
        self.tokens.len() as f64 / self.seconds.max(1e-9)
    }
}

/// Samples `opts.tokens` tokens from `model` (ids `[1, t]` → logits `[1, t, vocab]`, at most
/// `context` positions) after `prompt` (of which the model sees the last `context` tokens at
/// most), calling `on_token` with each as it is drawn. When the
/// context is full, the model continues from the last half of it (with the cache: a new cache
/// holding those positions), so any number of tokens can be generated; with or without the
/// cache it sees the same positions, so both give the same logits up to rounding and draw
/// the same tokens unless two candidates tie within that rounding. Give it a model in
/// evaluation mode (as a model file loads, or as [`Trainer::fit`](crate::train::Trainer::fit)
/// leaves it): without the cache, a model with dropout in training mode would drop.
///
/// ```
/// use nabla::nn::{generate, Gpt, GptConfig, SampleOptions};
/// use nabla::Rng;
/// let config = GptConfig {
///     vocab: 6, context: 8, width: 8, depth: 1, heads: 2, bias: true, tied: true, dropout: 0.0,
/// };
/// let gpt = Gpt::new(config, &mut Rng::new(0))?;
/// let opts = SampleOptions { tokens: 20, seed: 3, ..SampleOptions::default() };
/// let g = generate(&gpt, 8, &[1, 2], &opts, &mut |_| Ok(()))?;
/// assert_eq!(g.tokens.len(), 20);
/// assert!(g.tokens.iter().all(|&t| t < 6));
/// # Ok::<(), nabla::Error>(())
/// ```
pub fn generate(
    model: &dyn Module<f32>,
    context: usize,
    prompt: &[u32],
    opts: &SampleOptions,
    on_token: &mut dyn FnMut(u32) -> Result<()>,
) -> Result<Generation> {
    if prompt.is_empty() || context == 0 {
        return Err(Error::arg(
            "generate",
            "the prompt needs at least one token and the model a context",
        ));
    }
    opts.check()?;
    let started = Instant::now();
    let mut rng = Rng::new(opts.seed);
    let mut all: Vec<u32> = prompt.to_vec();
    let mut out = Vec::with_capacity(opts.tokens);
    let mut cache = KvCache::new();
    let mut cache_bytes = 0;
    // The model sees `all[start..]`: at most `context` tokens, restarted from the last half
    // of them when the next token would not fit, with or without the cache, so that both see
    // the same positions and draw the same tokens barring near ties (the cache cannot slide:
    // its keys were made at their positions).
    let mut start = all.len().saturating_sub(context);
    // Tokens the cache has not seen yet (all of `all[start..]` at first).
    let mut pending = all.len() - start;
    no_grad(|| -> Result<()> {
        for _ in 0..opts.tokens {
            if all.len() - start > context {
                start = all.len() - context.div_ceil(2);
                cache = KvCache::new();
                pending = all.len() - start;
            }
            let logits = if opts.cache {
                let y = forward_with_cache(model, &ids(&all[all.len() - pending..])?, &mut cache)?;
                cache_bytes = cache_bytes.max(cache.bytes());
                y
            } else {
                model.forward(&ids(&all[start..])?)?
            };
            let next = sample(&last_row(&logits)?, opts, &mut rng);
            on_token(next)?;
            all.push(next);
            out.push(next);
            pending = 1;
        }
        Ok(())
    })?;
    Ok(Generation {
        tokens: out,
        seconds: started.elapsed().as_secs_f64(),
        cache_bytes,
    })
}

fn ids(tokens: &[u32]) -> Result<Tensor<f32>> {
    Tensor::from_vec(
        tokens.iter().map(|&t| t as f32).collect(),
        &[1, tokens.len()],
    )
}

/// The logits of the last position of `[1, t, vocab]`.
fn last_row(logits: &Tensor<f32>) -> Result<Vec<f32>> {
    match logits.shape() {
        [1, t, v] if *t > 0 => Ok(logits.narrow(1, t - 1, 1)?.to_vec()?[..*v].to_vec()),
        s => Err(Error::arg(
            "generate",
            format!("the model must give logits [1, t, vocab], not {s:?}"),
        )),
    }
}

/// A token drawn from `softmax(logits / temperature)` over the top `k` (the most likely one at
/// temperature 0; ties to the lowest id).
fn sample(logits: &[f32], opts: &SampleOptions, rng: &mut Rng) -> u32 {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    if opts.temperature == 0.0 {
        return order[0] as u32;
    }
    order.truncate(opts.top_k.unwrap_or(logits.len()).min(logits.len()));
    let top = f64::from(logits[order[0]]);
    let weights: Vec<f64> = order
        .iter()
        .map(|&i| ((f64::from(logits[i]) - top) / opts.temperature).exp())
        .collect();
    let mut u = rng.uniform() * weights.iter().sum::<f64>();
    for (&i, w) in order.iter().zip(&weights) {
        if u < *w {
            return i as u32;
        }
        u -= w;
    }
    order[order.len() - 1] as u32
}

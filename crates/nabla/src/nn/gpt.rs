//! [`Gpt`]: a decoder-only transformer language model — token and position embeddings,
//! pre-LN [`TransformerBlock`]s, a final [`LayerNorm`] and a head onto the vocabulary, tied
//! to the token embedding or its own.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::nn::dropout::Drops;
use crate::nn::transformer::{dropout_text, normal_linear};
use crate::nn::{prefixed, Embedding, KvCache, LayerNorm, Linear, Module, TransformerBlock};
use crate::rng::Rng;
use crate::tensor::shape::fmt_shape;
use crate::tensor::{Float, Tensor};

/// The shape of a [`Gpt`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GptConfig {
    /// Tokens in the vocabulary.
    pub vocab: usize,
    /// The longest context (positions with an embedding).
    pub context: usize,
    /// Width of the residual stream.
    pub width: usize,
    /// Transformer blocks.
    pub depth: usize,
    /// Attention heads per block (dividing `width`).
    pub heads: usize,
    /// Biases in the linear layers and layer norms.
    pub bias: bool,
    /// The head is the token embedding's transpose (no weights of its own).
    pub tied: bool,
    /// Drop probability in `[0, 1)` in training mode, where nanoGPT drops: the embeddings'
    /// sum, every block's attention probabilities, attention output and MLP output (0: none).
    pub dropout: f64,
}

impl GptConfig {
    /// Checks that the sizes make a model.
    pub fn validate(&self) -> Result<()> {
        let ok = self.vocab > 0
            && self.context > 0
            && self.width > 0
            && self.depth > 0
            && self.heads > 0
            && self.width.is_multiple_of(self.heads);
        check_dropout(self.dropout)?;
        if ok {
            Ok(())
        } else {
            Err(Error::arg(
                "Gpt",
                format!(
                    "vocab {}, context {}, width {}, depth {}, heads {}: all must be > 0 and \
                     the width a multiple of the heads",
                    self.vocab, self.context, self.width, self.depth, self.heads
                ),
            ))
        }
    }

    /// Parameters of the model.
    pub fn parameter_count(&self) -> usize {
        let (c, b) = (self.width, usize::from(self.bias));
        let norm = c * (1 + b);
        let block = 2 * norm
            + (3 * c * c + 3 * c * b)
            + (c * c + c * b)
            + (4 * c * c + 4 * c * b)
            + (4 * c * c + c * b);
        self.vocab * c
            + self.context * c
            + self.depth * block
            + norm
            + if self.tied {
                0
            } else {
                c * self.vocab + self.vocab * b
            }
    }
}

fn check_dropout(p: f64) -> Result<()> {
    if (0.0..1.0).contains(&p) {
        Ok(())
    } else {
        Err(Error::arg("Gpt", format!("dropout {p} is not in [0, 1)")))
    }
}

/// A GPT: `logits = head(ln_f(blocks(tok_emb[ids] + pos_emb[positions])))`, for ids `[b, t]`
/// (`t ≤ context`) giving `[b, t, vocab]`. Initialised as GPT-2: weights `N(0, 0.02²)`, the
/// projections into the residual stream `N(0, (0.02/√(2·depth))²)`, biases 0. With
/// [`GptConfig::dropout`] training mode drops where nanoGPT does, all masks from one generator
/// (seeded by a draw after the weights', kept in checkpoints as the layer's `rng` state);
/// evaluation mode and generation with a key/value cache drop nothing.
pub struct Gpt<T: Float = f32> {
    config: GptConfig,
    /// `[vocab, width]`.
    pub tok_emb: Embedding<T>,
    /// `[context, width]`.
    pub pos_emb: Embedding<T>,
    /// The blocks.
    pub blocks: Vec<TransformerBlock<T>>,
    /// The final norm.
    pub ln_f: LayerNorm<T>,
    /// `[width, vocab]`, when not tied.
    pub head: Option<Linear<T>>,
    drops: Drops,
}

impl<T: Float> Gpt<T> {
    /// A model drawn from `rng`.
    pub fn new(config: GptConfig, rng: &mut Rng) -> Result<Self> {
        config.validate()?;
        let c = config.width;
        let std = (0.02, 0.02 / (2.0 * config.depth as f64).sqrt());
        let tok_emb = Embedding::new(config.vocab, c, 0.02, rng)?;
        let pos_emb = Embedding::new(config.context, c, 0.02, rng)?;
        let blocks = (0..config.depth)
            .map(|_| TransformerBlock::new(c, config.heads, true, config.bias, std, rng))
            .collect::<Result<Vec<_>>>()?;
        let head = (!config.tied)
            .then(|| normal_linear(c, config.vocab, config.bias, 0.02, rng))
            .transpose()?;
        let gpt = Gpt {
            config: GptConfig {
                dropout: 0.0,
                ..config
            },
            tok_emb,
            pos_emb,
            blocks,
            ln_f: LayerNorm::new(c, config.bias, 1e-5)?,
            head,
            drops: Drops::none(),
        };
        // Drawn after the weights, and only with dropout: the weights are those of the same
        // model without it.
        if config.dropout > 0.0 {
            gpt.with_dropout(config.dropout, rng.next_u64())
        } else {
            Ok(gpt)
        }
    }

    /// The model with dropout of probability `p` in `[0, 1)` (see [`GptConfig::dropout`]),
    /// its masks seeded `seed`; `p = 0` removes it. Its blocks share the generator: a block
    /// put in by hand afterwards keeps its own (not in this model's checkpointed state), so
    /// set dropout after replacing blocks.
    pub fn with_dropout(mut self, p: f64, seed: u64) -> Result<Self> {
        let drops = if p > 0.0 {
            Drops::new("Gpt", p, seed)?
        } else {
            check_dropout(p)?;
            Drops::none()
        };
        self.blocks = std::mem::take(&mut self.blocks)
            .into_iter()
            .map(|b| b.sharing(drops.clone()))
            .collect();
        self.config.dropout = p;
        self.drops = drops;
        Ok(self)
    }

    /// Its configuration.
    pub fn config(&self) -> &GptConfig {
        &self.config
    }

    fn run(&self, x: &Tensor<T>, mut cache: Option<&mut KvCache<T>>) -> Result<Tensor<T>> {
        let (b, t) = match x.shape() {
            [b, t] => (*b, *t),
            s => {
                return Err(Error::shape(
                    "Gpt",
                    format!(
                        "input {} must be token ids [batch, positions]",
                        fmt_shape(s)
                    ),
                ))
            }
        };
        let start = cache.as_ref().map_or(0, |c| c.position());
        let (c, n) = (self.config.width, self.config.context);
        if start + t > n {
            return Err(Error::shape(
                "Gpt",
                format!(
                    "positions {start}..{} exceed the model's context of {n}",
                    start + t
                ),
            ));
        }
        let tok = self.tok_emb.forward(x)?;
        let pos = self.pos_emb.weight.narrow(0, start, t)?;
        let mut h = tok.add(&pos)?;
        if cache.is_none() {
            h = self.drops.apply(&h)?;
        }
        for block in &self.blocks {
            h = match cache.as_deref_mut() {
                Some(cache) => block.forward_cached(&h, cache)?,
                None => block.forward(&h)?,
            };
        }
        let h = self.ln_f.forward(&h.reshape(&[b * t, c])?)?;
        let logits = match &self.head {
            Some(head) => head.forward(&h)?,
            None => h.matmul_t(&self.tok_emb.weight, false, true)?,
        };
        logits.reshape(&[b, t, self.config.vocab])
    }
}

impl<T: Float> Module<T> for Gpt<T> {
    fn forward(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        self.run(x, None)
    }
    fn forward_cached(&self, x: &Tensor<T>, cache: &mut KvCache<T>) -> Result<Tensor<T>> {
        self.run(x, Some(cache))
    }
    fn named_parameters(&self) -> Vec<(String, Tensor<T>)> {
        let mut v: Vec<(String, Tensor<T>)> = prefixed("tok_emb.", self.tok_emb.named_parameters());
        v.extend(prefixed::<_, Vec<_>>(
            "pos_emb.",
            self.pos_emb.named_parameters(),
        ));
        for (i, b) in self.blocks.iter().enumerate() {
            v.extend(prefixed::<_, Vec<_>>(
                &format!("blocks.{i}."),
                b.named_parameters(),
            ));
        }
        v.extend(prefixed::<_, Vec<_>>("ln_f.", self.ln_f.named_parameters()));
        if let Some(h) = &self.head {
            v.extend(prefixed::<_, Vec<_>>("head.", h.named_parameters()));
        }
        v
    }
    fn set_training(&mut self, training: bool) {
        self.drops.set_training(training);
        for b in &mut self.blocks {
            b.set_training(training);
        }
    }
    fn extra_state(&self) -> BTreeMap<String, String> {
        self.drops.extra_state()
    }
    fn load_extra_state(&mut self, state: &BTreeMap<String, String>) -> Result<()> {
        self.drops.load_extra_state(state)
    }
    fn describe(&self) -> String {
        let g = &self.config;
        format!(
            "Gpt(vocab {}, context {}, width {}, {} blocks × {} heads{}{})",
            g.vocab,
            g.context,
            g.width,
            g.depth,
            g.heads,
            if g.tied { ", tied head" } else { "" },
            dropout_text(g.dropout)
        )
    }
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match input {
            [b, t] if *t <= self.config.context => Ok(vec![*b, *t, self.config.vocab]),
            _ => Err(Error::shape(
                "Gpt",
                format!(
                    "input {} must be token ids [batch, positions ≤ {}]",
                    fmt_shape(input),
                    self.config.context
                ),
            )),
        }
    }
}

//! The layers of a transformer: [`LayerNorm`], [`Embedding`], causal [`MultiHeadAttention`]
//! and the pre-LN [`TransformerBlock`], with the key/value cache ([`KvCache`]) that makes
//! generating one token cost one position.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::nn::dropout::Drops;
use crate::nn::{prefixed, Linear, Module};
use crate::ops::{packed_attention_dropped, scaled_dot_product_attention};
use crate::rng::Rng;
use crate::tensor::shape::fmt_shape;
use crate::tensor::{Float, Tensor};

/// Layer normalisation over the last axis, as `torch.nn.LayerNorm(dim)`: `weight` (1) and,
/// when it has one, `bias` (0), both `[dim]`.
pub struct LayerNorm<T: Float = f32> {
    /// `[dim]`.
    pub weight: Tensor<T>,
    /// `[dim]`, if the layer has a bias.
    pub bias: Option<Tensor<T>>,
    /// Added to the variance.
    pub eps: f64,
}

impl<T: Float> LayerNorm<T> {
    /// A layer over `dim` values with weight 1 and (if `bias`) bias 0.
    pub fn new(dim: usize, bias: bool, eps: f64) -> Result<Self> {
        if dim == 0 {
            return Err(Error::arg("LayerNorm", "needs at least one feature"));
        }
        Ok(LayerNorm {
            weight: Tensor::ones(&[dim])?.requires_grad(),
            bias: bias
                .then(|| Tensor::zeros(&[dim]).map(Tensor::requires_grad))
                .transpose()?,
            eps,
        })
    }

    fn dim(&self) -> usize {
        self.weight.shape()[0]
    }
}

impl<T: Float> Module<T> for LayerNorm<T> {
    fn forward(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        x.layer_norm(
            &[self.dim()],
            Some(&self.weight),
            self.bias.as_ref(),
            self.eps,
        )
    }
    fn forward_cached(&self, x: &Tensor<T>, _cache: &mut KvCache<T>) -> Result<Tensor<T>> {
        self.forward(x)
    }
    fn named_parameters(&self) -> Vec<(String, Tensor<T>)> {
        let mut v = vec![("weight".to_string(), self.weight.clone())];
        v.extend(self.bias.iter().map(|b| ("bias".to_string(), b.clone())));
        v
    }
    fn describe(&self) -> String {
        format!("LayerNorm({})", self.dim())
    }
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        if input.last() != Some(&self.dim()) {
            return Err(Error::shape(
                "LayerNorm",
                format!(
                    "{}: input {} must end in {}",
                    self.describe(),
                    fmt_shape(input),
                    self.dim()
                ),
            ));
        }
        Ok(input.to_vec())
    }
}

/// A table of `[vocab, dim]` vectors looked up by id, as `torch.nn.Embedding`: input ids
/// `[.., t]` (integral values, as a data set's rows hold them) give `[.., t, dim]`.
pub struct Embedding<T: Float = f32> {
    /// `[vocab, dim]`.
    pub weight: Tensor<T>,
}

impl<T: Float> Embedding<T> {
    /// A table drawn from `N(0, std²)` (PyTorch's default is `std = 1`).
    pub fn new(vocab: usize, dim: usize, std: f64, rng: &mut Rng) -> Result<Self> {
        if vocab == 0 || dim == 0 {
            return Err(Error::arg(
                "Embedding",
                format!("vocab {vocab} and dim {dim} must both be > 0"),
            ));
        }
        Ok(Embedding {
            weight: Tensor::randn_with(&[vocab, dim], 0.0, std, rng)?.requires_grad(),
        })
    }

    /// Rows of the table.
    pub fn vocab(&self) -> usize {
        self.weight.shape()[0]
    }

    /// The ids held by `x` as indices: each must be a whole number in `0..vocab`.
    pub fn ids(&self, x: &Tensor<T>) -> Result<Vec<usize>> {
        let v = self.vocab();
        x.to_vec()?
            .into_iter()
            .map(|f| {
                let f = f.to_f64();
                if f >= 0.0 && f < v as f64 && f.fract() == 0.0 {
                    Ok(f as usize)
                } else {
                    Err(Error::arg(
                        "Embedding",
                        format!("input {f} is not an id of the {v}-row table"),
                    ))
                }
            })
            .collect()
    }
}

impl<T: Float> Module<T> for Embedding<T> {
    fn forward(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        let mut shape = x.shape().to_vec();
        shape.push(self.weight.shape()[1]);
        self.weight.embedding(&self.ids(x)?)?.reshape(&shape)
    }
    fn forward_cached(&self, x: &Tensor<T>, _cache: &mut KvCache<T>) -> Result<Tensor<T>> {
        self.forward(x)
    }
    fn named_parameters(&self) -> Vec<(String, Tensor<T>)> {
        vec![("weight".to_string(), self.weight.clone())]
    }
    fn describe(&self) -> String {
        let s = self.weight.shape();
        format!("Embedding({} × {})", s[0], s[1])
    }
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        Ok([input, &[self.weight.shape()[1]]].concat())
    }
}

/// The keys and values every attention layer has seen, for generation one position at a time:
/// each layer reads and extends its own entry, in the order the layers run. Start a new
/// sequence with [`KvCache::new`]; [`forward_with_cache`](crate::nn::forward_with_cache) runs
/// a model over the next positions.
#[derive(Default)]
pub struct KvCache<T: Float = f32> {
    entries: Vec<(Tensor<T>, Tensor<T>)>,
    next: usize,
    position: usize,
}

impl<T: Float> KvCache<T> {
    /// An empty cache: the next positions start at 0.
    pub fn new() -> Self {
        KvCache {
            entries: Vec::new(),
            next: 0,
            position: 0,
        }
    }

    /// Positions already cached (the position of the next input).
    pub fn position(&self) -> usize {
        self.position
    }

    /// Bytes of the cached keys and values.
    pub fn bytes(&self) -> usize {
        let n: usize = self
            .entries
            .iter()
            .map(|(k, v)| k.numel() + v.numel())
            .sum();
        n * std::mem::size_of::<T>()
    }

    pub(crate) fn begin(&mut self) {
        self.next = 0;
    }

    pub(crate) fn advance(&mut self, t: usize) {
        self.position += t;
    }

    /// Appends `k`, `v` (`[b, h, t, d]`) to the next layer's entry along the positions and
    /// returns all of that layer's keys and values.
    fn extend(&mut self, k: Tensor<T>, v: Tensor<T>) -> Result<(Tensor<T>, Tensor<T>)> {
        let i = self.next;
        self.next += 1;
        let both = match self.entries.get(i) {
            Some((pk, pv)) => (Tensor::concat(&[pk, &k], 2)?, Tensor::concat(&[pv, &v], 2)?),
            None => (k, v),
        };
        if i < self.entries.len() {
            self.entries[i] = both.clone();
        } else {
            self.entries.push(both.clone());
        }
        Ok(both)
    }
}

/// Multi-head self-attention over `[b, t, dim]`: one `qkv` projection to `3·dim`, `heads`
/// heads of `dim / heads`, [`scaled_dot_product_attention`], and an output projection `proj`.
/// With dropout ([`MultiHeadAttention::with_dropout`]), training mode drops attention
/// probabilities and the projection's output, as nanoGPT's `attn_dropout` and
/// `resid_dropout`; evaluation mode and the key/value-cached path drop nothing.
pub struct MultiHeadAttention<T: Float = f32> {
    /// `[dim, 3·dim]`: queries, keys and values.
    pub qkv: Linear<T>,
    /// `[dim, dim]`.
    pub proj: Linear<T>,
    /// Heads.
    pub heads: usize,
    /// Each position attends to itself and earlier positions only.
    pub causal: bool,
    drops: Drops,
}

impl<T: Float> MultiHeadAttention<T> {
    /// Weights drawn from `N(0, std²)` (`proj_std` for the output projection), biases 0.
    pub fn new(
        dim: usize,
        heads: usize,
        causal: bool,
        bias: bool,
        std: (f64, f64),
        rng: &mut Rng,
    ) -> Result<Self> {
        if heads == 0 || !dim.is_multiple_of(heads) {
            return Err(Error::arg(
                "MultiHeadAttention",
                format!("width {dim} must be a multiple of the {heads} heads"),
            ));
        }
        Ok(MultiHeadAttention {
            qkv: normal_linear(dim, 3 * dim, bias, std.0, rng)?,
            proj: normal_linear(dim, dim, bias, std.1, rng)?,
            heads,
            causal,
            drops: Drops::none(),
        })
    }

    /// The layer with dropout of probability `p` in `[0, 1)` (its masks seeded `seed`) on
    /// the attention probabilities and on the output, in training mode.
    ///
    /// ```
    /// use nabla::{nn::{Module, MultiHeadAttention}, rng::Rng, Tensor};
    /// let mut attn = MultiHeadAttention::<f32>::new(8, 2, true, true, (0.02, 0.02), &mut Rng::new(0))
    ///     .unwrap()
    ///     .with_dropout(0.1, 7)
    ///     .unwrap();
    /// let x = Tensor::randn(&[1, 3, 8], 0.0, 1.0, 1).unwrap();
    /// assert_ne!(attn.forward(&x).unwrap().to_vec(), attn.forward(&x).unwrap().to_vec());
    /// attn.set_training(false); // evaluation: no dropout
    /// assert_eq!(attn.forward(&x).unwrap().to_vec(), attn.forward(&x).unwrap().to_vec());
    /// ```
    pub fn with_dropout(mut self, p: f64, seed: u64) -> Result<Self> {
        self.drops = Drops::new("MultiHeadAttention", p, seed)?;
        Ok(self)
    }

    /// The drop probability (0 without dropout).
    pub fn dropout(&self) -> f64 {
        self.drops.p()
    }

    fn dim(&self) -> usize {
        self.proj.out_features()
    }

    fn run(&self, x: &Tensor<T>, cache: Option<&mut KvCache<T>>) -> Result<Tensor<T>> {
        let s = self.output_shape(x.shape())?;
        let (b, t, c, h) = (s[0], s[1], s[2], self.heads);
        let rows = x.reshape(&[b * t, c])?;
        let Some(cache) = cache else {
            // One product for queries, keys and values, and attention reading its heads where
            // they lie in it (its gradient written into their columns), dropping probabilities
            // inside the kernel in training mode.
            let qkv = self.qkv.forward(&rows)?.reshape(&[b, t, 3 * c])?;
            let y = packed_attention_dropped(&qkv, h, self.causal, self.drops.keep()?)?;
            let y = self.proj.forward(&y.reshape(&[b * t, c])?)?;
            return self.drops.apply(&y)?.reshape(&[b, t, c]);
        };
        // With a cache: queries, keys and values each through their columns of the `qkv`
        // weight (strided views), the keys and values appended to the cache.
        let part = |i: usize| -> Result<Tensor<T>> {
            let w = self.qkv.weight.narrow(1, i * c, c)?;
            let y = match &self.qkv.bias {
                Some(bias) => rows.linear(&w, &bias.narrow(0, i * c, c)?)?,
                None => rows.matmul(&w)?,
            };
            y.reshape(&[b, t, h, c / h])?.permute(&[0, 2, 1, 3])
        };
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let (k, v) = cache.extend(k.contiguous()?, v.contiguous()?)?;
        let y = scaled_dot_product_attention(&q, &k, &v, None, self.causal)?
            .permute(&[0, 2, 1, 3])?
            .reshape(&[b * t, c])?;
        self.proj.forward(&y)?.reshape(&[b, t, c])
    }
}

/// A `[in, out]` linear layer with weights from `N(0, std²)` and a zero bias.
pub(crate) fn normal_linear<T: Float>(
    i: usize,
    o: usize,
    bias: bool,
    std: f64,
    rng: &mut Rng,
) -> Result<Linear<T>> {
    let w = Tensor::randn_with(&[i, o], 0.0, std, rng)?;
    let b = bias.then(|| Tensor::zeros(&[o])).transpose()?;
    Linear::from_tensors(w, b)
}

impl<T: Float> Module<T> for MultiHeadAttention<T> {
    fn forward(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        self.run(x, None)
    }
    fn forward_cached(&self, x: &Tensor<T>, cache: &mut KvCache<T>) -> Result<Tensor<T>> {
        self.run(x, Some(cache))
    }
    fn named_parameters(&self) -> Vec<(String, Tensor<T>)> {
        let mut v: Vec<_> = prefixed("qkv.", self.qkv.named_parameters());
        v.extend(prefixed::<_, Vec<_>>("proj.", self.proj.named_parameters()));
        v
    }
    fn set_training(&mut self, training: bool) {
        self.drops.set_training(training);
    }
    fn extra_state(&self) -> BTreeMap<String, String> {
        self.drops.extra_state()
    }
    fn load_extra_state(&mut self, state: &BTreeMap<String, String>) -> Result<()> {
        self.drops.load_extra_state(state)
    }
    fn describe(&self) -> String {
        format!(
            "MultiHeadAttention({}, {} heads{}{})",
            self.dim(),
            self.heads,
            if self.causal { ", causal" } else { "" },
            dropout_text(self.drops.p())
        )
    }
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match input {
            [_, _, c] if *c == self.dim() => Ok(input.to_vec()),
            _ => Err(Error::shape(
                "MultiHeadAttention",
                format!(
                    "{}: input {} must be [b, t, {}]",
                    self.describe(),
                    fmt_shape(input),
                    self.dim()
                ),
            )),
        }
    }
}

/// `", dropout p"` for a description, or nothing for `p = 0`.
pub(crate) fn dropout_text(p: f64) -> String {
    if p > 0.0 {
        format!(", dropout {p}")
    } else {
        String::new()
    }
}

/// A pre-LN transformer block: `x + attn(ln1(x))`, then `x + mlp(ln2(x))` with
/// `mlp = proj(gelu(fc(·)))` of hidden width `4·dim`. With dropout
/// ([`TransformerBlock::with_dropout`]) training mode drops inside the attention (see
/// [`MultiHeadAttention`]) and the MLP's output, as nanoGPT's block.
pub struct TransformerBlock<T: Float = f32> {
    /// Before attention.
    pub ln1: LayerNorm<T>,
    /// Self-attention.
    pub attn: MultiHeadAttention<T>,
    /// Before the MLP.
    pub ln2: LayerNorm<T>,
    /// `[dim, 4·dim]`.
    pub fc: Linear<T>,
    /// `[4·dim, dim]`.
    pub proj: Linear<T>,
    drops: Drops,
}

impl<T: Float> TransformerBlock<T> {
    /// A block of width `dim`: weights from `N(0, std²)`, the two projections that add into
    /// the residual stream from `N(0, proj_std²)` (GPT-2's scheme), biases 0, norms 1.
    pub fn new(
        dim: usize,
        heads: usize,
        causal: bool,
        bias: bool,
        std: (f64, f64),
        rng: &mut Rng,
    ) -> Result<Self> {
        Ok(TransformerBlock {
            ln1: LayerNorm::new(dim, bias, 1e-5)?,
            attn: MultiHeadAttention::new(dim, heads, causal, bias, std, rng)?,
            ln2: LayerNorm::new(dim, bias, 1e-5)?,
            fc: normal_linear(dim, 4 * dim, bias, std.0, rng)?,
            proj: normal_linear(4 * dim, dim, bias, std.1, rng)?,
            drops: Drops::none(),
        })
    }

    /// The block with dropout of probability `p` in `[0, 1)` (masks seeded `seed`) on the
    /// attention probabilities, the attention's output and the MLP's output, in training mode.
    pub fn with_dropout(self, p: f64, seed: u64) -> Result<Self> {
        Ok(self.sharing(Drops::new("TransformerBlock", p, seed)?))
    }

    /// The block drawing its masks from `drops` (a GPT's blocks share one generator).
    pub(crate) fn sharing(mut self, drops: Drops) -> Self {
        self.attn.drops = drops.clone();
        self.drops = drops;
        self
    }

    /// The drop probability (0 without dropout).
    pub fn dropout(&self) -> f64 {
        self.drops.p()
    }

    fn run(&self, x: &Tensor<T>, cache: Option<&mut KvCache<T>>) -> Result<Tensor<T>> {
        let s = self.attn.output_shape(x.shape())?;
        let cached = cache.is_some();
        let h = self.ln1.forward(x)?;
        let a = match cache {
            Some(c) => self.attn.forward_cached(&h, c)?,
            None => self.attn.forward(&h)?,
        };
        let x = x.add(&a)?;
        let rows = x.reshape(&[s[0] * s[1], s[2]])?;
        let m = self.fc.forward(&self.ln2.forward(&rows)?)?.gelu()?;
        let m = self.proj.forward(&m)?;
        // The cached path is generation: nothing is dropped there.
        let m = if cached { m } else { self.drops.apply(&m)? };
        x.add(&m.reshape(&s)?)
    }
}

impl<T: Float> Module<T> for TransformerBlock<T> {
    fn forward(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        self.run(x, None)
    }
    fn forward_cached(&self, x: &Tensor<T>, cache: &mut KvCache<T>) -> Result<Tensor<T>> {
        self.run(x, Some(cache))
    }
    fn named_parameters(&self) -> Vec<(String, Tensor<T>)> {
        let mut v: Vec<(String, Tensor<T>)> = prefixed("ln1.", self.ln1.named_parameters());
        v.extend(prefixed::<_, Vec<_>>("attn.", self.attn.named_parameters()));
        v.extend(prefixed::<_, Vec<_>>("ln2.", self.ln2.named_parameters()));
        v.extend(prefixed::<_, Vec<_>>("mlp.fc.", self.fc.named_parameters()));
        v.extend(prefixed::<_, Vec<_>>(
            "mlp.proj.",
            self.proj.named_parameters(),
        ));
        v
    }
    fn set_training(&mut self, training: bool) {
        self.drops.set_training(training);
        self.attn.drops.set_training(training);
    }
    fn extra_state(&self) -> BTreeMap<String, String> {
        self.drops.extra_state()
    }
    fn load_extra_state(&mut self, state: &BTreeMap<String, String>) -> Result<()> {
        self.drops.load_extra_state(state)
    }
    fn describe(&self) -> String {
        format!(
            "TransformerBlock({}, {} heads{})",
            self.attn.dim(),
            self.attn.heads,
            dropout_text(self.drops.p())
        )
    }
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        self.attn.output_shape(input)
    }
}

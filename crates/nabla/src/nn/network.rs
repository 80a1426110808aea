//! [`Network`]: the module a [`ModelSpec`] builds.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::nn::shape::{fmt_batch, infer};
use crate::nn::{
    prefixed, under, BatchNorm1d, BatchNorm2d, Conv1d, Conv2d, Dropout, Init, LayerSpec, Linear,
    MaxPool2d, ModelSpec, ModelSummary, Module, Residual, Sequential, SharedForward, SummaryRow,
};
use crate::nn::{
    AvgPool2d, Embedding, Flatten, Gpt, GptConfig, LayerNorm, MultiHeadAttention, TransformerBlock,
};
use crate::ops::{Conv1dOptions, Conv2dOptions};
use crate::rng::Rng;
use crate::tensor::{Float, Tensor};

/// A model built from a [`ModelSpec`]: its layers in a [`Sequential`] whose parameters are
/// named `layers.{i}.…` (as a PyTorch module whose `self.layers` is an `nn.Sequential`), and
/// the spec it came from. It takes `[N, …input]` samples, or rows of the same values
/// flattened (`[N, 784]` for an input of `[1, 28, 28]`), which it reshapes: a data set's rows
/// reach a convolution as images.
pub struct Network<T: Float = f32> {
    spec: ModelSpec,
    layers: Sequential<T>,
}

/// What building needs besides the layer: the weights' generator and scheme, the dropout seed
/// base, and how many weighted layers were built (the dropout seeds follow the MLP's rule).
struct Ctx {
    rng: Rng,
    init: Init,
    seed: u64,
    weighted: u64,
}

impl ModelSpec {
    /// Checks every shape ([`ModelSpec::summary`]), then builds the network with weights drawn
    /// from [`ModelSpec::seed`].
    pub fn build<T: Float>(&self) -> Result<Network<T>> {
        Network::new(self)
    }
}

impl<T: Float> Network<T> {
    /// See [`ModelSpec::build`].
    pub fn new(spec: &ModelSpec) -> Result<Self> {
        let rows = spec.summary(1)?;
        let mut ctx = Ctx {
            rng: Rng::new(spec.seed),
            init: spec.init,
            seed: spec.seed,
            weighted: 0,
        };
        let mut layers = Sequential::new();
        for (l, r) in spec.layers.iter().zip(&rows) {
            layers.push(build_layer(l, &r.input, &r.name, &mut ctx)?);
        }
        Ok(Network {
            spec: spec.clone(),
            layers,
        })
    }

    /// The spec it was built from.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The layers.
    pub fn layers(&self) -> &Sequential<T> {
        &self.layers
    }

    /// Layers, output shapes for a batch of `batch` inputs, parameter counts and bytes.
    pub fn summary(&self, batch: usize) -> Result<ModelSummary> {
        let rows: Vec<SummaryRow> = self
            .spec
            .summary(batch)?
            .into_iter()
            .map(|r| SummaryRow {
                name: r.name,
                layer: r.layer,
                output_shape: r.output,
                params: r.params,
                bytes: r.params * std::mem::size_of::<T>(),
            })
            .collect();
        let mut input_shape = vec![batch];
        input_shape.extend(&self.spec.input);
        Ok(ModelSummary {
            total_params: rows.iter().map(|r| r.params).sum(),
            total_bytes: rows.iter().map(|r| r.bytes).sum(),
            input_shape,
            rows,
        })
    }

    /// Gradient checkpointing by segments of `k` blocks ([`ModelSpec::blocks`]: each linear
    /// or convolution layer starts one): only each segment's input is kept for backward, which
    /// recomputes the segment. `None` turns it off. An error when `k` is 0 or a layer cannot be
    /// recomputed.
    pub fn set_checkpoint_blocks(&mut self, k: Option<usize>) -> Result<()> {
        match k {
            None => self.layers.set_checkpoint_segments(None),
            Some(0) => Err(Error::arg(
                "checkpoint_activations",
                "a segment needs at least one block (0 given)",
            )),
            Some(k) => {
                let starts: Vec<usize> = self.spec.blocks().into_iter().step_by(k).collect();
                self.layers.set_checkpoint_segments(Some(starts))
            }
        }
    }

    /// `x` as `[N, …input]`: unchanged when it has that shape (or, for a model of token ids
    /// `[T]`, is `[N, t]` with `t ≤ T`), reshaped when it is `[N, F]` rows of the same number
    /// of values, otherwise an error naming both shapes.
    fn shaped(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        let s = x.shape();
        if s.len() >= 2 && s[1..] == self.spec.input[..] {
            return Ok(x.clone());
        }
        // Token ids: any number of positions up to the context.
        let tokens = matches!(
            self.spec.layers.first(),
            Some(LayerSpec::Gpt { .. } | LayerSpec::Embedding { .. })
        );
        if tokens && matches!((s, &self.spec.input[..]), ([_, t], [n]) if t <= n) {
            return Ok(x.clone());
        }
        if s.len() == 2 && s[1] == self.spec.input_features() {
            let mut to = vec![s[0]];
            to.extend(&self.spec.input);
            return x.reshape(&to);
        }
        let mut want = vec![0];
        want.extend(&self.spec.input);
        Err(Error::shape(
            "model input",
            format!(
                "the model takes {} (or rows of {} values), got {}",
                fmt_batch(&want),
                self.spec.input_features(),
                crate::tensor::shape::fmt_shape(s)
            ),
        ))
    }
}

/// The dropout seed of the sequence layer at `at` in a model seeded `seed` (FNV-1a over the
/// layer's place).
fn layer_seed(seed: u64, at: &str) -> u64 {
    at.bytes().fold(seed ^ 0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn build_layer<T: Float>(
    l: &LayerSpec,
    input: &[usize],
    at: &str,
    ctx: &mut Ctx,
) -> Result<Box<dyn Module<T>>> {
    let last = input[input.len() - 1];
    Ok(match l {
        LayerSpec::Linear { out_features, bias } => {
            ctx.weighted += 1;
            Box::new(Linear::<T>::new(
                last,
                *out_features,
                *bias,
                ctx.init,
                &mut ctx.rng,
            )?)
        }
        LayerSpec::Conv2d {
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
        } => {
            ctx.weighted += 1;
            let opts = Conv2dOptions {
                stride: *stride,
                padding: *padding,
                dilation: *dilation,
                groups: *groups,
            };
            Box::new(Conv2d::<T>::new(
                input[1],
                *out_channels,
                *kernel_size,
                opts,
                *bias,
                ctx.init,
                &mut ctx.rng,
            )?)
        }
        LayerSpec::Conv1d {
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
        } => {
            ctx.weighted += 1;
            let opts = Conv1dOptions {
                stride: *stride,
                padding: *padding,
                dilation: *dilation,
                groups: *groups,
            };
            Box::new(Conv1d::<T>::new(
                input[1],
                *out_channels,
                *kernel_size,
                opts,
                *bias,
                ctx.init,
                &mut ctx.rng,
            )?)
        }
        LayerSpec::MaxPool2d {
            kernel_size,
            stride,
            padding,
        } => Box::new(MaxPool2d::with(
            *kernel_size,
            stride.unwrap_or(*kernel_size),
            *padding,
        )),
        LayerSpec::AvgPool2d {
            kernel_size,
            stride,
            padding,
        } => Box::new(AvgPool2d::with(
            *kernel_size,
            stride.unwrap_or(*kernel_size),
            *padding,
        )),
        LayerSpec::BatchNorm1d { momentum, eps } => {
            Box::new(BatchNorm1d::<T>::new(input[1])?.with_momentum_eps(*momentum, *eps)?)
        }
        LayerSpec::BatchNorm2d { momentum, eps } => {
            Box::new(BatchNorm2d::<T>::new(input[1])?.with_momentum_eps(*momentum, *eps)?)
        }
        LayerSpec::Flatten => Box::new(Flatten::new()),
        LayerSpec::Dropout { p } => {
            // Mlp's rule: the dropout after hidden block i is seeded seed ^ (0x9E3779B9 + i).
            let i = ctx.weighted.saturating_sub(1);
            Box::new(Dropout::new(*p, ctx.seed ^ (0x9E37_79B9 + i))?)
        }
        LayerSpec::Embedding {
            num_embeddings,
            embedding_dim,
        } => Box::new(Embedding::<T>::new(
            *num_embeddings,
            *embedding_dim,
            1.0,
            &mut ctx.rng,
        )?),
        LayerSpec::LayerNorm { eps, bias } => Box::new(LayerNorm::<T>::new(last, *bias, *eps)?),
        // A sequence layer's masks are seeded from the model's seed and the layer's place (not
        // drawn from the weights' generator: with dropout, the later layers' weights stay
        // those of the same model without it); p = 0 drops nothing and keeps no state.
        LayerSpec::MultiHeadAttention {
            heads,
            causal,
            bias,
            dropout,
        } => {
            let a = MultiHeadAttention::<T>::new(
                last,
                *heads,
                *causal,
                *bias,
                (0.02, 0.02),
                &mut ctx.rng,
            )?;
            Box::new(a.with_dropout(*dropout, layer_seed(ctx.seed, at))?)
        }
        LayerSpec::TransformerBlock {
            heads,
            causal,
            bias,
            dropout,
        } => {
            let b = TransformerBlock::<T>::new(
                last,
                *heads,
                *causal,
                *bias,
                (0.02, 0.02),
                &mut ctx.rng,
            )?;
            Box::new(b.with_dropout(*dropout, layer_seed(ctx.seed, at))?)
        }
        LayerSpec::Gpt { .. } => {
            let g = l.gpt_config().expect("internal: a Gpt layer");
            let gpt = Gpt::<T>::new(GptConfig { dropout: 0.0, ..g }, &mut ctx.rng)?;
            Box::new(gpt.with_dropout(g.dropout, layer_seed(ctx.seed, at))?)
        }
        LayerSpec::Residual { layers } => {
            Box::new(Residual::new(build_seq::<T>(layers, input, at, ctx)?))
        }
        LayerSpec::Sequential { layers } => Box::new(build_seq::<T>(layers, input, at, ctx)?),
        other => Box::new(other.as_activation()?),
    })
}

fn build_seq<T: Float>(
    layers: &[LayerSpec],
    input: &[usize],
    at: &str,
    ctx: &mut Ctx,
) -> Result<Sequential<T>> {
    let mut seq = Sequential::new();
    let mut shape = input.to_vec();
    for (i, l) in layers.iter().enumerate() {
        let name = format!("{at}.{i}");
        seq.push(build_layer(l, &shape, &name, ctx)?);
        shape = infer(l, &shape, &name)?.0;
    }
    Ok(seq)
}

impl<T: Float> AsRef<Network<T>> for Network<T> {
    fn as_ref(&self) -> &Network<T> {
        self
    }
}

impl<T: Float> Module<T> for Network<T> {
    fn forward(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        let x = self.shaped(x)?;
        if !crate::autograd::is_grad_enabled() {
            return self.layers.forward(&x);
        }
        // Recorded ops are labelled like the parameters: `layers.0`, `layers.1`, …
        static LAYERS: std::sync::LazyLock<std::sync::Arc<str>> =
            std::sync::LazyLock::new(|| std::sync::Arc::from("layers"));
        crate::autograd::scope_arc(LAYERS.clone(), || self.layers.forward(&x))
    }
    fn named_parameters(&self) -> Vec<(String, Tensor<T>)> {
        prefixed("layers.", self.layers.named_parameters())
    }
    fn named_buffers(&self) -> Vec<(String, Tensor<T>)> {
        prefixed("layers.", self.layers.named_buffers())
    }
    fn set_training(&mut self, training: bool) {
        self.layers.set_training(training);
    }
    fn describe(&self) -> String {
        let kinds: Vec<String> = self
            .spec
            .summary(1)
            .map(|rows| rows.into_iter().map(|r| r.layer).collect())
            .unwrap_or_default();
        format!("Network({})", kinds.join(" → "))
    }
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        self.layers.output_shape(input)
    }
    fn shared_forward(&self) -> Option<SharedForward<T>> {
        self.layers.shared_forward()
    }
    fn extra_state(&self) -> BTreeMap<String, String> {
        prefixed("layers.", self.layers.extra_state())
    }
    fn load_extra_state(&mut self, state: &BTreeMap<String, String>) -> Result<()> {
        self.layers.load_extra_state(&under("layers.", state))
    }
    fn set_checkpoint_blocks(&mut self, k: Option<usize>) -> Result<()> {
        Network::set_checkpoint_blocks(self, k)
    }
    fn forward_cached(
        &self,
        x: &Tensor<T>,
        cache: &mut crate::nn::KvCache<T>,
    ) -> Result<Tensor<T>> {
        self.layers.forward_cached(x, cache)
    }
}

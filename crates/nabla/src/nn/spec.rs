//! [`ModelSpec`]: a model as data — a tree of layer descriptions with the shapes inferred
//! from the input shape and checked before any weight is allocated. What the trainer, the
//! model files, the CLI and the exporters share.

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};
use crate::nn::shape::infer;
use crate::nn::{Activation, Init, MlpConfig};
use crate::tensor::shape::fmt_shape;

/// One layer of a [`ModelSpec`]. Input sizes (`in_features`, `in_channels`, batch-norm
/// features) are not written: they follow from the previous layer's output shape. Names and
/// defaults follow `torch.nn`; a kernel size, stride, padding or dilation is one number or a
/// `[height, width]` pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    /// `x·W + b` over the last axis (`W` is `[in, out]`).
    Linear {
        /// Output width.
        out_features: usize,
        /// With a bias (default true).
        #[serde(default = "yes")]
        bias: bool,
    },
    /// 2-D convolution of `[N, C, H, W]`.
    Conv2d {
        /// Output channels.
        out_channels: usize,
        /// Kernel height and width.
        #[serde(deserialize_with = "pair")]
        kernel_size: (usize, usize),
        /// Stride (default 1).
        #[serde(default = "one_pair", deserialize_with = "pair")]
        stride: (usize, usize),
        /// Zero padding on each side (default 0).
        #[serde(default, deserialize_with = "pair")]
        padding: (usize, usize),
        /// Dilation (default 1).
        #[serde(default = "one_pair", deserialize_with = "pair")]
        dilation: (usize, usize),
        /// Groups (default 1).
        #[serde(default = "one")]
        groups: usize,
        /// With a bias (default true).
        #[serde(default = "yes")]
        bias: bool,
    },
    /// 1-D convolution of `[N, C, L]`.
    Conv1d {
        /// Output channels.
        out_channels: usize,
        /// Kernel length.
        kernel_size: usize,
        /// Stride (default 1).
        #[serde(default = "one")]
        stride: usize,
        /// Zero padding on each side (default 0).
        #[serde(default)]
        padding: usize,
        /// Dilation (default 1).
        #[serde(default = "one")]
        dilation: usize,
        /// Groups (default 1).
        #[serde(default = "one")]
        groups: usize,
        /// With a bias (default true).
        #[serde(default = "yes")]
        bias: bool,
    },
    /// Max pooling of `[N, C, H, W]`.
    MaxPool2d {
        /// Window.
        #[serde(deserialize_with = "pair")]
        kernel_size: (usize, usize),
        /// Stride (default: the window).
        #[serde(default, deserialize_with = "opt_pair")]
        stride: Option<(usize, usize)>,
        /// Padding (default 0).
        #[serde(default, deserialize_with = "pair")]
        padding: (usize, usize),
    },
    /// Average pooling of `[N, C, H, W]` (padding counted as zeros).
    AvgPool2d {
        /// Window.
        #[serde(deserialize_with = "pair")]
        kernel_size: (usize, usize),
        /// Stride (default: the window).
        #[serde(default, deserialize_with = "opt_pair")]
        stride: Option<(usize, usize)>,
        /// Padding (default 0).
        #[serde(default, deserialize_with = "pair")]
        padding: (usize, usize),
    },
    /// Batch normalisation of `[N, C]` or `[N, C, L]`.
    BatchNorm1d {
        /// Running-statistics momentum (default 0.1).
        #[serde(default = "momentum")]
        momentum: f64,
        /// Added to the variance (default 1e-5).
        #[serde(default = "eps")]
        eps: f64,
    },
    /// Batch normalisation of `[N, C, H, W]`.
    BatchNorm2d {
        /// Running-statistics momentum (default 0.1).
        #[serde(default = "momentum")]
        momentum: f64,
        /// Added to the variance (default 1e-5).
        #[serde(default = "eps")]
        eps: f64,
    },
    /// `[N, …]` → `[N, product]`.
    Flatten,
    /// Zeroes each value with probability `p` in training (scaling the rest by `1/(1−p)`).
    Dropout {
        /// Drop probability in `[0, 1)`.
        p: f64,
    },
    /// `max(x, 0)`.
    Relu,
    /// `x` for x > 0, `negative_slope·x` otherwise.
    LeakyRelu {
        /// Slope for negative inputs (default 0.01).
        #[serde(default = "slope")]
        negative_slope: f64,
    },
    /// Logistic sigmoid.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// GELU (tanh approximation).
    Gelu,
    /// `ln(1 + eˣ)`.
    Softplus,
    /// `x` (a placeholder that keeps later layers' names).
    Identity,
    /// Vectors looked up by token id, as `torch.nn.Embedding`: ids `[N, …]` give
    /// `[N, …, embedding_dim]` (drawn from `N(0, 1)`, PyTorch's default).
    Embedding {
        /// Rows of the table (the vocabulary).
        num_embeddings: usize,
        /// Width of each vector.
        embedding_dim: usize,
    },
    /// Layer normalisation over the last axis.
    LayerNorm {
        /// Added to the variance (default 1e-5).
        #[serde(default = "eps")]
        eps: f64,
        /// With a bias (default true).
        #[serde(default = "yes")]
        bias: bool,
    },
    /// Multi-head self-attention of `[N, T, C]`.
    MultiHeadAttention {
        /// Heads (dividing C).
        heads: usize,
        /// Each position attends to itself and earlier ones only (default true).
        #[serde(default = "yes")]
        causal: bool,
        /// Biases in the projections (default true).
        #[serde(default = "yes")]
        bias: bool,
        /// Drop probability in training for the attention probabilities and the output
        /// (default 0).
        #[serde(default, skip_serializing_if = "is_zero")]
        dropout: f64,
    },
    /// A pre-LN transformer block of `[N, T, C]`: `x + attn(ln(x))`, `x + mlp(ln(x))`.
    TransformerBlock {
        /// Heads (dividing C).
        heads: usize,
        /// Causal attention (default true).
        #[serde(default = "yes")]
        causal: bool,
        /// Biases in the linear layers and norms (default true).
        #[serde(default = "yes")]
        bias: bool,
        /// Drop probability in training, inside the attention and on the MLP's output
        /// (default 0).
        #[serde(default, skip_serializing_if = "is_zero")]
        dropout: f64,
    },
    /// A GPT language model: token ids `[N, T]` (`T ≤ context`) to logits `[N, T, vocab]`.
    Gpt {
        /// Tokens in the vocabulary.
        vocab: usize,
        /// The longest context.
        context: usize,
        /// Width of the residual stream.
        width: usize,
        /// Transformer blocks.
        depth: usize,
        /// Attention heads per block.
        heads: usize,
        /// Biases in the linear layers and norms (default true).
        #[serde(default = "yes")]
        bias: bool,
        /// The head is the token embedding's transpose (default false).
        #[serde(default)]
        tied: bool,
        /// Drop probability in training, where nanoGPT drops (default 0).
        #[serde(default, skip_serializing_if = "is_zero")]
        dropout: f64,
    },
    /// `x + body(x)`; the body must keep the shape.
    Residual {
        /// The body.
        layers: Vec<LayerSpec>,
    },
    /// Layers applied in order.
    Sequential {
        /// The layers.
        layers: Vec<LayerSpec>,
    },
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn one_pair() -> (usize, usize) {
    (1, 1)
}
fn momentum() -> f64 {
    0.1
}
fn eps() -> f64 {
    1e-5
}
fn slope() -> f64 {
    0.01
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PairIn {
    One(usize),
    Two((usize, usize)),
}

impl From<PairIn> for (usize, usize) {
    fn from(p: PairIn) -> Self {
        match p {
            PairIn::One(a) => (a, a),
            PairIn::Two(p) => p,
        }
    }
}

fn pair<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<(usize, usize), D::Error> {
    PairIn::deserialize(d).map(Into::into)
}

fn opt_pair<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<(usize, usize)>, D::Error> {
    Option::<PairIn>::deserialize(d).map(|p| p.map(Into::into))
}

impl LayerSpec {
    /// The activation this layer is, if it is one.
    pub fn activation(&self) -> Option<Activation> {
        Some(match self {
            LayerSpec::Relu => Activation::Relu,
            LayerSpec::LeakyRelu { negative_slope } => Activation::LeakyRelu(*negative_slope),
            LayerSpec::Sigmoid => Activation::Sigmoid,
            LayerSpec::Tanh => Activation::Tanh,
            LayerSpec::Gelu => Activation::Gelu,
            LayerSpec::Softplus => Activation::Softplus,
            LayerSpec::Identity => Activation::Identity,
            _ => return None,
        })
    }

    /// The configuration of a [`LayerSpec::Gpt`] layer.
    pub fn gpt_config(&self) -> Option<crate::nn::GptConfig> {
        match *self {
            LayerSpec::Gpt {
                vocab,
                context,
                width,
                depth,
                heads,
                bias,
                tied,
                dropout,
            } => Some(crate::nn::GptConfig {
                vocab,
                context,
                width,
                depth,
                heads,
                bias,
                tied,
                dropout,
            }),
            _ => None,
        }
    }

    /// True for the layers of sequence models (embedding, layer norm, attention, transformer
    /// block, GPT), which the exporters write in their own modules (`io/onnx_seq.rs`,
    /// `io/torch_seq.rs`).
    pub fn is_sequence_layer(&self) -> bool {
        matches!(
            self,
            LayerSpec::Embedding { .. }
                | LayerSpec::LayerNorm { .. }
                | LayerSpec::MultiHeadAttention { .. }
                | LayerSpec::TransformerBlock { .. }
                | LayerSpec::Gpt { .. }
        )
    }

    /// [`LayerSpec::activation`], or an error for a layer that is not one: what the walks over
    /// a spec (shapes, building, exports) use for the kinds they do not handle themselves.
    pub(crate) fn as_activation(&self) -> Result<Activation> {
        crate::nn::shape::activation_of(self)
    }

    /// The layer for an activation.
    pub fn from_activation(a: Activation) -> LayerSpec {
        match a {
            Activation::Relu => LayerSpec::Relu,
            Activation::LeakyRelu(s) => LayerSpec::LeakyRelu { negative_slope: s },
            Activation::Sigmoid => LayerSpec::Sigmoid,
            Activation::Tanh => LayerSpec::Tanh,
            Activation::Gelu => LayerSpec::Gelu,
            Activation::Softplus => LayerSpec::Softplus,
            Activation::Identity => LayerSpec::Identity,
        }
    }

    /// Whether it holds weights drawn at initialisation (linear and convolution layers): where
    /// a block of [`ModelSpec::blocks`] starts.
    pub fn is_weighted(&self) -> bool {
        matches!(
            self,
            LayerSpec::Linear { .. } | LayerSpec::Conv2d { .. } | LayerSpec::Conv1d { .. }
        )
    }
}

/// A model as data: the shape of one input sample (without the batch axis) and the layers.
/// [`ModelSpec::build`] makes the [`Network`](crate::nn::Network); [`ModelSpec::summary`]
/// infers and checks every shape without allocating a weight. Serialised as JSON in model
/// files, checkpoints and `nabla train --model FILE.json`.
///
/// ```
/// use nabla::nn::{LayerSpec, ModelSpec, Module};
/// use nabla::Tensor;
/// let spec = ModelSpec::from_json(r#"{
///     "input": [1, 28, 28],
///     "layers": [
///         {"type": "conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1},
///         {"type": "batch_norm2d"}, {"type": "relu"},
///         {"type": "max_pool2d", "kernel_size": 2},
///         {"type": "flatten"},
///         {"type": "linear", "out_features": 10}
///     ]
/// }"#)?;
/// assert_eq!(spec.output_shape(32)?, vec![32, 10]);
/// let net = spec.build::<f32>()?;
/// // Rows of 784 pixels or [N, 1, 28, 28] images: both are accepted.
/// let y = net.forward(&Tensor::zeros(&[4, 784])?)?;
/// assert_eq!(y.shape(), &[4, 10]);
///
/// // Shapes are checked before anything is allocated, naming the layer.
/// let mut bad = spec.clone();
/// bad.layers.remove(4); // no flatten before the linear layer
/// let e = bad.build::<f32>().err().unwrap().to_string();
/// assert!(e.contains("layers.4") && e.contains("[N, 8, 14, 14]"), "{e}");
/// # Ok::<(), nabla::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The shape of one sample, e.g. `[784]` or `[1, 28, 28]`.
    pub input: Vec<usize>,
    /// The layers, applied in order.
    pub layers: Vec<LayerSpec>,
    /// Weight initialisation of linear and convolution layers (default Kaiming uniform).
    #[serde(default = "kaiming")]
    pub init: Init,
    /// Seed of the initial weights and of the dropout masks (default 0).
    #[serde(default)]
    pub seed: u64,
}

fn kaiming() -> Init {
    Init::KaimingUniform
}

impl From<MlpConfig> for ModelSpec {
    fn from(c: MlpConfig) -> Self {
        ModelSpec::mlp(&c)
    }
}

impl From<&MlpConfig> for ModelSpec {
    fn from(c: &MlpConfig) -> Self {
        ModelSpec::mlp(c)
    }
}

/// A model spec as JSON, or — what configurations and model files before model specs held —
/// an [`MlpConfig`]: the spec either way.
pub(crate) fn spec_or_mlp(v: serde_json::Value) -> std::result::Result<ModelSpec, String> {
    if v.get("sizes").is_some() {
        serde_json::from_value::<MlpConfig>(v)
            .map(|c| ModelSpec::mlp(&c))
            .map_err(|e| e.to_string())
    } else {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }
}

/// One layer of a [`ModelSpec::summary`]: its name, what it is, its output shape and its
/// parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerShape {
    /// The name its parameters carry, e.g. `layers.0`.
    pub name: String,
    /// What it is, e.g. `Conv2d(1 → 32, 3×3, padding 1)`.
    pub layer: String,
    /// Its input shape.
    pub input: Vec<usize>,
    /// Its output shape.
    pub output: Vec<usize>,
    /// Trainable parameter values.
    pub params: usize,
}

impl ModelSpec {
    /// The spec of an MLP: the same layers, parameter names and initial weights as
    /// [`Mlp::new`](crate::nn::Mlp::new) gives.
    pub fn mlp(config: &MlpConfig) -> ModelSpec {
        let mut layers = Vec::new();
        let n = config.sizes.len().saturating_sub(1);
        for (i, &w) in config.sizes.iter().skip(1).enumerate() {
            layers.push(LayerSpec::Linear {
                out_features: w,
                bias: true,
            });
            if i + 1 < n {
                layers.push(LayerSpec::from_activation(config.activation));
                if config.dropout > 0.0 {
                    layers.push(LayerSpec::Dropout { p: config.dropout });
                }
            }
        }
        ModelSpec {
            input: config.sizes.first().map(|&d| vec![d]).unwrap_or_default(),
            layers,
            init: config.init,
            seed: config.seed,
        }
    }

    /// The [`MlpConfig`] this spec is the MLP of, if it is one: a flat input, linear layers
    /// with biases, the same activation after each but the last (each followed by dropout of
    /// the same probability, or none).
    pub fn as_mlp(&self) -> Option<MlpConfig> {
        let [d] = self.input[..] else { return None };
        let mut sizes = vec![d];
        let (mut activation, mut dropout) = (None, None);
        let mut i = 0;
        while i < self.layers.len() {
            let LayerSpec::Linear {
                out_features,
                bias: true,
            } = self.layers[i]
            else {
                return None;
            };
            sizes.push(out_features);
            i += 1;
            if i == self.layers.len() {
                break;
            }
            let a = self.layers[i].activation()?;
            if *activation.get_or_insert(a) != a {
                return None;
            }
            i += 1;
            let p = match self.layers.get(i) {
                Some(LayerSpec::Dropout { p }) => {
                    i += 1;
                    *p
                }
                _ => 0.0,
            };
            if *dropout.get_or_insert(p) != p || i == self.layers.len() {
                return None;
            }
        }
        if sizes.len() < 2 {
            return None;
        }
        Some(MlpConfig {
            sizes,
            activation: activation.unwrap_or(Activation::Relu),
            dropout: dropout.unwrap_or(0.0),
            init: self.init,
            seed: self.seed,
        })
    }

    /// The spec as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("internal: ModelSpec serialises")
    }

    /// Parses a spec from JSON (not yet checked: see [`ModelSpec::summary`]); the JSON of an
    /// [`MlpConfig`] (what files before model specs hold) gives its MLP's spec.
    pub fn from_json(s: &str) -> Result<Self> {
        let bad = |e: String| Error::arg("ModelSpec", format!("bad JSON: {e}"));
        let v: serde_json::Value = serde_json::from_str(s).map_err(|e| bad(e.to_string()))?;
        spec_or_mlp(v).map_err(bad)
    }

    /// Values per input sample (the product of [`ModelSpec::input`]).
    pub fn input_features(&self) -> usize {
        self.input.iter().product()
    }

    /// Every top-level layer with its input and output shapes (for a batch of `batch`) and
    /// parameter count, checked: an `Err` names the first layer that cannot take its input
    /// and both shapes. Nothing is allocated.
    pub fn summary(&self, batch: usize) -> Result<Vec<LayerShape>> {
        if self.input.is_empty() || self.input.contains(&0) {
            return Err(Error::shape(
                "ModelSpec",
                format!(
                    "input shape {}: need at least one axis, all sizes > 0",
                    fmt_shape(&self.input)
                ),
            ));
        }
        let mut shape = vec![batch];
        shape.extend(&self.input);
        let mut rows = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let name = format!("layers.{i}");
            let (out, params, layer) = infer(l, &shape, &name)?;
            rows.push(LayerShape {
                name,
                layer,
                input: shape,
                output: out.clone(),
                params,
            });
            shape = out;
        }
        Ok(rows)
    }

    /// The output shape for a batch of `batch` (checked, as [`ModelSpec::summary`]).
    pub fn output_shape(&self, batch: usize) -> Result<Vec<usize>> {
        let rows = self.summary(batch)?;
        Ok(rows.last().map_or_else(
            || {
                let mut s = vec![batch];
                s.extend(&self.input);
                s
            },
            |r| r.output.clone(),
        ))
    }

    /// Trainable parameters, saturating instead of overflowing (what a request for an absurd
    /// model can be refused by before anything is allocated); an `Err` if the shapes do not fit.
    pub fn parameter_count(&self) -> Result<usize> {
        Ok(self
            .summary(1)?
            .iter()
            .map(|r| r.params)
            .fold(0, usize::saturating_add))
    }

    /// The indices of the top-level layers where blocks start — each linear or convolution
    /// layer begins one (layers before the first belong to the first) — the units of gradient
    /// checkpointing (see [`Network::set_checkpoint_blocks`](crate::nn::Network)).
    pub fn blocks(&self) -> Vec<usize> {
        let mut starts: Vec<usize> = self
            .layers
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_weighted())
            .map(|(i, _)| i)
            .collect();
        if starts.first() != Some(&0) {
            starts.insert(0, 0);
        }
        starts
    }
}

//! Neural-network building blocks: the [`Module`] trait, [`Linear`], [`Conv2d`] and [`Conv1d`]
//! layers, pooling, batch normalisation, activations, dropout, [`Sequential`] containers,
//! [`Residual`] blocks, models as data ([`ModelSpec`] → [`Network`]; the [`Mlp`] is one case),
//! weight initialisation, and losses.

mod activation;
mod conv;
mod conv1d;
mod dropout;
mod generate;
mod gpt;
mod init;
mod linear;
pub mod loss;
mod mlp;
mod network;
mod norm;
mod pool;
mod predict;
mod residual;
mod sequential;
mod shape;
mod spec;
mod transformer;

pub use activation::Activation;
pub use conv::Conv2d;
pub use conv1d::Conv1d;
pub use dropout::Dropout;
pub use generate::{generate, Generation, SampleOptions};
pub use gpt::{Gpt, GptConfig};
pub use init::Init;
pub use linear::Linear;
pub use loss::Reduction;
pub use mlp::{Mlp, MlpConfig, ModelSummary, SummaryRow};
pub use network::Network;
pub use norm::{BatchNorm1d, BatchNorm2d};
pub use pool::{AvgPool2d, Flatten, MaxPool2d};
pub use predict::{Predictor, DEFAULT_PREDICT_BATCH};
pub use residual::Residual;
pub use sequential::Sequential;
pub(crate) use shape::{fmt_batch, infer as spec_infer};
pub(crate) use spec::spec_or_mlp;
pub use spec::{LayerShape, LayerSpec, ModelSpec};
pub use transformer::{Embedding, KvCache, LayerNorm, MultiHeadAttention, TransformerBlock};

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::Result;
use crate::tensor::{Float, Tensor};

/// A layer or model: a differentiable function of its input with named parameters.
///
/// Parameter names follow PyTorch (`layers.0.weight`), so checkpoints map one to one onto a
/// PyTorch `state_dict`.
pub trait Module<T: Float = f32>: Send + Sync {
    /// The output for a batch of inputs.
    fn forward(&self, x: &Tensor<T>) -> Result<Tensor<T>>;

    /// Trainable parameters with dotted names. Clones share storage with the module, so an
    /// optimizer updating them in place updates the module.
    fn named_parameters(&self) -> Vec<(String, Tensor<T>)> {
        Vec::new()
    }

    /// The parameters without names.
    fn parameters(&self) -> Vec<Tensor<T>> {
        self.named_parameters()
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    }

    /// Non-trainable tensors with dotted names (running statistics such as `running_mean`,
    /// `running_var`, `num_batches_tracked`): saved, loaded and resumed with the parameters
    /// (under the same names PyTorch's `state_dict` uses), updated by the forward pass in
    /// training mode, never handed to an optimizer.
    fn named_buffers(&self) -> Vec<(String, Tensor<T>)> {
        Vec::new()
    }

    /// Switches between training mode (dropout active, batch statistics used and tracked) and
    /// evaluation mode.
    fn set_training(&mut self, _training: bool) {}

    /// A short description for summaries, e.g. `Linear(784 → 512)`.
    fn describe(&self) -> String;

    /// Output shape for an input shape (checked), for summaries.
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        Ok(input.to_vec())
    }

    /// Non-tensor state that a checkpoint must carry to resume exactly (e.g. a dropout RNG).
    fn extra_state(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    /// Restores [`Module::extra_state`]. Keys that are missing leave the state unchanged.
    fn load_extra_state(&mut self, _state: &BTreeMap<String, String>) -> Result<()> {
        Ok(())
    }

    /// This module's forward pass as an owned function that shares the module's parameters
    /// (and random generator): what gradient checkpointing keeps in the graph to recompute the
    /// forward pass during backward. `None` (the default): the module cannot be checkpointed.
    fn shared_forward(&self) -> Option<SharedForward<T>> {
        None
    }

    /// The forward pass over the next positions of sequences whose earlier positions are in
    /// `cache` (see [`forward_with_cache`]): attention layers read and extend their keys and
    /// values there, so each new position costs one position. Layers that work position by
    /// position (linear, norms, activations, embeddings) give their forward pass. The
    /// default: an error saying the module cannot run with a cache.
    fn forward_cached(&self, x: &Tensor<T>, _cache: &mut KvCache<T>) -> Result<Tensor<T>> {
        let _ = x;
        Err(crate::error::Error::arg(
            "generate",
            format!("{} cannot run with a key/value cache", self.describe()),
        ))
    }

    /// This module as [`Any`](std::any::Any), for a container that recognises a module's type
    /// to run an exact rewrite ([`Sequential`] runs ReLU followed by max pooling as max pooling
    /// followed by ReLU). `None` (the default): not recognisable.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }

    /// Gradient checkpointing by segments of `k` blocks, where the module says what a block is
    /// ([`Sequential`]: one child; [`Network`]: a linear or convolution layer and what follows
    /// it). `None` turns it off. The default: an error saying the module does not support it.
    fn set_checkpoint_blocks(&mut self, k: Option<usize>) -> Result<()> {
        match k {
            None => Ok(()),
            Some(_) => Err(crate::error::Error::arg(
                "checkpoint_activations",
                format!(
                    "{} does not support gradient checkpointing",
                    self.describe()
                ),
            )),
        }
    }
}

/// Runs `model` over the next positions `x` (`[b, t]` token ids) of the sequences whose
/// earlier positions `cache` holds, and records them there: the logits of the new positions
/// equal those of running the whole sequence without a cache.
///
/// ```
/// use nabla::nn::{forward_with_cache, Gpt, GptConfig, KvCache, Module};
/// use nabla::{Rng, Tensor};
/// let config = GptConfig {
///     vocab: 5, context: 8, width: 8, depth: 1, heads: 2, bias: true, tied: true, dropout: 0.0,
/// };
/// let gpt = Gpt::<f64>::new(config, &mut Rng::new(0)).unwrap();
/// let ids = Tensor::from_vec(vec![1.0, 4.0, 2.0], &[1, 3]).unwrap();
/// let full = gpt.forward(&ids).unwrap().to_vec().unwrap();
/// let mut cache = KvCache::new();
/// forward_with_cache(&gpt, &ids.narrow(1, 0, 2).unwrap(), &mut cache).unwrap();
/// let last = forward_with_cache(&gpt, &ids.narrow(1, 2, 1).unwrap(), &mut cache).unwrap();
/// for (a, b) in last.to_vec().unwrap().iter().zip(&full[10..]) {
///     assert!((a - b).abs() < 1e-12);
/// }
/// ```
pub fn forward_with_cache<T: Float>(
    model: &dyn Module<T>,
    x: &Tensor<T>,
    cache: &mut KvCache<T>,
) -> Result<Tensor<T>> {
    cache.begin();
    let y = model.forward_cached(x, cache)?;
    cache.advance(x.shape().get(1).copied().unwrap_or(0));
    Ok(y)
}

/// A module's forward pass as an owned, shareable function (see [`Module::shared_forward`]).
pub type SharedForward<T> = Arc<dyn Fn(&Tensor<T>) -> Result<Tensor<T>> + Send + Sync>;

/// `items` with every name prefixed by `prefix` (`layers.` + `0.weight`): how containers name
/// what their children hold (parameters, extra state).
pub(crate) fn prefixed<V, C: FromIterator<(String, V)>>(
    prefix: &str,
    items: impl IntoIterator<Item = (String, V)>,
) -> C {
    items
        .into_iter()
        .map(|(n, v)| (format!("{prefix}{n}"), v))
        .collect()
}

/// The entries of `state` under `prefix`, with the prefix removed (the inverse of
/// [`prefixed`]).
pub(crate) fn under(prefix: &str, state: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    state
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
        .collect()
}

/// A module's parameters and buffers, with names: everything a model file holds (PyTorch's
/// `state_dict`).
pub fn named_state<T: Float>(m: &dyn Module<T>) -> Vec<(String, Tensor<T>)> {
    let mut v = m.named_parameters();
    v.extend(m.named_buffers());
    v
}

/// Total number of parameter elements of a module.
pub fn parameter_count<T: Float>(m: &dyn Module<T>) -> usize {
    m.parameters().iter().map(|p| p.numel()).sum()
}

//! Neural-network building blocks: the [`Module`] trait, [`Linear`], [`Conv2d`] and [`Conv1d`]
//! layers, pooling, batch normalisation, activations, dropout, [`Sequential`] containers,
//! [`Residual`] blocks, models as data ([`ModelSpec`] → [`Network`]; the [`Mlp`] is one case),
//! weight initialisation, and losses.

mod activation;
mod conv;
mod conv1d;
mod dropout;
mod init;
mod linear;
pub mod loss;
mod mlp;
mod network;
mod norm;
mod pool;
mod residual;
mod sequential;
mod shape;
mod spec;

pub use activation::Activation;
pub use conv::Conv2d;
pub use conv1d::Conv1d;
pub use dropout::Dropout;
pub use init::Init;
pub use linear::Linear;
pub use loss::Reduction;
pub use mlp::{Mlp, MlpConfig, ModelSummary, SummaryRow};
pub use network::Network;
pub use norm::{BatchNorm1d, BatchNorm2d};
pub use pool::{AvgPool2d, Flatten, MaxPool2d};
pub use residual::Residual;
pub use sequential::Sequential;
pub(crate) use shape::{fmt_batch, infer as spec_infer};
pub(crate) use spec::spec_or_mlp;
pub use spec::{LayerShape, LayerSpec, ModelSpec};

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

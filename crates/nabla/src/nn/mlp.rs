//! The multi-layer perceptron builder and model summaries.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::nn::{Activation, Init, ModelSpec, Module, Network, Sequential, SharedForward};
use crate::tensor::{Float, Tensor};

/// Everything needed to rebuild an [`Mlp`]: checkpoints store it as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpConfig {
    /// Layer widths from input to output, e.g. `[784, 512, 256, 10]`.
    pub sizes: Vec<usize>,
    /// Activation after every linear layer but the last.
    pub activation: Activation,
    /// Dropout probability after each hidden activation (0 = none).
    pub dropout: f64,
    /// Weight initialisation.
    pub init: Init,
    /// Seed of the initial weights (and of dropout masks).
    pub seed: u64,
}

impl MlpConfig {
    /// A ReLU MLP with Kaiming-uniform weights, no dropout, seed 0.
    pub fn new(sizes: &[usize]) -> Self {
        MlpConfig {
            sizes: sizes.to_vec(),
            activation: Activation::Relu,
            dropout: 0.0,
            init: Init::KaimingUniform,
            seed: 0,
        }
    }

    /// Parameters of the network (weights and biases), saturating instead of overflowing:
    /// what a request for an absurd model can be refused by before anything is allocated.
    pub fn parameter_count(&self) -> usize {
        self.sizes
            .windows(2)
            .map(|w| w[0].saturating_mul(w[1]).saturating_add(w[1]))
            .fold(0, usize::saturating_add)
    }

    /// The config as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("internal: MlpConfig serialises")
    }

    /// Parses [`MlpConfig::to_json`] output.
    pub fn from_json(s: &str) -> Result<Self> {
        serde_json::from_str(s).map_err(|e| Error::arg("MlpConfig", format!("bad JSON: {e}")))
    }
}

/// `Linear → activation (→ dropout) → … → Linear`: the widths of [`MlpConfig::sizes`] — the
/// [`Network`] of [`ModelSpec::mlp`], which keeps the config it came from. Parameters are named
/// `layers.{i}.weight` / `layers.{i}.bias` as in a PyTorch module whose `self.layers` is an
/// `nn.Sequential`.
pub struct Mlp<T: Float = f32> {
    config: MlpConfig,
    net: Network<T>,
}

impl<T: Float> Mlp<T> {
    /// Builds the network with weights drawn from the config's seed.
    pub fn new(config: &MlpConfig) -> Result<Self> {
        if config.sizes.len() < 2 || config.sizes.contains(&0) {
            return Err(Error::arg(
                "Mlp",
                format!(
                    "layer sizes {:?}: need at least an input and an output width, all > 0",
                    config.sizes
                ),
            ));
        }
        Ok(Mlp {
            config: config.clone(),
            net: ModelSpec::mlp(config).build()?,
        })
    }

    /// Gradient checkpointing every `k` hidden blocks (`Linear → activation (→ dropout)`):
    /// only each segment's input is kept for backward, which recomputes the segment. See
    /// [`Network::set_checkpoint_blocks`]; `None` turns it off.
    pub fn set_checkpoint_every(&mut self, k: Option<usize>) -> Result<()> {
        self.net.set_checkpoint_blocks(k)
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &MlpConfig {
        &self.config
    }

    /// The network.
    pub fn network(&self) -> &Network<T> {
        &self.net
    }

    /// The network, without the MLP config.
    pub fn into_network(self) -> Network<T> {
        self.net
    }

    /// The layers.
    pub fn layers(&self) -> &Sequential<T> {
        self.net.layers()
    }

    /// Layers, output shapes for a batch of `batch` inputs, parameter counts and bytes.
    pub fn summary(&self, batch: usize) -> Result<ModelSummary> {
        self.net.summary(batch)
    }
}

impl<T: Float> AsRef<Network<T>> for Mlp<T> {
    fn as_ref(&self) -> &Network<T> {
        &self.net
    }
}

impl<T: Float> Module<T> for Mlp<T> {
    fn forward(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        self.net.forward(x)
    }
    fn named_parameters(&self) -> Vec<(String, Tensor<T>)> {
        self.net.named_parameters()
    }
    fn named_buffers(&self) -> Vec<(String, Tensor<T>)> {
        self.net.named_buffers()
    }
    fn set_training(&mut self, training: bool) {
        self.net.set_training(training);
    }
    fn describe(&self) -> String {
        format!("Mlp({:?}, {})", self.config.sizes, self.config.activation)
    }
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        self.net.output_shape(input)
    }
    fn shared_forward(&self) -> Option<SharedForward<T>> {
        self.net.shared_forward()
    }
    fn extra_state(&self) -> BTreeMap<String, String> {
        self.net.extra_state()
    }
    fn load_extra_state(&mut self, state: &BTreeMap<String, String>) -> Result<()> {
        self.net.load_extra_state(state)
    }
    fn set_checkpoint_blocks(&mut self, k: Option<usize>) -> Result<()> {
        self.net.set_checkpoint_blocks(k)
    }
}

/// One row of a [`ModelSummary`].
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRow {
    /// Parameter-name prefix, e.g. `layers.0`.
    pub name: String,
    /// What the layer is, e.g. `Linear(784 → 512)`.
    pub layer: String,
    /// Output shape for the summary's batch size.
    pub output_shape: Vec<usize>,
    /// Parameter elements.
    pub params: usize,
    /// Parameter bytes.
    pub bytes: usize,
}

/// A model's layers with output shapes and parameter counts.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSummary {
    /// Input shape used.
    pub input_shape: Vec<usize>,
    /// One row per layer.
    pub rows: Vec<SummaryRow>,
    /// Total parameter elements.
    pub total_params: usize,
    /// Total parameter bytes.
    pub total_bytes: usize,
}

impl fmt::Display for ModelSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Columns as wide as their longest entry (a layer such as `Conv2d(32 → 64, 3×3,
        // padding 1)` is longer than a linear one).
        let width =
            |it: &mut dyn Iterator<Item = usize>, min: usize| it.max().unwrap_or(0).max(min);
        let shape = |s: &[usize]| format!("{s:?}");
        let name_w = width(&mut self.rows.iter().map(|r| r.name.chars().count()), 10);
        let layer_w = width(&mut self.rows.iter().map(|r| r.layer.chars().count()), 5);
        let out_w = width(
            &mut self.rows.iter().map(|r| shape(&r.output_shape).len()),
            shape(&self.input_shape).len().max(6),
        );
        writeln!(
            f,
            "{:<name_w$} {:<layer_w$} {:<out_w$} {:>12} {:>12}",
            "name", "layer", "output", "params", "bytes"
        )?;
        writeln!(
            f,
            "{:<name_w$} {:<layer_w$} {}",
            "input",
            "",
            shape(&self.input_shape)
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:<name_w$} {:<layer_w$} {:<out_w$} {:>12} {:>12}",
                r.name,
                r.layer,
                shape(&r.output_shape),
                r.params,
                r.bytes
            )?;
        }
        write!(
            f,
            "total: {} parameters, {} bytes",
            self.total_params, self.total_bytes
        )
    }
}

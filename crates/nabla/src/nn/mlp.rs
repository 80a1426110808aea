//! The multi-layer perceptron builder and model summaries.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::nn::{
    prefixed, under, Activation, Dropout, Init, Linear, Module, Sequential, SharedForward,
};
use crate::rng::Rng;
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

/// `Linear → activation (→ dropout) → … → Linear`: the widths of [`MlpConfig::sizes`].
/// Parameters are named `layers.{i}.weight` / `layers.{i}.bias` as in a PyTorch module whose
/// `self.layers` is an `nn.Sequential`.
pub struct Mlp<T: Float = f32> {
    config: MlpConfig,
    layers: Sequential<T>,
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
        let mut rng = Rng::new(config.seed);
        let mut layers = Sequential::new();
        let n = config.sizes.len() - 1;
        for (i, w) in config.sizes.windows(2).enumerate() {
            layers.push(Box::new(Linear::<T>::new(
                w[0],
                w[1],
                true,
                config.init,
                &mut rng,
            )?));
            if i + 1 < n {
                layers.push(Box::new(config.activation));
                if config.dropout > 0.0 {
                    let seed = config.seed ^ (0x9E37_79B9 + i as u64);
                    layers.push(Box::new(Dropout::new(config.dropout, seed)?));
                }
            }
        }
        Ok(Mlp {
            config: config.clone(),
            layers,
        })
    }

    /// Gradient checkpointing every `k` hidden blocks (`Linear → activation (→ dropout)`):
    /// only each segment's input is kept for backward, which recomputes the segment. See
    /// [`Sequential::set_checkpoint_every`]; `None` turns it off.
    pub fn set_checkpoint_every(&mut self, k: Option<usize>) -> Result<()> {
        let per_block = if self.config.dropout > 0.0 { 3 } else { 2 };
        self.layers
            .set_checkpoint_every(k.map(|k| k.saturating_mul(per_block)))
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &MlpConfig {
        &self.config
    }

    /// The layers.
    pub fn layers(&self) -> &Sequential<T> {
        &self.layers
    }

    /// Layers, output shapes for a batch of `batch` inputs, parameter counts and bytes.
    pub fn summary(&self, batch: usize) -> Result<ModelSummary> {
        let mut shape = vec![batch, self.config.sizes[0]];
        let mut rows = Vec::new();
        for (i, l) in self.layers.layers().iter().enumerate() {
            shape = l.output_shape(&shape)?;
            let params: usize = l.parameters().iter().map(|p| p.numel()).sum();
            rows.push(SummaryRow {
                name: format!("layers.{i}"),
                layer: l.describe(),
                output_shape: shape.clone(),
                params,
                bytes: params * std::mem::size_of::<T>(),
            });
        }
        Ok(ModelSummary {
            total_params: rows.iter().map(|r| r.params).sum(),
            total_bytes: rows.iter().map(|r| r.bytes).sum(),
            input_shape: vec![batch, self.config.sizes[0]],
            rows,
        })
    }
}

impl<T: Float> Module<T> for Mlp<T> {
    fn forward(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        if !crate::autograd::is_grad_enabled() {
            return self.layers.forward(x);
        }
        // Recorded ops are labelled like the parameters: `layers.0`, `layers.1`, …
        static LAYERS: std::sync::LazyLock<std::sync::Arc<str>> =
            std::sync::LazyLock::new(|| std::sync::Arc::from("layers"));
        crate::autograd::scope_arc(LAYERS.clone(), || self.layers.forward(x))
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
        format!("Mlp({:?}, {})", self.config.sizes, self.config.activation)
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
        writeln!(
            f,
            "{:<10} {:<22} {:<16} {:>12} {:>12}",
            "name", "layer", "output", "params", "bytes"
        )?;
        let input = format!("{:?}", self.input_shape);
        writeln!(f, "{:<10} {:<22} {:<16}", "input", "", input)?;
        for r in &self.rows {
            writeln!(
                f,
                "{:<10} {:<22} {:<16} {:>12} {:>12}",
                r.name,
                r.layer,
                format!("{:?}", r.output_shape),
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

//! The model file a run writes (`model.safetensors`): the library's model file
//! ([`nabla::io::save_model`]: weights, model spec, task, input units and normalisation, class
//! names) plus the data flags the run was trained with.

use std::path::Path;

use anyhow::{Context, Result};
use nabla::data::Normalizer;
use nabla::io::{ModelCard, Task as CardTask};
use nabla::nn::{ModelSpec, Network};

use crate::args::{DataArgs, Task};

/// What a model file says about its model.
#[derive(Debug, Clone)]
pub struct ModelMeta {
    pub spec: ModelSpec,
    pub task: Task,
    /// Input values are multiplied by this before normalising (1/255 for IDX pixels).
    pub input_scale: f32,
    pub normalizer: Normalizer,
    pub class_names: Vec<String>,
    pub dataset: String,
    /// The data flags it was trained with (absolute paths): `eval`'s default data.
    pub data: Option<DataArgs>,
}

impl ModelMeta {
    /// The library's card of this model.
    pub fn card(&self) -> Result<ModelCard> {
        let mut card = ModelCard::new(
            self.spec.clone(),
            match self.task {
                Task::Classification => CardTask::Classification,
                Task::Regression => CardTask::Regression,
                Task::Text => CardTask::Language,
            },
        );
        card.input_scale = self.input_scale;
        card.normalizer = self.normalizer.clone();
        card.class_names = self.class_names.clone();
        card.dataset = self.dataset.clone();
        if let Some(d) = &self.data {
            card.extra
                .insert("data".to_string(), serde_json::to_string(d)?);
        }
        Ok(card)
    }

    /// The meta of a library card (its `data` entry, if any, read back).
    pub fn from_card(path: &Path, card: ModelCard) -> Result<Self> {
        let data = card
            .extra
            .get("data")
            .map(|d| serde_json::from_str(d))
            .transpose()
            .with_context(|| format!("{}: metadata 'data' is malformed", path.display()))?;
        Ok(ModelMeta {
            spec: card.spec,
            task: match card.task {
                CardTask::Classification => Task::Classification,
                CardTask::Regression => Task::Regression,
                CardTask::Language => Task::Text,
            },
            input_scale: card.input_scale,
            normalizer: card.normalizer,
            class_names: card.class_names,
            dataset: card.dataset,
            data,
        })
    }

    /// The class names, numbered when the file has none.
    pub fn class_name(&self, c: usize) -> String {
        self.class_names
            .get(c)
            .cloned()
            .unwrap_or_else(|| c.to_string())
    }
}

/// Writes weights and metadata atomically.
pub fn save_model(path: &Path, model: &dyn nabla::nn::Module<f32>, meta: &ModelMeta) -> Result<()> {
    nabla::io::save_model(path, model, &meta.card()?)?;
    Ok(())
}

/// Reads a model file: rebuilds the network from its spec, loads the weights, evaluation mode.
pub fn load_model(path: &Path) -> Result<(Network, ModelMeta)> {
    let (net, card) = nabla::io::load_model(path)?;
    Ok((net, ModelMeta::from_card(path, card)?))
}

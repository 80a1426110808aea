//! The model file a run writes (`model.safetensors`): weights plus everything needed to use
//! them — architecture, task, input normalisation, class names — in the metadata.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use nabla::data::Normalizer;
use nabla::io::{load_weights, read_tensor_file, save_weights};
use nabla::nn::{Mlp, MlpConfig, Module};

use crate::args::{DataArgs, Task};

/// What a model file says about its model.
#[derive(Debug, Clone)]
pub struct ModelMeta {
    pub config: MlpConfig,
    pub task: Task,
    pub normalizer: Normalizer,
    pub class_names: Vec<String>,
    pub dataset: String,
    /// The data flags it was trained with (absolute paths): `eval`'s default data.
    pub data: Option<DataArgs>,
}

impl ModelMeta {
    /// What a user of the model needs besides its weights and architecture: task, input
    /// normaliser, class names, data set (written into model files and exported files alike).
    pub fn usage_metadata(&self) -> Result<BTreeMap<String, String>> {
        Ok(BTreeMap::from([
            ("task".to_string(), serde_json::to_string(&self.task)?),
            (
                "normalizer".to_string(),
                serde_json::to_string(&self.normalizer)?,
            ),
            (
                "class_names".to_string(),
                serde_json::to_string(&self.class_names)?,
            ),
            ("dataset".to_string(), self.dataset.clone()),
        ]))
    }
}

/// Writes weights and metadata atomically.
pub fn save_model(path: &Path, model: &Mlp, meta: &ModelMeta) -> Result<()> {
    let mut m = meta.usage_metadata()?;
    m.insert("model_config".to_string(), meta.config.to_json());
    if let Some(d) = &meta.data {
        m.insert("data".to_string(), serde_json::to_string(d)?);
    }
    save_weights(path, model, &m)?;
    Ok(())
}

fn missing(path: &Path, key: &str) -> anyhow::Error {
    anyhow!(
        "{}: not a nabla model file (metadata has no '{key}'; write one with `nabla train`)",
        path.display()
    )
}

fn field<'a>(path: &Path, meta: &'a BTreeMap<String, String>, key: &str) -> Result<&'a String> {
    meta.get(key).ok_or_else(|| missing(path, key))
}

/// A JSON metadata entry of `path`, if present; an error naming the file and key if malformed.
pub fn parse_field<T: serde::de::DeserializeOwned>(
    path: &Path,
    meta: &BTreeMap<String, String>,
    key: &str,
) -> Result<Option<T>> {
    meta.get(key)
        .map(|v| serde_json::from_str(v))
        .transpose()
        .with_context(|| format!("{}: metadata '{key}' is malformed", path.display()))
}

/// [`parse_field`] of an entry every model file has.
fn parse_required<T: serde::de::DeserializeOwned>(
    path: &Path,
    meta: &BTreeMap<String, String>,
    key: &str,
) -> Result<T> {
    parse_field(path, meta, key)?.ok_or_else(|| missing(path, key))
}

/// Reads a model file: rebuilds the MLP from its config, loads the weights, evaluation mode.
pub fn load_model(path: &Path) -> Result<(Mlp, ModelMeta)> {
    let file = read_tensor_file(path)?;
    let md = &file.metadata;
    let bad = |what: &str| format!("{}: metadata '{what}' is malformed", path.display());
    let config = MlpConfig::from_json(field(path, md, "model_config")?)
        .with_context(|| bad("model_config"))?;
    let meta = ModelMeta {
        task: parse_required(path, md, "task")?,
        normalizer: parse_required(path, md, "normalizer")?,
        class_names: parse_required(path, md, "class_names")?,
        dataset: field(path, md, "dataset")?.clone(),
        data: parse_field(path, md, "data")?,
        config,
    };
    let mut model = Mlp::new(&meta.config).with_context(|| bad("model_config"))?;
    load_weights(path, &model)?;
    model.set_training(false);
    Ok((model, meta))
}

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

/// Writes weights and metadata atomically.
pub fn save_model(path: &Path, model: &Mlp, meta: &ModelMeta) -> Result<()> {
    let m = BTreeMap::from([
        ("model_config".to_string(), meta.config.to_json()),
        ("task".to_string(), serde_json::to_string(&meta.task)?),
        (
            "normalizer".to_string(),
            serde_json::to_string(&meta.normalizer)?,
        ),
        (
            "class_names".to_string(),
            serde_json::to_string(&meta.class_names)?,
        ),
        ("dataset".to_string(), meta.dataset.clone()),
    ]);
    let mut m = m;
    if let Some(d) = &meta.data {
        m.insert("data".to_string(), serde_json::to_string(d)?);
    }
    save_weights(path, model, &m)?;
    Ok(())
}

fn field<'a>(path: &Path, meta: &'a BTreeMap<String, String>, key: &str) -> Result<&'a String> {
    meta.get(key).ok_or_else(|| {
        anyhow!(
            "{}: not a nabla model file (metadata has no '{key}'; write one with `nabla train`)",
            path.display()
        )
    })
}

/// Reads a model file: rebuilds the MLP from its config, loads the weights, evaluation mode.
pub fn load_model(path: &Path) -> Result<(Mlp, ModelMeta)> {
    let file = read_tensor_file(path)?;
    let md = &file.metadata;
    let bad = |what: &str| format!("{}: metadata '{what}' is malformed", path.display());
    let config = MlpConfig::from_json(field(path, md, "model_config")?)
        .with_context(|| bad("model_config"))?;
    let meta = ModelMeta {
        task: serde_json::from_str(field(path, md, "task")?).with_context(|| bad("task"))?,
        normalizer: serde_json::from_str(field(path, md, "normalizer")?)
            .with_context(|| bad("normalizer"))?,
        class_names: serde_json::from_str(field(path, md, "class_names")?)
            .with_context(|| bad("class_names"))?,
        dataset: field(path, md, "dataset")?.clone(),
        data: match md.get("data") {
            Some(d) => Some(serde_json::from_str(d).with_context(|| bad("data"))?),
            None => None,
        },
        config,
    };
    let mut model = Mlp::new(&meta.config).with_context(|| bad("model_config"))?;
    load_weights(path, &model)?;
    model.set_training(false);
    Ok((model, meta))
}

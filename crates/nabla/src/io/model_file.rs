//! Model files: the weights plus everything needed to use them — the [`ModelSpec`], the task,
//! the input's units and normalisation, the class names — in the safetensors metadata. A file
//! the library writes is a file `nabla predict`, `eval`, `info` and `export` read.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::{Normalization, Normalizer};
use crate::error::{Error, Result};
use crate::io::{load_weights_from, read_tensor_file, save_weights};
use crate::nn::{spec_or_mlp, ModelSpec, Module, Network};

/// Classification (one class per sample, probabilities by softmax) or regression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Integer class targets; the model's outputs are logits.
    Classification,
    /// Real targets.
    Regression,
    /// Next-token prediction (a language model): the class names hold the vocabulary, one
    /// character each.
    Language,
}

/// What a model file says about its model, besides the weights.
///
/// The model's input is `normalizer(input_scale · x)` where `x` is in the data file's own
/// units (IDX pixels 0–255: `input_scale` 1/255; CSV columns: 1): [`ModelCard::prepare`]
/// applies both, and the exporters put both into the exported graph.
///
/// ```
/// use nabla::io::{load_model, save_model, ModelCard, Task};
/// use nabla::nn::{MlpConfig, ModelSpec, Module};
/// let spec = ModelSpec::mlp(&MlpConfig::new(&[2, 16, 3]));
/// let net = spec.build::<f32>()?;
/// let path = std::env::temp_dir().join("nabla_doc_model_file.safetensors");
/// save_model(&path, &net, &ModelCard::new(spec, Task::Classification))?;
/// let (back, card) = load_model(&path)?;               // what `nabla predict` reads
/// assert_eq!(card.task, Task::Classification);
/// assert_eq!(back.named_parameters().len(), 4);
/// # Ok::<(), nabla::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ModelCard {
    /// The model.
    pub spec: ModelSpec,
    /// The task.
    pub task: Task,
    /// Each input value is multiplied by this before normalising (1/255 for IDX pixels).
    pub input_scale: f32,
    /// The normalisation fitted on the (scaled) training inputs.
    pub normalizer: Normalizer,
    /// Class names (classification; empty: the class numbers).
    pub class_names: Vec<String>,
    /// The data set's name ("" if unknown).
    pub dataset: String,
    /// Further metadata stored with the file (e.g. how the data were loaded).
    pub extra: BTreeMap<String, String>,
}

const SPEC_KEY: &str = "model_spec";
const LEGACY_KEY: &str = "model_config";

impl ModelCard {
    /// A card with inputs used as they are (scale 1, no normalisation), no class names.
    pub fn new(spec: ModelSpec, task: Task) -> Self {
        ModelCard {
            spec,
            task,
            input_scale: 1.0,
            normalizer: Normalizer {
                mode: Normalization::None,
                mean: Vec::new(),
                std: Vec::new(),
            },
            class_names: Vec::new(),
            dataset: String::new(),
            extra: BTreeMap::new(),
        }
    }

    /// Inputs in the data file's units (`[n, features]`) as the model takes them: scaled,
    /// then normalised.
    pub fn prepare(&self, x: &crate::Tensor<f32>) -> Result<crate::Tensor<f32>> {
        let x = if self.input_scale == 1.0 {
            x.clone()
        } else {
            x.mul_scalar(self.input_scale as f64)?
        };
        self.normalizer.apply(&x)
    }

    /// The input's units in words, e.g. "IDX pixels 0–255 (×1/255, then normalised by the
    /// training mean and std)".
    pub fn input_units(&self) -> String {
        let units = if (self.input_scale - 1.0 / 255.0).abs() < 1e-9 {
            "pixels 0–255 as the IDX file holds them (the model scales them by 1/255)".to_string()
        } else if self.input_scale == 1.0 {
            "the data file's values".to_string()
        } else {
            format!(
                "the data file's values (the model scales them by {})",
                self.input_scale
            )
        };
        match self.normalizer.mode {
            Normalization::None => units,
            Normalization::Global => units + ", then normalises by the training mean and std",
            Normalization::PerFeature => {
                units + ", then normalises each feature by its training mean and std"
            }
        }
    }

    /// The metadata entries that describe how to use the model (also written into exported
    /// files): task, input scale, normaliser, class names, data set, input units.
    pub fn usage_metadata(&self) -> BTreeMap<String, String> {
        let json = |v: serde_json::Result<String>| v.expect("internal: metadata serialises");
        let mut m = self.extra.clone();
        m.extend([
            ("task".to_string(), json(serde_json::to_string(&self.task))),
            ("input_scale".to_string(), format!("{:?}", self.input_scale)),
            ("input_units".to_string(), self.input_units()),
            (
                "normalizer".to_string(),
                json(serde_json::to_string(&self.normalizer)),
            ),
            (
                "class_names".to_string(),
                json(serde_json::to_string(&self.class_names)),
            ),
            ("dataset".to_string(), self.dataset.clone()),
        ]);
        m
    }

    /// Reads the card from a file's metadata; `what` names the file in errors. Files written
    /// before model specs (an `MlpConfig` under `model_config`, no `input_scale`) are read as
    /// the same MLP, with the 1/255 scale their IDX inputs had.
    pub fn from_metadata(meta: &BTreeMap<String, String>, what: &str) -> Result<Self> {
        let bad = |m: String| Error::file(Path::new(what), m);
        let raw = meta
            .get(SPEC_KEY)
            .or_else(|| meta.get(LEGACY_KEY))
            .ok_or_else(|| {
                bad(
                    "not a nabla model file: its metadata has no model spec (write one with \
                 nabla::io::save_model or `nabla train`)"
                        .into(),
                )
            })?;
        let spec = serde_json::from_str::<serde_json::Value>(raw)
            .map_err(|e| e.to_string())
            .and_then(spec_or_mlp)
            .map_err(|e| bad(format!("metadata 'model_spec' is malformed: {e}")))?;
        fn field<T: serde::de::DeserializeOwned>(
            meta: &BTreeMap<String, String>,
            k: &str,
            what: &str,
        ) -> Result<Option<T>> {
            meta.get(k)
                .map(|v| serde_json::from_str(v))
                .transpose()
                .map_err(|e| {
                    Error::file(Path::new(what), format!("metadata '{k}' is malformed: {e}"))
                })
        }
        let mut card = ModelCard::new(spec, Task::Classification);
        if let Some(t) = field(meta, "task", what)? {
            card.task = t;
        }
        if let Some(n) = field(meta, "normalizer", what)? {
            card.normalizer = n;
        }
        if let Some(c) = field(meta, "class_names", what)? {
            card.class_names = c;
        }
        card.dataset = meta.get("dataset").cloned().unwrap_or_default();
        card.input_scale = match meta.get("input_scale") {
            Some(s) => s
                .parse()
                .map_err(|_| bad(format!("metadata 'input_scale' {s:?} is not a number")))?,
            None if meta.contains_key("data") && card.dataset.contains("mnist") => 1.0 / 255.0,
            None => 1.0,
        };
        if !(card.input_scale.is_finite() && card.input_scale > 0.0) {
            return Err(bad(format!(
                "metadata 'input_scale' {} must be positive",
                card.input_scale
            )));
        }
        let known = [
            SPEC_KEY,
            LEGACY_KEY,
            "task",
            "normalizer",
            "class_names",
            "dataset",
            "input_scale",
            "input_units",
            "format",
            "dtype",
            "nabla_version",
        ];
        card.extra = meta
            .iter()
            .filter(|(k, _)| !known.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(card)
    }
}

/// Writes a model file (atomically): `model`'s parameters and buffers, and `card` in the
/// metadata. `model` must be what `card.spec` builds (names and shapes are checked when the
/// file is read back).
pub fn save_model(path: impl AsRef<Path>, model: &dyn Module<f32>, card: &ModelCard) -> Result<()> {
    let mut meta = card.usage_metadata();
    meta.insert(SPEC_KEY.into(), card.spec.to_json());
    save_weights(path, model, &meta)
}

/// Reads a model file written by [`save_model`] (or `nabla train`, or an earlier nabla):
/// builds the network of its spec, loads the weights (all or nothing, naming each missing or
/// misshapen tensor), evaluation mode.
pub fn load_model(path: impl AsRef<Path>) -> Result<(Network<f32>, ModelCard)> {
    let path = path.as_ref();
    let file = read_tensor_file(path)?;
    let what = path.display().to_string();
    let card = ModelCard::from_metadata(&file.metadata, &what)?;
    let mut net = card
        .spec
        .build::<f32>()
        .map_err(|e| Error::file(path, format!("its model spec does not build: {e}")))?;
    load_weights_from(&file, &what, &net)?;
    net.set_training(false);
    Ok((net, card))
}

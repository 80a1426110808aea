//! Model weights and full training state as safetensors files.

use std::collections::BTreeMap;
use std::path::Path;

use super::safetensors_file::{read_tensor_file, write_tensor_file, TensorFile};
use crate::error::{Error, Result};
use crate::nn::{named_state, Module};
use crate::optim::{Optimizer, OptimizerState};
use crate::rng::Rng;
use crate::tensor::shape::fmt_shape;
use crate::tensor::{Float, Tensor};

/// The `format` metadata of a weights file written by [`save_weights`].
pub const WEIGHTS_FORMAT: &str = "nabla-weights";

/// The prefix of every parameter name in a weights file (`nabla.layers.0.weight`): PyTorch's
/// `load_state_dict` cannot match it, so a nabla file, whose weights are `[in, out]`, fails
/// loudly there instead of loading transposed (`nabla export --format torch` writes PyTorch's
/// layout). Files written before the prefix (plain `layers.0.weight`) still load.
pub const WEIGHTS_PREFIX: &str = "nabla.";
const STATE_FORMAT: &str = "nabla-training-state";

/// The non-tensor part of a training checkpoint: where training was, and how to rebuild the
/// model and continue the random stream.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrainingState {
    /// Optimizer steps taken.
    pub step: u64,
    /// Completed epochs.
    pub epoch: u64,
    /// State of the training loop's random generator (data shuffling).
    pub rng: [u64; 4],
    /// The model configuration (JSON), enough to rebuild the model.
    pub model_config: String,
    /// Anything else the caller wants to keep (strings).
    pub extra: BTreeMap<String, String>,
}

fn base_metadata<T: Float>(format: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("format".to_string(), format.to_string()),
        (
            "nabla_version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        ("dtype".to_string(), T::DTYPE.to_string()),
    ])
}

/// Checks that `file` holds exactly the parameters `params` under `prefix`, with the right
/// shapes and dtype; returns the tensors to load, or an error naming every problem.
fn match_params<T: Float>(
    path: &Path,
    file: &TensorFile,
    prefix: &str,
    params: &[(String, Tensor<T>)],
) -> Result<Vec<Tensor<T>>> {
    let described = file.describe();
    let (mut missing, mut wrong, mut loaded) = (Vec::new(), Vec::new(), Vec::new());
    for (name, p) in params {
        let key = format!("{prefix}{name}");
        match described.get(&key) {
            None => missing.push(key),
            Some((dtype, shape)) => {
                let want = T::DTYPE.to_uppercase();
                if *dtype != want {
                    wrong.push(format!("{key} is {dtype}, the model uses {want}"));
                } else if shape[..] != *p.shape() {
                    wrong.push(format!(
                        "{key} is {} in the file, {} in the model",
                        fmt_shape(shape),
                        fmt_shape(p.shape())
                    ));
                } else if let Some(t) = file.get::<T>(&key)? {
                    loaded.push(t);
                }
            }
        }
    }
    let unexpected: Vec<&String> = described
        .keys()
        .filter(|k| {
            k.strip_prefix(prefix)
                .is_some_and(|n| !params.iter().any(|(pn, _)| pn == n))
        })
        .collect();
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!("missing {}", missing.join(", ")));
    }
    if !unexpected.is_empty() {
        let names: Vec<&str> = unexpected.iter().map(|s| s.as_str()).collect();
        problems.push(format!("unexpected {}", names.join(", ")));
    }
    if !wrong.is_empty() {
        problems.push(format!("mismatched {}", wrong.join("; ")));
    }
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(Error::Mismatch {
            what: path.display().to_string(),
            msg: problems.join("; "),
        })
    }
}

fn copy_into<T: Float>(params: &[(String, Tensor<T>)], values: &[Tensor<T>]) -> Result<()> {
    for ((_, p), v) in params.iter().zip(values) {
        let src = v.to_vec()?;
        p.update_data(|d| d.copy_from_slice(&src))?;
    }
    Ok(())
}

/// Saves a model's parameters and buffers under their names prefixed with [`WEIGHTS_PREFIX`]
/// (`nabla.layers.0.weight`, …) with `metadata` added to the file's metadata. The write is
/// atomic.
pub fn save_weights<T: Float>(
    path: impl AsRef<Path>,
    model: &dyn Module<T>,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut meta = base_metadata::<T>(WEIGHTS_FORMAT);
    meta.extend(metadata.clone());
    let named: Vec<(String, Tensor<T>)> = named_state(model)
        .into_iter()
        .map(|(n, t)| (format!("{WEIGHTS_PREFIX}{n}"), t))
        .collect();
    write_tensor_file(path.as_ref(), &named, &meta)
}

/// Loads parameters saved by [`save_weights`] (or any safetensors file with the same names)
/// into `model`, and returns the file's metadata. Nothing is changed unless every parameter
/// is present with the right shape and dtype and nothing unexpected is in the file; otherwise
/// the error names each problem.
pub fn load_weights<T: Float>(
    path: impl AsRef<Path>,
    model: &dyn Module<T>,
) -> Result<BTreeMap<String, String>> {
    let path = path.as_ref();
    let file = read_tensor_file(path)?;
    load_weights_from(&file, &path.display().to_string(), model)
}

/// [`load_weights`] from an already-read file; `name` is used in error messages.
pub fn load_weights_from<T: Float>(
    file: &TensorFile,
    name: &str,
    model: &dyn Module<T>,
) -> Result<BTreeMap<String, String>> {
    let params = named_state(model);
    let prefixed = file
        .describe()
        .keys()
        .any(|k| k.starts_with(WEIGHTS_PREFIX));
    let prefix = if prefixed { WEIGHTS_PREFIX } else { "" };
    let values = match_params(Path::new(name), file, prefix, &params)?;
    copy_into(&params, &values)?;
    Ok(file.metadata.clone())
}

/// Saves everything needed to resume training exactly: the model's parameters and buffers
/// (`model.*`) and
/// non-tensor state, the optimizer's buffers (`optimizer.*`), step count and
/// hyper-parameters, and `state`. The write is atomic: a crash never destroys the previous
/// checkpoint at `path`.
pub fn save_training_state<T: Float>(
    path: impl AsRef<Path>,
    model: &dyn Module<T>,
    optimizer: &dyn Optimizer<T>,
    state: &TrainingState,
) -> Result<()> {
    let mut tensors: Vec<(String, Tensor<T>)> = named_state(model)
        .into_iter()
        .map(|(n, p)| (format!("model.{n}"), p))
        .collect();
    let opt = optimizer.state();
    let buffer_names: Vec<&String> = opt.buffers.iter().map(|(n, _)| n).collect();
    let buffer_list = serde_json::to_string(&buffer_names).unwrap_or_default();
    tensors.extend(
        opt.buffers
            .into_iter()
            .map(|(n, t)| (format!("optimizer.{n}"), t)),
    );
    let mut meta = base_metadata::<T>(STATE_FORMAT);
    meta.extend([
        ("step".to_string(), state.step.to_string()),
        ("epoch".to_string(), state.epoch.to_string()),
        ("rng".to_string(), Rng::format_state(state.rng)),
        ("model_config".to_string(), state.model_config.clone()),
        ("optimizer_kind".to_string(), opt.kind),
        ("optimizer_steps".to_string(), opt.steps.to_string()),
        ("optimizer_config".to_string(), opt.config),
        ("optimizer_buffers".to_string(), buffer_list),
    ]);
    for (k, v) in model.extra_state() {
        meta.insert(format!("module.{k}"), v);
    }
    for (k, v) in &state.extra {
        meta.insert(format!("extra.{k}"), v.clone());
    }
    write_tensor_file(path.as_ref(), &tensors, &meta)
}

/// Restores a checkpoint written by [`save_training_state`] into `model` and `optimizer`
/// (built with the same configuration) and returns the loop state. All or nothing: on any
/// error (a missing or misshapen tensor, a malformed counter, RNG state or optimizer buffer)
/// the model and optimizer are as they were.
pub fn load_training_state<T: Float>(
    path: impl AsRef<Path>,
    model: &mut dyn Module<T>,
    optimizer: &mut dyn Optimizer<T>,
) -> Result<TrainingState> {
    let path = path.as_ref();
    let file = read_tensor_file(path)?;
    let meta = &file.metadata;
    let bad = |m: String| Error::file(path, m);
    let field = |k: &str| {
        meta.get(k)
            .ok_or_else(|| bad(format!("training-state metadata has no '{k}'")))
    };
    if meta.get("format").map(String::as_str) != Some(STATE_FORMAT) {
        return Err(bad(format!(
            "not a nabla training state (format is {:?}, expected '{STATE_FORMAT}')",
            meta.get("format")
        )));
    }
    let num = |k: &str| -> Result<u64> {
        field(k)?
            .parse()
            .map_err(|_| bad(format!("metadata '{k}' is not a number")))
    };
    let state = TrainingState {
        step: num("step")?,
        epoch: num("epoch")?,
        rng: Rng::parse_state(field("rng")?).map_err(|e| bad(e.to_string()))?,
        model_config: field("model_config")?.clone(),
        extra: meta
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("extra.").map(|k| (k.to_string(), v.clone())))
            .collect(),
    };
    let params = named_state(model);
    let values = match_params(path, &file, "model.", &params)?;
    let buffers: Vec<(String, Tensor<T>)> = file
        .describe()
        .keys()
        .filter_map(|k| {
            let name = k.strip_prefix("optimizer.")?;
            Some(file.get::<T>(k).map(|t| t.map(|t| (name.to_string(), t))))
        })
        .collect::<Result<Option<Vec<_>>>>()?
        .ok_or_else(|| bad(format!("optimizer buffers are not {}", T::DTYPE)))?;
    // The buffers the optimizer had when saved (files from before this list skip the check).
    if let Some(list) = meta.get("optimizer_buffers") {
        let mut want: Vec<String> = serde_json::from_str(list)
            .map_err(|e| bad(format!("metadata 'optimizer_buffers' is malformed: {e}")))?;
        let mut have: Vec<String> = buffers.iter().map(|(n, _)| n.clone()).collect();
        want.sort();
        have.sort();
        if want != have {
            let missing: Vec<&String> = want.iter().filter(|n| !have.contains(n)).collect();
            let extra: Vec<&String> = have.iter().filter(|n| !want.contains(n)).collect();
            return Err(bad(format!(
                "optimizer buffers do not match the saved list (missing {missing:?}, unexpected {extra:?})"
            )));
        }
    }
    let opt_state = OptimizerState {
        kind: field("optimizer_kind")?.clone(),
        steps: num("optimizer_steps")?,
        config: field("optimizer_config")?.clone(),
        buffers,
    };
    let module_state: BTreeMap<String, String> = meta
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("module.")
                .map(|k| (k.to_string(), v.clone()))
        })
        .collect();
    // All or nothing: the module state (RNGs) and the optimizer validate what they load; if
    // either refuses, both are put back as they were before anything else changes.
    let module_before = model.extra_state();
    let optimizer_before = optimizer.state();
    let applied = model
        .load_extra_state(&module_state)
        .and_then(|()| optimizer.load_state(&opt_state));
    if let Err(e) = applied {
        let restored = model
            .load_extra_state(&module_before)
            .and_then(|()| optimizer.load_state(&optimizer_before));
        debug_assert!(restored.is_ok(), "a module's own state reloads");
        return Err(bad(e.to_string()));
    }
    copy_into(&params, &values)?;
    Ok(state)
}

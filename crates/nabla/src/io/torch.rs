//! PyTorch interop for MLPs: a model's weights as the state dict of a PyTorch
//! `nn.Sequential(nn.Linear, activation, nn.Linear, …, nn.Linear)`, and back.
//!
//! nabla stores a `Linear` weight as `[in, out]` (`O = X·W + b`); `nn.Linear` stores `[out, in]`
//! and computes `x @ W.T + b`. Export transposes; import transposes back. In the `Sequential`,
//! linear layer `k` is module `2k` and its activation module `2k + 1` (dropout, an identity at
//! inference, is not exported), so the names are `0.weight`, `0.bias`, `2.weight`, ….

use std::collections::BTreeMap;
use std::path::Path;

use super::{read_tensor_file, write_tensor_file};
use crate::error::{Error, Result};
use crate::nn::{Activation, Mlp, MlpConfig, Module};
use crate::tensor::shape::fmt_shape;
use crate::tensor::Tensor;

/// The `format` metadata of an exported state dict.
pub const TORCH_FORMAT: &str = "pytorch-state-dict";

/// The PyTorch module an activation corresponds to, as Python source.
pub fn torch_module(a: Activation) -> String {
    match a {
        Activation::Relu => "nn.ReLU()".into(),
        Activation::LeakyRelu(s) => format!("nn.LeakyReLU({s})"),
        Activation::Sigmoid => "nn.Sigmoid()".into(),
        Activation::Tanh => "nn.Tanh()".into(),
        Activation::Gelu => "nn.GELU(approximate=\"tanh\")".into(),
        Activation::Softplus => "nn.Softplus()".into(),
        Activation::Identity => "nn.Identity()".into(),
    }
}

/// The `nn.Sequential(...)` expression that the exported state dict loads into.
pub fn torch_sequential(config: &MlpConfig) -> String {
    let n = config.sizes.len().saturating_sub(1);
    let mut parts = Vec::new();
    for (k, w) in config.sizes.windows(2).enumerate() {
        parts.push(format!("nn.Linear({}, {})", w[0], w[1]));
        if k + 1 < n {
            parts.push(torch_module(config.activation));
        }
    }
    format!("nn.Sequential({})", parts.join(", "))
}

/// The linear layers' `(weight [in, out], bias [out])`, in order (`op` names the caller in
/// errors).
pub(super) fn linear_layers(
    model: &Mlp<f32>,
    op: &'static str,
) -> Result<Vec<(Tensor<f32>, Tensor<f32>)>> {
    let params = model.named_parameters();
    let mut layers = Vec::new();
    for pair in params.chunks(2) {
        match pair {
            [(wn, w), (bn, b)] if wn.ends_with(".weight") && bn.ends_with(".bias") => {
                layers.push((w.clone(), b.clone()))
            }
            _ => {
                return Err(Error::arg(
                    op,
                    format!(
                        "parameters {:?} are not (weight, bias) pairs",
                        pair.iter().map(|(n, _)| n).collect::<Vec<_>>()
                    ),
                ))
            }
        }
    }
    Ok(layers)
}

/// Writes `model` as a PyTorch `nn.Sequential` state dict (safetensors; weights `[out, in]`,
/// names `0.weight`, `0.bias`, `2.weight`, …). The metadata holds `format`
/// (`pytorch-state-dict`), `architecture` (`784-512-256-10`), `activation`, `torch_module`
/// (the `nn.Sequential(...)` to load it into), and `extra` (e.g. the input normaliser).
///
/// In Python: `model = eval(meta["torch_module"], {"nn": torch.nn})`, then
/// `model.load_state_dict(safetensors.torch.load_file(path))`.
///
/// ```
/// use std::collections::BTreeMap;
/// use nabla::io::{export_torch, import_torch};
/// use nabla::nn::{Activation, Mlp, MlpConfig, Module};
/// use nabla::Tensor;
/// let model = Mlp::<f32>::new(&MlpConfig::new(&[4, 8, 3])).unwrap();
/// let path = std::env::temp_dir().join("nabla_doc_torch.safetensors");
/// export_torch(&model, &BTreeMap::new(), &path).unwrap();
/// let back = import_torch(&path, None, Activation::Relu).unwrap();   // sizes from the shapes
/// let x = Tensor::<f32>::randn(&[2, 4], 0.0, 1.0, 0).unwrap();
/// assert_eq!(back.forward(&x).unwrap().to_vec().unwrap(), model.forward(&x).unwrap().to_vec().unwrap());
/// ```
pub fn export_torch(
    model: &Mlp<f32>,
    extra: &BTreeMap<String, String>,
    path: impl AsRef<Path>,
) -> Result<()> {
    let config = model.config();
    let mut tensors = Vec::new();
    for (k, (w, b)) in linear_layers(model, "export_torch")?
        .into_iter()
        .enumerate()
    {
        tensors.push((format!("{}.weight", 2 * k), w.t()?.contiguous()?));
        tensors.push((format!("{}.bias", 2 * k), b));
    }
    let arch: Vec<String> = config.sizes.iter().map(|s| s.to_string()).collect();
    let mut meta = extra.clone();
    meta.insert("format".into(), TORCH_FORMAT.into());
    meta.insert("architecture".into(), arch.join("-"));
    meta.insert("activation".into(), config.activation.to_string());
    meta.insert("torch_module".into(), torch_sequential(config));
    write_tensor_file(path.as_ref(), &tensors, &meta)
}

/// A module's weight and bias as found in a state dict.
type WeightBias = (Option<Tensor<f32>>, Option<Tensor<f32>>);

/// Splits `prefix.N.weight` into `(N, "weight")`.
fn layer_index(name: &str) -> Option<(usize, &str)> {
    let (rest, kind) = name.rsplit_once('.')?;
    let index = rest.rsplit('.').next()?.parse().ok()?;
    Some((index, kind))
}

/// Reads a PyTorch state dict of an `nn.Sequential` of `nn.Linear` layers (and parameter-free
/// activations) into a nabla [`Mlp`] with `activation` between the layers. Names may carry a
/// prefix (`layers.0.weight`, `model.net.2.bias`); weights are `[out, in]`, f32. The layer
/// sizes come from the shapes; `arch`, when given, must agree with them. Errors name the file
/// and the tensor: a missing bias, a chain whose sizes do not connect, a tensor that is not a
/// linear layer's, a non-f32 dtype.
pub fn import_torch(
    path: impl AsRef<Path>,
    arch: Option<&[usize]>,
    activation: Activation,
) -> Result<Mlp<f32>> {
    let path = path.as_ref();
    let file = read_tensor_file(path)?;
    let bad = |msg: String| Error::arg("import_torch", format!("{}: {msg}", path.display()));
    if file.metadata.get("format").map(String::as_str) == Some(super::WEIGHTS_FORMAT) {
        return Err(bad(
            "this is a nabla model file (weights [in, out]), not a PyTorch state dict: use it \
             as it is, or convert it with `nabla export --format torch`"
                .into(),
        ));
    }
    if let Some((name, (dtype, _))) = file.other.iter().next() {
        return Err(bad(format!(
            "tensor '{name}' is {dtype}; only F32 state dicts are read"
        )));
    }
    if let Some(name) = file.f64.keys().next() {
        return Err(bad(format!(
            "tensor '{name}' is F64; save the state dict as float32"
        )));
    }
    let mut layers: BTreeMap<usize, WeightBias> = BTreeMap::new();
    for (name, t) in &file.f32 {
        let slot = layers.entry(match layer_index(name) {
            Some((i, "weight" | "bias")) => i,
            _ => {
                return Err(bad(format!(
                    "tensor '{name}' is not a linear layer's weight or bias"
                )))
            }
        });
        let entry = slot.or_default();
        let field = if name.ends_with(".weight") {
            &mut entry.0
        } else {
            &mut entry.1
        };
        if field.replace(t.clone()).is_some() {
            return Err(bad(format!(
                "tensor '{name}': two tensors for the same module"
            )));
        }
    }
    if layers.is_empty() {
        return Err(bad("no tensors".into()));
    }
    let mut sizes: Vec<usize> = Vec::new();
    let mut params = Vec::new();
    for (i, (w, b)) in layers {
        let w = w.ok_or_else(|| bad(format!("module {i} has a bias but no weight")))?;
        let b = b.ok_or_else(|| {
            bad(format!(
                "module {i} has no bias (nabla's Linear layers always have one)"
            ))
        })?;
        let [out, inp] = w.shape() else {
            return Err(bad(format!(
                "{i}.weight is {}, not [out, in]",
                fmt_shape(w.shape())
            )));
        };
        if b.shape() != [*out] {
            return Err(bad(format!(
                "{i}.bias is {} for a weight {}",
                fmt_shape(b.shape()),
                fmt_shape(w.shape())
            )));
        }
        match sizes.last() {
            None => sizes.push(*inp),
            Some(&prev) if prev != *inp => {
                return Err(bad(format!(
                    "{i}.weight {} takes {inp} inputs but the previous layer gives {prev}",
                    fmt_shape(w.shape())
                )))
            }
            Some(_) => {}
        }
        sizes.push(*out);
        params.push((w.t()?.contiguous()?, b));
    }
    if let Some(arch) = arch {
        if arch != sizes.as_slice() {
            return Err(bad(format!(
                "the architecture {arch:?} was asked for, but the shapes give {sizes:?}"
            )));
        }
    }
    let mut config = MlpConfig::new(&sizes);
    config.activation = activation;
    let model = Mlp::<f32>::new(&config)?;
    let targets = model.named_parameters();
    for (pair, (w, b)) in targets.chunks(2).zip(&params) {
        for ((_, p), v) in pair.iter().zip([w, b]) {
            let src = v.to_vec()?;
            p.update_data(|d| d.copy_from_slice(&src))?;
        }
    }
    Ok(model)
}

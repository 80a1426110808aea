//! PyTorch interop: any [`Network`]'s weights as the state dict of the PyTorch
//! `nn.Sequential` that mirrors its spec (with the module's Python source in the metadata;
//! sequence layers — embeddings, layer norm, attention, transformer blocks, GPTs — as classes
//! that source defines, `torch_seq.rs`), and back; and plain PyTorch MLP state dicts into nabla.
//!
//! nabla stores a `Linear` weight as `[in, out]` (`O = X·W + b`); `nn.Linear` stores `[out, in]`
//! and computes `x @ W.T + b`. Export transposes; import transposes back. In the `Sequential`,
//! linear layer `k` is module `2k` and its activation module `2k + 1` (dropout, an identity at
//! inference, is not exported), so the names are `0.weight`, `0.bias`, `2.weight`, ….

use std::collections::BTreeMap;
use std::path::Path;

use super::{read_tensor_file, write_tensor_file};
use crate::error::{Error, Result};
use crate::nn::{
    named_state, spec_infer, Activation, LayerSpec, Mlp, MlpConfig, ModelSpec, Module, Network,
};
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

/// Writes `model` as a PyTorch state dict (safetensors) with `nn.Sequential` names: the
/// module of [`torch_source`] (`nn.Linear`, `nn.Conv2d`, `nn.BatchNorm2d`, … in the spec's
/// order; dropout, the identity at inference, left out) loads it with `load_state_dict`.
/// Linear weights are transposed to PyTorch's `[out, in]`. The metadata holds `format`
/// (`pytorch-state-dict`), `torch_module` (the `nn.Sequential(...)` expression),
/// `torch_source` (Python defining `model`), `model_spec`, `input_shape`, for MLPs
/// `architecture` and `activation`, and `extra` (e.g. the input's units and normaliser).
///
/// In Python: `ns = {}; exec(meta["torch_source"], ns); model = ns["model"]`, then
/// `model.load_state_dict(safetensors.torch.load_file(path))`.
///
/// ```
/// use std::collections::BTreeMap;
/// use nabla::io::{export_torch, import_torch_network};
/// use nabla::nn::{ModelSpec, Module};
/// use nabla::Tensor;
/// let spec = ModelSpec::from_json(r#"{"input": [1, 8, 8], "layers": [
///     {"type": "conv2d", "out_channels": 4, "kernel_size": 3},
///     {"type": "batch_norm2d"}, {"type": "relu"}, {"type": "flatten"},
///     {"type": "linear", "out_features": 3}]}"#)?;
/// let mut model = spec.build::<f32>()?;
/// model.set_training(false);
/// let path = std::env::temp_dir().join("nabla_doc_torch.safetensors");
/// export_torch(&model, &BTreeMap::new(), &path)?;
/// let back = import_torch_network(&path)?;
/// let x = Tensor::<f32>::randn(&[2, 64], 0.0, 1.0, 0)?;
/// assert_eq!(back.forward(&x)?.to_vec()?, model.forward(&x)?.to_vec()?);
/// # Ok::<(), nabla::Error>(())
/// ```
pub fn export_torch<M: AsRef<Network<f32>> + ?Sized>(
    model: &M,
    extra: &BTreeMap<String, String>,
    path: impl AsRef<Path>,
) -> Result<()> {
    let model = model.as_ref();
    let spec = model.spec();
    let tensors = torch_state(model)?;
    let mut meta = extra.clone();
    meta.insert("format".into(), TORCH_FORMAT.into());
    if let Some(mlp) = spec.as_mlp() {
        let arch: Vec<String> = mlp.sizes.iter().map(|s| s.to_string()).collect();
        meta.insert("architecture".into(), arch.join("-"));
        meta.insert("activation".into(), mlp.activation.to_string());
    }
    meta.insert("torch_module".into(), torch_expression(spec)?);
    meta.insert("torch_source".into(), torch_source(spec)?);
    meta.insert("model_spec".into(), spec.to_json());
    meta.insert("input_shape".into(), format!("{:?}", spec.input));
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

/// The Python class a residual block exports as (`x + inner(x)`, its body `self.inner`).
const RESIDUAL_CLASS: &str = "class Residual(nn.Module):
    def __init__(self, *layers):
        super().__init__()
        self.inner = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.inner(x)
";

fn torch_pair(p: (usize, usize)) -> String {
    format!("({}, {})", p.0, p.1)
}

/// The PyTorch side of a spec: the module expressions, whether a residual block is among them,
/// and each layer with tensors as (nabla's name prefix, PyTorch's, linear?). Dropout (the
/// identity at inference) is left out, so PyTorch's indices skip it.
#[derive(Default)]
struct TorchWalk {
    parts: Vec<String>,
    residual: bool,
    /// A sequence layer is among them (the source defines their classes).
    sequence: bool,
    names: torch_seq::Names,
}

/// Walks `layers` (nabla names under `at`, PyTorch's under `torch_at`) whose first takes `shape`.
fn torch_layers(
    layers: &[LayerSpec],
    shape: &[usize],
    at: &str,
    torch_at: &str,
) -> Result<TorchWalk> {
    let mut shape = shape.to_vec();
    let mut w = TorchWalk::default();
    let mut k = 0;
    for (i, l) in layers.iter().enumerate() {
        let name = format!("{at}.{i}");
        let out = spec_infer(l, &shape, &name)?.0;
        if matches!(l, LayerSpec::Dropout { .. }) {
            shape = out;
            continue;
        }
        let tname = if torch_at.is_empty() {
            k.to_string()
        } else {
            format!("{torch_at}.{k}")
        };
        k += 1;
        if matches!(
            l,
            LayerSpec::Linear { .. }
                | LayerSpec::Conv2d { .. }
                | LayerSpec::Conv1d { .. }
                | LayerSpec::BatchNorm1d { .. }
                | LayerSpec::BatchNorm2d { .. }
        ) {
            w.names.push((
                name.clone(),
                tname.clone(),
                matches!(l, LayerSpec::Linear { .. }),
            ));
        }
        let py_bool = |b: bool| if b { "True" } else { "False" };
        w.parts.push(match l {
            LayerSpec::Linear { out_features, bias } => format!(
                "nn.Linear({}, {out_features}{})",
                shape[shape.len() - 1],
                if *bias { "" } else { ", bias=False" }
            ),
            LayerSpec::Conv2d {
                out_channels,
                kernel_size,
                stride,
                padding,
                dilation,
                groups,
                bias,
            } => format!(
                "nn.Conv2d({}, {out_channels}, kernel_size={}, stride={}, padding={}, dilation={}, groups={groups}, bias={})",
                shape[1],
                torch_pair(*kernel_size),
                torch_pair(*stride),
                torch_pair(*padding),
                torch_pair(*dilation),
                py_bool(*bias)
            ),
            LayerSpec::Conv1d {
                out_channels,
                kernel_size,
                stride,
                padding,
                dilation,
                groups,
                bias,
            } => format!(
                "nn.Conv1d({}, {out_channels}, kernel_size={kernel_size}, stride={stride}, padding={padding}, dilation={dilation}, groups={groups}, bias={})",
                shape[1],
                py_bool(*bias)
            ),
            LayerSpec::MaxPool2d {
                kernel_size,
                stride,
                padding,
            } => format!(
                "nn.MaxPool2d(kernel_size={}, stride={}, padding={})",
                torch_pair(*kernel_size),
                torch_pair(stride.unwrap_or(*kernel_size)),
                torch_pair(*padding)
            ),
            LayerSpec::AvgPool2d {
                kernel_size,
                stride,
                padding,
            } => format!(
                "nn.AvgPool2d(kernel_size={}, stride={}, padding={}, count_include_pad=True)",
                torch_pair(*kernel_size),
                torch_pair(stride.unwrap_or(*kernel_size)),
                torch_pair(*padding)
            ),
            LayerSpec::BatchNorm1d { momentum, eps } => {
                format!("nn.BatchNorm1d({}, eps={eps:?}, momentum={momentum:?})", shape[1])
            }
            LayerSpec::BatchNorm2d { momentum, eps } => {
                format!("nn.BatchNorm2d({}, eps={eps:?}, momentum={momentum:?})", shape[1])
            }
            LayerSpec::Flatten => "nn.Flatten()".into(),
            LayerSpec::Sequential { layers } => {
                let inner = torch_layers(layers, &shape, &name, &tname)?;
                w.residual |= inner.residual;
                w.sequence |= inner.sequence;
                w.names.extend(inner.names);
                format!("nn.Sequential({})", inner.parts.join(", "))
            }
            LayerSpec::Residual { layers } => {
                let inner = torch_layers(layers, &shape, &format!("{name}.inner"), &format!("{tname}.inner"))?;
                w.residual = true;
                w.sequence |= inner.sequence;
                w.names.extend(inner.names);
                format!("Residual({})", inner.parts.join(", "))
            }
            seq if seq.is_sequence_layer() => {
                let (module, names) = torch_seq::sequence_part(seq, &name, &tname, &shape)?;
                w.sequence = true;
                w.names.extend(names);
                module
            }
            other => torch_module(other.as_activation()?),
        });
        shape = out;
    }
    Ok(w)
}

/// The `nn.Sequential(...)` expression of a model spec (with `Residual(...)` for residual
/// blocks: see [`torch_source`]).
pub fn torch_expression(spec: &ModelSpec) -> Result<String> {
    let mut shape = vec![1];
    shape.extend(&spec.input);
    let w = torch_layers(&spec.layers, &shape, "layers", "")?;
    Ok(format!("nn.Sequential({})", w.parts.join(", ")))
}

/// Python source that defines `model`, the PyTorch module the state dict of
/// [`export_torch`] loads into (`exec(source, ns); model = ns["model"]`). It takes
/// `[N, …input]` tensors (e.g. `[N, 1, 28, 28]`).
pub fn torch_source(spec: &ModelSpec) -> Result<String> {
    let mut shape = vec![1];
    shape.extend(&spec.input);
    let w = torch_layers(&spec.layers, &shape, "layers", "")?;
    let mut src = String::from("import torch.nn as nn\n\n");
    if w.residual {
        src += RESIDUAL_CLASS;
        src += "\n";
    }
    if w.sequence {
        src += torch_seq::SEQUENCE_CLASSES;
        src += "\n";
    }
    src += &format!(
        "model = nn.Sequential(\n    {},\n)\n",
        w.parts.join(",\n    ")
    );
    Ok(src)
}

/// Every tensor of `model` under its PyTorch name (linear weights transposed to `[out, in]`).
fn torch_state(model: &Network<f32>) -> Result<Vec<(String, Tensor<f32>)>> {
    let spec = model.spec();
    let mut shape = vec![1];
    shape.extend(&spec.input);
    let walk = torch_layers(&spec.layers, &shape, "layers", "")?;
    let state: BTreeMap<String, Tensor<f32>> = named_state(model).into_iter().collect();
    let mut out = Vec::new();
    for (nabla, torch, linear) in &walk.names {
        for leaf in [
            "weight",
            "bias",
            "running_mean",
            "running_var",
            "num_batches_tracked",
        ] {
            if let Some(t) = state.get(&format!("{nabla}.{leaf}")) {
                let t = if *linear && leaf == "weight" {
                    t.t()?.contiguous()?
                } else {
                    t.clone()
                };
                out.push((format!("{torch}.{leaf}"), t));
            }
        }
    }
    if out.len() != state.len() {
        return Err(Error::arg(
            "export_torch",
            format!(
                "{} of the network's {} tensors have a PyTorch name",
                out.len(),
                state.len()
            ),
        ));
    }
    Ok(out)
}

/// Reads a state dict written by [`export_torch`] (its metadata holds the model spec) back
/// into the [`Network`] it came from; names and shapes are checked, all or nothing.
/// `num_batches_tracked` stored as an integer by PyTorch reads as 0 (inference does not use it).
pub fn import_torch_network(path: impl AsRef<Path>) -> Result<Network<f32>> {
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
    let spec = file
        .metadata
        .get("model_spec")
        .ok_or_else(|| bad("its metadata has no model_spec (not written by `nabla export --format torch`); give the MLP's sizes instead".into()))?;
    let spec = ModelSpec::from_json(spec).map_err(|e| bad(e.to_string()))?;
    let net = spec.build::<f32>().map_err(|e| bad(e.to_string()))?;
    let mut shape = vec![1];
    shape.extend(&spec.input);
    let walk = torch_layers(&spec.layers, &shape, "layers", "")?;
    let state: BTreeMap<String, Tensor<f32>> = named_state(&net).into_iter().collect();
    let mut values = Vec::new();
    for (nabla, torch, linear) in &walk.names {
        for leaf in [
            "weight",
            "bias",
            "running_mean",
            "running_var",
            "num_batches_tracked",
        ] {
            let Some(target) = state.get(&format!("{nabla}.{leaf}")) else {
                continue;
            };
            let tname = format!("{torch}.{leaf}");
            let v = match file.f32.get(&tname) {
                Some(t) if *linear && leaf == "weight" => t.t()?.contiguous()?,
                Some(t) => t.clone(),
                None if leaf == "num_batches_tracked" && file.other.contains_key(&tname) => {
                    Tensor::zeros(&[])?
                }
                None => return Err(bad(format!("tensor '{tname}' is missing"))),
            };
            if v.shape() != target.shape() {
                return Err(bad(format!(
                    "tensor '{tname}' is {}, the model needs {}",
                    fmt_shape(v.shape()),
                    fmt_shape(target.shape())
                )));
            }
            values.push((target.clone(), v));
        }
    }
    for (target, v) in values {
        let src = v.to_vec()?;
        target.update_data(|d| d.copy_from_slice(&src))?;
    }
    let mut net = net;
    net.set_training(false);
    Ok(net)
}

#[path = "torch_seq.rs"]
mod torch_seq;

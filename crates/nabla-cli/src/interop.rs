//! `nabla export` and `nabla import`: presentation over `nabla::io`'s PyTorch and ONNX
//! converters.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use nabla::data::Normalization;
use nabla::io::{
    export_onnx, export_torch, import_torch, import_torch_network, read_tensor_file, ModelCard,
    OnnxHead, OnnxOptions, ONNX_OPSET,
};
use nabla::nn::{Activation, ModelSpec, Module, Network};

use crate::args::{ExportArgs, ExportFormat, ImportArgs, ImportFormat, Task};
use crate::model::{load_model, save_model, ModelMeta};

/// Refuses to write `out` over one of `inputs` (compared as canonical paths), over an existing
/// file without `overwrite`, or where it names a directory.
pub fn check_output(out: &Path, inputs: &[&Path], overwrite: bool) -> Result<()> {
    let shown = out.display();
    if out.is_dir() || out.as_os_str().to_string_lossy().ends_with('/') {
        bail!("--out {shown} is a directory; give a file name in it");
    }
    if let Ok(o) = std::fs::canonicalize(out) {
        for i in inputs {
            if std::fs::canonicalize(i).is_ok_and(|c| c == o) {
                bail!(
                    "--out {shown} is the input file {}: writing it would destroy the model; give another file",
                    i.display()
                );
            }
        }
        if !overwrite {
            bail!("--out {shown} exists; pass --overwrite to replace it");
        }
    }
    Ok(())
}

/// `nabla export`: the model as a PyTorch state dict or an ONNX graph, with what a user of the
/// other framework needs (the input's units, the normaliser, the task and class names) in its
/// metadata; the ONNX graph does all the preprocessing itself.
pub fn export(args: &ExportArgs) -> Result<()> {
    check_output(&args.out, &[&args.checkpoint], args.overwrite)?;
    let (model, meta) = load_model(&args.checkpoint)?;
    let card = meta.card()?;
    let mut extra = card.usage_metadata();
    extra.remove("data");
    let shape = input_shape(model.spec());
    match args.format {
        ExportFormat::Torch => {
            export_torch(&model, &extra, &args.out)?;
            if meta.task == Task::Text {
                crate::outln!(
                    "wrote {}: a state dict for {} (Python source in the metadata: \
                     'torch_source'); the module takes token ids [batch, positions] (at most \
                     {}; the vocabulary, id order, is the metadata's 'class_names') and returns \
                     each position's next-character logits",
                    args.out.display(),
                    nabla::io::torch_expression(model.spec())?,
                    model.spec().input.first().copied().unwrap_or(0)
                );
                return Ok(());
            }
            crate::outln!(
                "wrote {}: a state dict for {} (Python source in the metadata: 'torch_source'), \
                 input {shape}; the module takes prepared inputs — the metadata's input_scale and \
                 normalizer turn the data file's units into them ({})",
                args.out.display(),
                nabla::io::torch_expression(model.spec())?,
                card.input_units()
            );
        }
        ExportFormat::Onnx => {
            let head = match meta.task {
                Task::Classification | Task::Text => OnnxHead::Classification,
                Task::Regression => OnnxHead::Regression,
            };
            let options = OnnxOptions {
                input_scale: meta.input_scale,
                normalizer: Some(meta.normalizer.clone()),
                head,
                metadata: extra,
            };
            export_onnx(&model, &options, &args.out)?;
            if meta.task == Task::Text {
                crate::outln!(
                    "wrote {}: ONNX opset {ONNX_OPSET}, input 'input' int64 token ids [batch, \
                     positions] (at most {} positions; the vocabulary, id order, is the \
                     metadata's 'class_names'), outputs 'logits' and 'probabilities' [batch, \
                     positions, {}]: each position's next-character distribution",
                    args.out.display(),
                    model.spec().input.first().copied().unwrap_or(0),
                    meta.class_names.len()
                );
                return Ok(());
            }
            let outputs = match head {
                OnnxHead::Classification => "'logits' and 'probabilities'",
                OnnxHead::Regression => "'predictions'",
            };
            crate::outln!(
                "wrote {}: ONNX opset {ONNX_OPSET}, input 'input' {shape} in the data file's \
                 units ({}; all preprocessing is in the graph), outputs {outputs}",
                args.out.display(),
                card.input_units()
            );
        }
    }
    Ok(())
}

/// `[batch, 1, 28, 28]`.
pub fn input_shape(spec: &ModelSpec) -> String {
    let dims: Vec<String> = spec.input.iter().map(|d| d.to_string()).collect();
    format!("[batch, {}]", dims.join(", "))
}

/// `nabla import`: a PyTorch state dict as a nabla model file. A file written by `nabla
/// export --format torch` comes back as the model it was (spec, input units, normaliser,
/// task, class names from its metadata); a plain PyTorch MLP state dict is read with the
/// sizes of its weights and `--activation`, inputs used as they are.
pub fn import(args: &ImportArgs) -> Result<()> {
    check_output(&args.out, &[&args.state_dict], args.overwrite)?;
    let md = read_tensor_file(&args.state_dict)?.metadata;
    let arch = match &args.arch {
        None => None,
        Some(text) => Some(
            text.split('-')
                .map(|s| s.trim().parse::<usize>())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|_| anyhow!("--arch {text}: expected sizes like 784-512-256-10"))?,
        ),
    };
    let model: Network = match args.format {
        ImportFormat::Torch if md.contains_key("model_spec") => {
            let net = import_torch_network(&args.state_dict)?;
            if let Some(a) = &arch {
                let sizes = net.spec().as_mlp().map(|m| m.sizes);
                if sizes.as_ref() != Some(a) {
                    bail!(
                        "--arch {}: {} records another model ({})",
                        args.arch.as_deref().unwrap_or(""),
                        args.state_dict.display(),
                        net.describe()
                    );
                }
            }
            net
        }
        ImportFormat::Torch => {
            let activation: Activation = args.activation.parse()?;
            import_torch(&args.state_dict, arch.as_deref(), activation)?.into_network()
        }
    };
    // The card the export wrote (without a spec of its own: the model's).
    let mut with_spec = md.clone();
    with_spec.insert("model_spec".into(), model.spec().to_json());
    let what = args.state_dict.display().to_string();
    let mut card = ModelCard::from_metadata(&with_spec, &what)?;
    card.extra.retain(|k, _| k == "data");
    if card.dataset.is_empty() {
        card.dataset = "imported".into();
    }
    let mut meta = ModelMeta::from_card(&args.state_dict, card)?;
    if let Some(t) = args.task {
        meta.task = t;
    }
    let outputs = model.spec().output_shape(1)?.last().copied().unwrap_or(0);
    if meta.task == Task::Regression {
        meta.class_names.clear();
    } else if meta.class_names.len() != outputs {
        meta.class_names = (0..outputs).map(|i| i.to_string()).collect();
    }
    meta.data = None;
    save_model(&args.out, &model, &meta)?;
    let normalizer = match meta.normalizer.mode {
        Normalization::None => "inputs are used as they are: no normaliser".to_string(),
        mode => format!("with the file's {mode:?} input normaliser"),
    };
    crate::outln!(
        "wrote {}: {}, {:?} ({normalizer})",
        args.out.display(),
        model.describe(),
        meta.task
    );
    Ok(())
}

//! `nabla export` and `nabla import`: presentation over `nabla::io`'s PyTorch and ONNX
//! converters.

use anyhow::{anyhow, Result};
use nabla::data::{Normalization, Normalizer};
use nabla::io::{
    export_onnx, export_torch, import_torch, read_tensor_file, torch_sequential, OnnxHead,
    OnnxOptions, ONNX_OPSET,
};
use nabla::nn::{Activation, MlpConfig};

use crate::args::{ExportArgs, ExportFormat, ImportArgs, ImportFormat, Task};
use crate::model::{load_model, parse_field, save_model, ModelMeta};

/// `nabla export`: the model as a PyTorch state dict or an ONNX graph, with what a user of the
/// other framework needs (the normaliser, the task and class names) in its metadata.
pub fn export(args: &ExportArgs) -> Result<()> {
    let (model, meta) = load_model(&args.checkpoint)?;
    let extra = meta.usage_metadata()?;
    let features = model.config().sizes[0];
    match args.format {
        ExportFormat::Torch => {
            export_torch(&model, &extra, &args.out)?;
            println!(
                "wrote {}: load it into {} (see the README for the Python lines)",
                args.out.display(),
                torch_sequential(model.config())
            );
        }
        ExportFormat::Onnx => {
            let head = match meta.task {
                Task::Classification => OnnxHead::Classification,
                Task::Regression => OnnxHead::Regression,
            };
            let options = OnnxOptions {
                normalizer: Some(meta.normalizer.clone()),
                head,
                metadata: extra,
            };
            export_onnx(&model, &options, &args.out)?;
            let outputs = match head {
                OnnxHead::Classification => "'logits' and 'probabilities'",
                OnnxHead::Regression => "'predictions'",
            };
            println!(
                "wrote {}: ONNX opset {ONNX_OPSET}, input 'input' [batch, {features}] of raw \
                 features (the normaliser is in the graph), outputs {outputs}",
                args.out.display()
            );
        }
    }
    Ok(())
}

/// The model metadata `nabla export --format torch` stores, where the file has it.
fn exported_meta(
    path: &std::path::Path,
    config: MlpConfig,
    task: Option<Task>,
) -> Result<ModelMeta> {
    let outputs = *config.sizes.last().unwrap_or(&0);
    let md = read_tensor_file(path)?.metadata;
    let file_task: Option<Task> = parse_field(path, &md, "task")?;
    let task = task.or(file_task).unwrap_or(Task::Classification);
    let normalizer = parse_field(path, &md, "normalizer")?.unwrap_or(Normalizer {
        mode: Normalization::None,
        mean: Vec::new(),
        std: Vec::new(),
    });
    let names: Option<Vec<String>> = parse_field(path, &md, "class_names")?;
    let class_names = match (task, names) {
        (Task::Regression, _) => Vec::new(),
        (Task::Classification, Some(n)) if n.len() == outputs => n,
        (Task::Classification, _) => (0..outputs).map(|i| i.to_string()).collect(),
    };
    Ok(ModelMeta {
        config,
        task,
        normalizer,
        class_names,
        dataset: md
            .get("dataset")
            .cloned()
            .unwrap_or_else(|| "imported".to_string()),
        data: None,
    })
}

/// `nabla import`: a PyTorch MLP state dict as a nabla model file. The normaliser, task and
/// class names come from the file's metadata when `nabla export` wrote it; otherwise inputs
/// are used as they are.
pub fn import(args: &ImportArgs) -> Result<()> {
    let arch = match &args.arch {
        None => None,
        Some(text) => Some(
            text.split('-')
                .map(|s| s.trim().parse::<usize>())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|_| anyhow!("--arch {text}: expected sizes like 784-512-256-10"))?,
        ),
    };
    let activation: Activation = args.activation.parse()?;
    let model = match args.format {
        ImportFormat::Torch => import_torch(&args.state_dict, arch.as_deref(), activation)?,
    };
    let meta = exported_meta(&args.state_dict, model.config().clone(), args.task)?;
    save_model(&args.out, &model, &meta)?;
    let normalizer = match meta.normalizer.mode {
        Normalization::None => "inputs are used as they are: no normaliser".to_string(),
        mode => format!("with the file's {mode:?} input normaliser"),
    };
    println!(
        "wrote {}: Mlp {:?}, {}, {:?} ({normalizer})",
        args.out.display(),
        model.config().sizes,
        model.config().activation,
        meta.task
    );
    Ok(())
}

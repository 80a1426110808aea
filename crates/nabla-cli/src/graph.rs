//! `nabla graph`: the recorded graph of one training step of a model file, as DOT or JSON.

use anyhow::{bail, Context, Result};
use nabla::autograd::{scope, Inspection};
use nabla::data::TaskData;
use nabla::nn::loss::{cross_entropy, mse, Reduction, Target};
use nabla::nn::Module;
use nabla::rng::Rng;
use nabla::Tensor;
use serde_json::json;

use crate::args::{GraphArgs, GraphFormat, Task};
use crate::dataset;
use crate::model::{load_model, ModelMeta};

/// Most rows `--batch` takes.
pub const MAX_BATCH: usize = 100_000;

/// The batch the graph is recorded on: the first rows of the model's training data
/// (normalised as in training), or seeded random inputs; and where it came from.
fn batch(meta: &ModelMeta, rows: usize, width: usize) -> Result<(Tensor<f32>, TaskData, String)> {
    let mut why = "the model file records no data set".to_string();
    if let Some(data_args) = &meta.data {
        match dataset::load(data_args) {
            Err(e) => why = format!("its data set does not load: {e:#}"),
            Ok(data) if data.train.features() != width => {
                why = format!(
                    "its data set {} has {} features, the model takes {width}",
                    data.name,
                    data.train.features()
                )
            }
            Ok(data) if data.train.len() < rows => bail!(
                "--batch {rows}: the training set of {} has {} rows; use at most {}",
                data.name,
                data.train.len(),
                data.train.len()
            ),
            Ok(data) => {
                let idx: Vec<usize> = (0..rows).collect();
                let sub = data.train.subset(&idx)?.normalized(&meta.normalizer)?;
                let x = sub.x().clone();
                return Ok((
                    x,
                    sub,
                    format!("the first {rows} training rows of {}", data.name),
                ));
            }
        }
    }
    let mut rng = Rng::new(0);
    let x: Vec<f32> = (0..rows * width).map(|_| rng.normal() as f32).collect();
    let x = Tensor::from_vec(x, &[rows, width])?;
    let outputs = meta.spec.output_shape(1)?.last().copied().unwrap_or(1);
    let data = match meta.task {
        Task::Text => bail!("nabla graph of a language model is not supported yet"),
        Task::Classification => TaskData::Class(nabla::data::Classification {
            x: x.clone(),
            labels: (0..rows).map(|i| i % outputs).collect(),
            classes: outputs,
        }),
        Task::Regression => TaskData::Reg(nabla::data::Regression {
            x: x.clone(),
            y: Tensor::zeros(&[rows, outputs])?,
        }),
    };
    Ok((x, data, format!("{rows} random normal inputs ({why})")))
}

/// Runs `nabla graph`.
pub fn run(args: &GraphArgs) -> Result<()> {
    if args.batch == 0 || args.batch > MAX_BATCH {
        bail!("--batch {}: use 1 to {MAX_BATCH} rows", args.batch);
    }
    let (model, meta) = load_model(&args.checkpoint)?;
    let width = meta.spec.input_features();
    let (x, data, source) = batch(&meta, args.batch, width)?;
    let out = model.forward(&x)?;
    let loss = scope("loss", || match &data {
        TaskData::Class(c) => cross_entropy(&out, Target::Classes(&c.labels), 0.0, Reduction::Mean),
        TaskData::Reg(r) => mse(&out, &r.y, Reduction::Mean),
        TaskData::Text(_) => unreachable!("batch() refuses language models"),
    })?;
    let mut names = model.named_parameters();
    names.push(("input".into(), x));
    let mut inspection = Inspection::new(&loss, &names)?;
    inspection.run()?;
    let report = inspection.report();
    let text = match args.format {
        GraphFormat::Dot => report.to_dot(),
        GraphFormat::Json => {
            let mut v = serde_json::to_value(report)?;
            v["batch"] = json!(args.batch);
            v["loss"] = json!(loss.item()?);
            v["inputs"] = json!(source);
            serde_json::to_string_pretty(&v)?
        }
    };
    nabla::io::write_atomic(&args.out, text.as_bytes())
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let t = &report.totals;
    crate::outln!(
        "{}: {} ops on {source}; kept for backward {} bytes, a no_grad forward holds at most {} \
         bytes at once; leaves {} bytes",
        args.out.display(),
        t.ops,
        t.saved_bytes,
        t.no_grad_peak_bytes,
        t.leaf_bytes
    );
    Ok(())
}

//! `nabla eval`, `nabla predict`, `nabla info`, `nabla gradcheck`.

use anyhow::{bail, Context, Result};
use nabla::data::csv::{read_csv, Header, TargetColumn};
use nabla::data::idx::read_idx;
use nabla::io::read_tensor_file;
use nabla::nn::loss::{predict_class, predict_proba};
use nabla::nn::Predictor;
use nabla::testing::run_op_gradchecks;
use nabla::Tensor;
use serde_json::json;

use crate::args::{DataArgs, DatasetName, EvalArgs, InfoArgs, LossName, PredictArgs, Task};
use crate::dataset::{self, target_column};
use crate::metrics::{evaluate, report};
use crate::model::{load_model, ModelMeta};
use crate::runconfig::{self, spelled};

/// The model takes `features` values per sample, or says what does not fit.
fn check_width(meta: &ModelMeta, features: usize, what: &str, csv: bool) -> Result<()> {
    let want = meta.spec.input_features();
    if features != want {
        let hint = if csv && features == want + 1 {
            " (is the target column in the file? name it with --target-column, or drop it)"
        } else {
            ""
        };
        bail!(
            "{what} has {features} features per sample, the model expects {want} (input {}){hint}",
            crate::interop::input_shape(&meta.spec)
        );
    }
    Ok(())
}

/// The model's outputs: classes or targets.
fn model_outputs(meta: &ModelMeta) -> Result<usize> {
    Ok(meta.spec.output_shape(1)?.last().copied().unwrap_or(0))
}

/// The data flags `eval` uses: the given data set's, or the model file's recorded ones with
/// the given flags (points, noise, seed, …) over them; flags that do not apply are errors.
fn eval_data(args: &EvalArgs, given: &[String], meta: &ModelMeta) -> Result<DataArgs> {
    let chosen = &args.data;
    let has = |id: &str| given.iter().any(|g| g == id);
    let Some(recorded) = meta
        .data
        .as_ref()
        .filter(|_| chosen.dataset.is_none() && chosen.data_dir.is_none() && chosen.csv.is_none())
    else {
        return Ok(chosen.clone());
    };
    let mut d = recorded.clone();
    let kind = d.dataset.unwrap_or(DatasetName::Spiral);
    let synthetic = matches!(
        kind,
        DatasetName::Spiral | DatasetName::Moons | DatasetName::Circles | DatasetName::Sine
    );
    let csv = d.csv.is_some() || kind == DatasetName::Csv;
    let rules = [
        (
            "points",
            synthetic,
            "generated sets (spiral, moons, circles, sine)",
        ),
        (
            "noise",
            synthetic,
            "generated sets (spiral, moons, circles, sine)",
        ),
        ("outliers", kind == DatasetName::Sine, "--dataset sine"),
        ("test_fraction", csv, "--csv data"),
        ("target_column", csv, "--csv data"),
        ("task", csv, "--csv data"),
    ];
    for (id, applies, what) in rules {
        if has(id) && !applies {
            bail!(
                "{} applies only to {what}; the model's data set is {} (give --dataset to evaluate on another)",
                runconfig::flag(id),
                meta.dataset
            );
        }
    }
    if has("points") {
        d.points = chosen.points;
    }
    if has("noise") {
        d.noise = chosen.noise;
    }
    if has("outliers") {
        d.outliers = chosen.outliers;
    }
    if has("seed") {
        d.seed = chosen.seed;
    }
    if has("test_fraction") {
        d.test_fraction = chosen.test_fraction;
    }
    if has("target_column") {
        d.target_column = chosen.target_column.clone();
    }
    Ok(d)
}

/// `nabla eval`; `given` are the ids of the flags on the command line.
pub fn eval(args: &EvalArgs, given: &[String]) -> Result<()> {
    let (model, meta) = load_model(&args.checkpoint)?;
    // Without data flags, the data the model was trained on (recorded in the file).
    let data_args = eval_data(args, given, &meta)?;
    let data = dataset::load(&data_args)?;
    if data.task != meta.task {
        bail!(
            "the checkpoint is a {} model, the data set is {} ({})",
            spelled(&meta.task),
            spelled(&data.task),
            data.name
        );
    }
    let outputs = model_outputs(&meta)?;
    if data.outputs != outputs {
        let what = if meta.task == Task::Classification {
            "classes"
        } else {
            "targets"
        };
        bail!(
            "the model has {outputs} outputs ({} {what}), {} has {} {what}: it was not trained on these data",
            meta.dataset,
            data.name,
            data.outputs
        );
    }
    let mut normalized = if args.train_split {
        data.train
    } else {
        data.test
    };
    check_width(
        &meta,
        normalized.features(),
        &data.name,
        data_args.csv.is_some(),
    )?;
    normalized.normalize_in_place(&meta.normalizer)?; // (the raw features are not needed)
    let kind = match meta.task {
        Task::Classification | Task::Text => LossName::CrossEntropy,
        Task::Regression => LossName::Mse,
    }
    .into();
    let e = evaluate(&model, &normalized, kind)?;
    if args.json {
        crate::outln!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        let which = match (args.train_split, meta.task) {
            (true, _) => "train",
            (false, Task::Text) => "held-out",
            (false, _) => "test",
        };
        crate::outln!(
            "{} ({which} split) with {}",
            data.name,
            args.checkpoint.display()
        );
        if meta.task == Task::Text {
            crate::outln!("{}", text_report(&e));
        } else {
            crate::out!("{}", report(&e, &meta.class_names));
        }
    }
    Ok(())
}

/// A language model's evaluation: loss per character in nats and bits, and how often the
/// most likely next character is the right one.
pub fn text_report(e: &nabla::train::Evaluation) -> String {
    format!(
        "windows {}\nloss {:.4} nats/char ({:.4} bits/char)\nnext-character accuracy {:.2}%",
        e.samples,
        e.loss,
        e.loss / std::f64::consts::LN_2,
        100.0 * e.accuracy.unwrap_or(f64::NAN)
    )
}

fn read_inputs(args: &PredictArgs) -> Result<Tensor<f32>> {
    let path = &args.input;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext.eq_ignore_ascii_case("csv") {
        let target = match &args.target_column {
            None => TargetColumn::None,
            Some(_) => target_column(&args.target_column),
        };
        return Ok(read_csv(path, &target, Header::Auto)?.features);
    }
    let arr = read_idx(path)?;
    let n = arr.dims[0];
    let d: usize = arr.dims[1..].iter().product();
    // In the file's units (0–255): the model card's scale applies them as in training.
    let x: Vec<f32> = arr.data.iter().map(|&p| p as f32).collect();
    Tensor::from_vec(x, &[n, d.max(1)])
        .with_context(|| format!("{}: cannot shape the inputs", path.display()))
}

/// `nabla predict`.
pub fn predict(args: &PredictArgs) -> Result<()> {
    let (model, meta) = load_model(&args.checkpoint)?;
    let x = read_inputs(args)?;
    let csv = args
        .input
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    check_width(&meta, x.shape()[1], &args.input.display().to_string(), csv)?;
    let x = meta.card()?.prepare(&x)?;
    if x.shape()[0] == 0 {
        bail!("{}: no rows to predict", args.input.display());
    }
    // In evaluation mode, with no graph, in batches (the library's `Predictor`).
    let out = Predictor::new(model).predict(&x)?;
    let n = out.shape()[0];
    let limit = args.limit.unwrap_or(n).min(n);
    if meta.task == Task::Regression {
        let v = out.to_vec()?;
        if args.json {
            crate::outln!("{}", json!({"predictions": &v[..limit]}));
        } else {
            crate::outln!("{:>6} {:>12}", "row", "prediction");
            for (i, p) in v.iter().take(limit).enumerate() {
                crate::outln!("{i:>6} {p:>12.5}");
            }
        }
        return Ok(());
    }
    let probs = predict_proba(&out)?;
    let classes = predict_class(&out)?;
    let k = out.shape()[1];
    let p = probs.to_vec()?;
    let logits = out.to_vec()?;
    let name = |c: usize| {
        meta.class_names
            .get(c)
            .cloned()
            .unwrap_or_else(|| c.to_string())
    };
    if args.json {
        let rows: Vec<_> = (0..limit)
            .map(|i| {
                json!({
                    "row": i,
                    "class": classes[i],
                    "name": name(classes[i]),
                    "probabilities": &p[i * k..(i + 1) * k],
                    "logits": &logits[i * k..(i + 1) * k],
                })
            })
            .collect();
        crate::outln!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        crate::out!("{:>6} {:>6} {:<14}", "row", "class", "name");
        for c in 0..k {
            crate::out!(" {:>7}", format!("p{c}"));
        }
        crate::outln!();
        for i in 0..limit {
            crate::out!("{i:>6} {:>6} {:<14}", classes[i], name(classes[i]));
            for c in 0..k {
                crate::out!(" {:>7.4}", p[i * k + c]);
            }
            crate::outln!();
        }
    }
    Ok(())
}

/// `nabla info`: what the file is; for a model file, each layer with its output shape and
/// parameters, and the input's units; for files nabla reads in other ways, the command to run.
pub fn info(args: &InfoArgs) -> Result<()> {
    let path = &args.checkpoint;
    let file = read_tensor_file(path)?;
    let md = &file.metadata;
    crate::outln!("{}", path.display());
    let described = file.describe();
    let total: usize = described
        .values()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    let format = md.get("format").map(String::as_str);
    let kind = match format {
        Some(nabla::io::TORCH_FORMAT) => {
            "a PyTorch state dict written by `nabla export --format torch`"
        }
        Some(nabla::io::WEIGHTS_FORMAT)
            if md.contains_key("model_spec") || md.contains_key("model_config") =>
        {
            "a nabla model file"
        }
        Some(nabla::io::WEIGHTS_FORMAT) => "nabla weights without a model description",
        Some(f) if f.contains("state") => "a nabla training checkpoint",
        _ => "a safetensors file",
    };
    crate::outln!("  {kind}; {} tensors, {total} values", described.len());
    let long = |v: &String| v.len() > 120;
    for (k, v) in md {
        if long(v) {
            crate::outln!("  {k}: ({} characters)", v.len());
        } else {
            crate::outln!("  {k}: {v}");
        }
    }
    for (name, (dtype, shape)) in &described {
        crate::outln!("  {name:<40} {dtype:<5} {shape:?}");
    }
    let shown = path.display();
    match format {
        Some(nabla::io::TORCH_FORMAT) => {
            crate::outln!(
                "\nto use it with nabla: nabla import --state-dict {shown} --out model.safetensors\n\
                 in PyTorch: ns = {{}}; exec(meta['torch_source'], ns); model = ns['model']; \
                 model.load_state_dict(safetensors.torch.load_file('{shown}'))"
            );
        }
        _ if md.contains_key("model_spec") || md.contains_key("model_config") => {
            let (model, meta) = load_model(path)?;
            crate::outln!("\n{}", model.summary(1)?);
            if meta.task == Task::Text {
                crate::outln!(
                    "a language model: input [batch, ≤ {}] character ids of its {}-character vocabulary\n\
                     to sample text: nabla generate --checkpoint {shown} [--prompt TEXT]",
                    meta.spec.input_features(),
                    meta.class_names.len()
                );
            } else {
                crate::outln!(
                    "input {} in the data file's units: {}",
                    crate::interop::input_shape(&meta.spec),
                    meta.card()?.input_units()
                );
            }
            crate::outln!(
                "to use it in PyTorch: nabla export --checkpoint {shown} --format torch --out FILE\n\
                 to serve it with ONNX Runtime: nabla export --checkpoint {shown} --format onnx --out FILE"
            );
        }
        _ => {}
    }
    Ok(())
}

/// `nabla gradcheck`: every op's first derivatives (gradcheck) and second derivatives
/// (gradgradcheck) against finite differences.
pub fn gradcheck() -> Result<()> {
    let checks = run_op_gradchecks()?;
    crate::outln!(
        "{:<40} {:>8} {:>10} {:>8} {:>10}  result",
        "case",
        "elements",
        "1st (tol)",
        "2nd elts",
        "2nd (tol)"
    );
    let mut failed = 0;
    let ratio = |r: &nabla::testing::GradcheckReport| r.worst.as_ref().map_or(0.0, |w| w.ratio);
    for c in &checks {
        let ok = c.report.passed && c.second.passed;
        if !ok {
            failed += 1;
        }
        crate::outln!(
            "{:<40} {:>8} {:>10.3} {:>8} {:>10.3}  {}",
            c.name,
            c.report.checked,
            ratio(&c.report),
            c.second.checked,
            ratio(&c.second),
            if ok { "ok" } else { "FAILED" }
        );
    }
    crate::outln!(
        "{} passed, {failed} failed (tol. = worst error as a fraction of the tolerance)",
        checks.len() - failed
    );
    if failed > 0 {
        bail!("{failed} gradient checks failed");
    }
    Ok(())
}

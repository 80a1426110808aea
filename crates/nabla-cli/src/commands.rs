//! `nabla eval`, `nabla predict`, `nabla info`, `nabla gradcheck`.

use anyhow::{bail, Context, Result};
use nabla::data::csv::{read_csv, Header, TargetColumn};
use nabla::data::idx::read_idx;
use nabla::io::read_tensor_file;
use nabla::nn::loss::{predict_class, predict_proba};
use nabla::nn::{Mlp, Module};
use nabla::testing::run_op_gradchecks;
use nabla::{no_grad, Tensor};
use serde_json::json;

use crate::args::{EvalArgs, InfoArgs, LossName, PredictArgs, Task};
use crate::dataset::{self, target_column};
use crate::metrics::{evaluate, report};
use crate::model::load_model;
use crate::runconfig::spelled;

fn check_width(model: &Mlp, features: usize, what: &str) -> Result<()> {
    let want = model.config().sizes[0];
    if features != want {
        bail!("{what} has {features} features per sample, the model expects {want}");
    }
    Ok(())
}

/// `nabla eval`.
pub fn eval(args: &EvalArgs) -> Result<()> {
    let (model, meta) = load_model(&args.checkpoint)?;
    // Without data flags, the data the model was trained on (recorded in the file).
    let chosen = &args.data;
    let data_args = match &meta.data {
        Some(recorded)
            if chosen.dataset.is_none() && chosen.data_dir.is_none() && chosen.csv.is_none() =>
        {
            recorded
        }
        _ => chosen,
    };
    let data = dataset::load(data_args)?;
    if data.task != meta.task {
        bail!(
            "the checkpoint is a {} model, the data set is {} ({})",
            spelled(&meta.task),
            spelled(&data.task),
            data.name
        );
    }
    let mut normalized = if args.train_split {
        data.train
    } else {
        data.test
    };
    check_width(&model, normalized.features(), &data.name)?;
    normalized.normalize_in_place(&meta.normalizer)?; // (the raw features are not needed)
    let kind = match meta.task {
        Task::Classification => LossName::CrossEntropy,
        Task::Regression => LossName::Mse,
    }
    .into();
    let e = evaluate(&model, &normalized, kind)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        let which = if args.train_split { "train" } else { "test" };
        println!(
            "{} ({which} split) with {}",
            data.name,
            args.checkpoint.display()
        );
        print!("{}", report(&e, &meta.class_names));
    }
    Ok(())
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
    let x: Vec<f32> = arr.data.iter().map(|&p| p as f32 / 255.0).collect();
    Tensor::from_vec(x, &[n, d.max(1)])
        .with_context(|| format!("{}: cannot shape the inputs", path.display()))
}

/// `nabla predict`.
pub fn predict(args: &PredictArgs) -> Result<()> {
    let (model, meta) = load_model(&args.checkpoint)?;
    let x = read_inputs(args)?;
    check_width(&model, x.shape()[1], &args.input.display().to_string())?;
    let x = meta.normalizer.apply(&x)?;
    let out = no_grad(|| model.forward(&x))?;
    let n = out.shape()[0];
    let limit = args.limit.unwrap_or(n).min(n);
    if meta.task == Task::Regression {
        let v = out.to_vec()?;
        if args.json {
            println!("{}", json!({"predictions": &v[..limit]}));
        } else {
            println!("{:>6} {:>12}", "row", "prediction");
            for (i, p) in v.iter().take(limit).enumerate() {
                println!("{i:>6} {p:>12.5}");
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
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{:>6} {:>6} {:<14}", "row", "class", "name");
        for c in 0..k {
            print!(" {:>7}", format!("p{c}"));
        }
        println!();
        for i in 0..limit {
            print!("{i:>6} {:>6} {:<14}", classes[i], name(classes[i]));
            for c in 0..k {
                print!(" {:>7.4}", p[i * k + c]);
            }
            println!();
        }
    }
    Ok(())
}

/// `nabla info`.
pub fn info(args: &InfoArgs) -> Result<()> {
    let file = read_tensor_file(&args.checkpoint)?;
    println!("{}", args.checkpoint.display());
    for (k, v) in &file.metadata {
        println!("  {k}: {v}");
    }
    let described = file.describe();
    let total: usize = described
        .values()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    println!("{} tensors, {total} elements:", described.len());
    for (name, (dtype, shape)) in &described {
        println!("  {name:<32} {dtype:<5} {shape:?}");
    }
    if file.metadata.contains_key("task") {
        let (model, _) = load_model(&args.checkpoint)?;
        println!("\n{}", model.summary(1)?);
        println!("({})", model.describe());
        println!(
            "to use it in PyTorch: nabla export --checkpoint {0} --format torch --out FILE\n\
             to serve it with ONNX Runtime: nabla export --checkpoint {0} --format onnx --out FILE",
            args.checkpoint.display()
        );
    }
    Ok(())
}

/// `nabla gradcheck`: every op's first derivatives (gradcheck) and second derivatives
/// (gradgradcheck) against finite differences.
pub fn gradcheck() -> Result<()> {
    let checks = run_op_gradchecks()?;
    println!(
        "{:<40} {:>8} {:>10} {:>8} {:>10}  result",
        "case", "elements", "1st (tol)", "2nd elts", "2nd (tol)"
    );
    let mut failed = 0;
    let ratio = |r: &nabla::testing::GradcheckReport| r.worst.as_ref().map_or(0.0, |w| w.ratio);
    for c in &checks {
        let ok = c.report.passed && c.second.passed;
        if !ok {
            failed += 1;
        }
        println!(
            "{:<40} {:>8} {:>10.3} {:>8} {:>10.3}  {}",
            c.name,
            c.report.checked,
            ratio(&c.report),
            c.second.checked,
            ratio(&c.second),
            if ok { "ok" } else { "FAILED" }
        );
    }
    println!(
        "{} passed, {failed} failed (tol. = worst error as a fraction of the tolerance)",
        checks.len() - failed
    );
    if failed > 0 {
        bail!("{failed} gradient checks failed");
    }
    Ok(())
}

//! What the page draws: the data points and their bounds, and a run's snapshot (metrics on
//! the training and test sets, decision regions or the fitted curve, layer norms).

use anyhow::Result;
use nabla::data::TaskData;
use nabla::nn::{loss::predict_class, Module};
use nabla::train::evaluate;
use nabla::{no_grad, GradStore, Tensor};
use serde_json::{json, Value};

use super::request::Resolved;

/// Cells per side of the decision-region grid.
pub const GRID: usize = 60;
/// Points of the fitted curve (regression on one feature).
const CURVE: usize = 200;
/// Most rows evaluated per snapshot, and most points sent to draw.
const SAMPLE: usize = 2000;

/// Every k-th row, at most `max` of them (a fixed, class-balanced-enough subset).
fn sample(n: usize, max: usize) -> Vec<usize> {
    let k = n.div_ceil(max).max(1);
    (0..n).step_by(k).collect()
}

/// Raw (unnormalised) points to draw: `[x, y, label]` for two features, `[x, target, 0]`
/// for regression on one feature; empty otherwise.
fn points(data: &TaskData) -> Result<Vec<[f64; 3]>> {
    let idx = sample(data.len(), SAMPLE);
    let x = data.x().index_select(0, &idx)?.to_vec()?;
    let d = data.features();
    Ok(match data {
        TaskData::Class(c) if d == 2 => idx
            .iter()
            .enumerate()
            .map(|(k, &i)| [x[2 * k] as f64, x[2 * k + 1] as f64, c.labels[i] as f64])
            .collect(),
        TaskData::Reg(r) if d == 1 && r.y.shape()[1] == 1 => {
            let y = r.y.index_select(0, &idx)?.to_vec()?;
            (0..idx.len())
                .map(|k| [x[k] as f64, y[k] as f64, 0.0])
                .collect()
        }
        _ => Vec::new(),
    })
}

/// The bounds of the drawn points, padded by 10%: `[xmin, xmax, ymin, ymax]`.
fn bounds(pts: &[[f64; 3]]) -> Option<[f64; 4]> {
    let mut b = [
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ];
    for p in pts {
        b = [
            b[0].min(p[0]),
            b[1].max(p[0]),
            b[2].min(p[1]),
            b[3].max(p[1]),
        ];
    }
    if !b.iter().all(|v| v.is_finite()) {
        return None;
    }
    let pad = |lo: f64, hi: f64| {
        let m = ((hi - lo) * 0.1).max(1e-3);
        (lo - m, hi + m)
    };
    let ((x0, x1), (y0, y1)) = (pad(b[0], b[1]), pad(b[2], b[3]));
    Some([x0, x1, y0, y1])
}

/// The run's description for the page: task, sizes, bounds and the points to draw.
pub fn describe(r: &Resolved) -> Result<Value> {
    let d = &r.data;
    let (train, test) = (points(&d.train)?, points(&d.test)?);
    let all: Vec<[f64; 3]> = train.iter().chain(&test).copied().collect();
    Ok(json!({
        "task": crate::runconfig::spelled(&d.task),
        "dataset": d.name,
        "classes": d.train.is_classification().then_some(d.outputs),
        "class_names": d.class_names,
        "features": d.train.features(),
        "train_rows": d.train.len(),
        "test_rows": d.test.len(),
        "bounds": bounds(&all),
        "train": train,
        "test": test,
        "parameters": r.config.model.as_ref().map_or(Ok(0), |m| m.parameter_count())?,
    }))
}

/// A snapshot of the run for the page.
pub fn snapshot(
    r: &Resolved,
    model: &dyn Module<f32>,
    grads: Option<&GradStore<f32>>,
    bounds: Option<[f64; 4]>,
    (step, epoch): (u64, usize),
    state: &str,
) -> Result<Value> {
    let kind = r.config.loss;
    let eval = |data: &TaskData| -> Result<_> {
        let sub = data.subset(&sample(data.len(), SAMPLE))?;
        Ok(no_grad(|| evaluate(model, &sub, kind))?)
    };
    let (train, test) = (eval(&r.train)?, eval(&r.test)?);
    let (grid, curve) = match bounds {
        Some(b) if r.train.is_classification() && r.train.features() == 2 => {
            (Some(grid(r, model, b)?), None)
        }
        Some(b) if r.train.features() == 1 => (None, Some(curve(r, model, b)?)),
        _ => (None, None),
    };
    Ok(json!({
        "step": step,
        "epoch": epoch,
        "state": state,
        "train_loss": train.loss,
        "train_accuracy": train.accuracy,
        "test_loss": test.loss,
        "test_accuracy": test.accuracy,
        "grid": grid,
        "curve": curve,
        "layers": layers(model, grads)?,
    }))
}

/// The region the page draws: the bounds of the training and test points (`None` unless the
/// data have two features, or one feature and one target).
pub fn data_bounds(r: &Resolved) -> Result<Option<[f64; 4]>> {
    let mut pts = points(&r.data.train)?;
    pts.extend(points(&r.data.test)?);
    Ok(bounds(&pts))
}

/// The predicted class and its probability at the centre of every grid cell (row 0 = ymin).
fn grid(r: &Resolved, model: &dyn Module<f32>, b: [f64; 4]) -> Result<Value> {
    let mut xs = Vec::with_capacity(GRID * GRID * 2);
    for i in 0..GRID {
        for j in 0..GRID {
            xs.push((b[0] + (j as f64 + 0.5) * (b[1] - b[0]) / GRID as f64) as f32);
            xs.push((b[2] + (i as f64 + 0.5) * (b[3] - b[2]) / GRID as f64) as f32);
        }
    }
    let x = r
        .normalizer
        .apply(&Tensor::from_vec(xs, &[GRID * GRID, 2])?)?;
    let (class, confidence) = no_grad(|| -> Result<_> {
        let logits = model.forward(&x)?;
        let probs = logits.softmax(1)?.to_vec()?;
        let class = predict_class(&logits)?;
        let k = logits.shape()[1];
        let conf: Vec<f32> = class
            .iter()
            .enumerate()
            .map(|(i, &c)| (probs[i * k + c] * 1000.0).round() / 1000.0)
            .collect();
        Ok((class, conf))
    })?;
    Ok(json!({"n": GRID, "class": class, "confidence": confidence}))
}

/// The model's output along x (regression on one feature).
fn curve(r: &Resolved, model: &dyn Module<f32>, b: [f64; 4]) -> Result<Value> {
    let xs: Vec<f32> = (0..CURVE)
        .map(|i| (b[0] + i as f64 * (b[1] - b[0]) / (CURVE - 1) as f64) as f32)
        .collect();
    let x = r
        .normalizer
        .apply(&Tensor::from_vec(xs.clone(), &[CURVE, 1])?)?;
    let y = no_grad(|| model.forward(&x))?.to_vec()?;
    let k = y.len() / CURVE;
    Ok(json!(xs
        .iter()
        .enumerate()
        .map(|(i, &x)| [x, y[i * k]])
        .collect::<Vec<_>>()))
}

/// Per linear layer: the norm of its weights and biases together, and of their gradients.
fn layers(model: &dyn Module<f32>, grads: Option<&GradStore<f32>>) -> Result<Vec<Value>> {
    let mut out: Vec<(String, f64, Option<f64>)> = Vec::new();
    for (name, p) in model.named_parameters() {
        let layer = name.rsplit_once('.').map_or(name.as_str(), |(l, _)| l);
        let sq = |t: &Tensor<f32>| -> Result<f64> {
            Ok(t.to_vec()?.iter().map(|&v| (v as f64) * (v as f64)).sum())
        };
        let w = sq(&p)?;
        let g = match grads.and_then(|g| g.get(&p)) {
            Some(g) => Some(sq(g)?),
            None => None,
        };
        match out.last_mut() {
            Some(last) if last.0 == layer => {
                last.1 += w;
                last.2 = last.2.zip(g).map(|(a, b)| a + b);
            }
            _ => out.push((layer.to_string(), w, g)),
        }
    }
    Ok(out
        .into_iter()
        .enumerate()
        .map(|(i, (name, w, g))| {
            json!({
                "name": format!("layer {} ({name})", i + 1),
                "weight_norm": w.sqrt(),
                "grad_norm": g.map(f64::sqrt),
            })
        })
        .collect())
}

//! PNG plots with plotters. The font is compiled into the binary (DejaVu Sans through
//! `ab_glyph`), so plots render on machines without any system fonts.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Result};
use nabla::nn::loss::predict_class;
use nabla::nn::Module;
use nabla::{no_grad, Tensor};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

use crate::dataset::TaskData;
use crate::metrics::EpochMetrics;

const PALETTE: [RGBColor; 12] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 0),
    RGBColor(255, 215, 0),
];

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn ensure_font() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| anyhow!("the embedded DejaVu Sans font could not be loaded"));
    });
    result
}

fn err<E: std::fmt::Debug>(path: &Path) -> impl Fn(E) -> anyhow::Error + '_ {
    move |e| anyhow!("{}: cannot draw the plot: {e:?}", path.display())
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A line with a dot at each point.
    LineDots,
    /// A line only.
    Line,
    /// Dots only.
    Dots,
}

/// A named series of (x, y) points.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub style: Style,
}

impl Series {
    /// A series drawn as a line with dots.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
            style: Style::LineDots,
        }
    }

    /// The same series drawn another way.
    pub fn style(mut self, style: Style) -> Self {
        self.style = style;
        self
    }
}

fn range(values: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite() && (!log || *v > 0.0)) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return if log { (0.1, 1.0) } else { (0.0, 1.0) };
    }
    if log {
        (lo / 1.5, hi * 1.5)
    } else {
        let pad = ((hi - lo) * 0.05).max(1e-9);
        (lo - pad, hi + pad)
    }
}

/// An axis label: plain for ordinary magnitudes, `1e-6` style for tiny or huge ones.
fn tick(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.0e}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A line/scatter chart of several series; `log_y` puts the y axis on a log scale.
pub fn chart(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    log_y: bool,
) -> Result<()> {
    ensure_font()?;
    let e = err(path);
    let (x0, x1) = range(
        series.iter().flat_map(|s| s.points.iter().map(|p| p.0)),
        false,
    );
    let (y0, y1) = range(
        series.iter().flat_map(|s| s.points.iter().map(|p| p.1)),
        log_y,
    );
    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80);
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .y_label_formatter(&|v: &f64| tick(*v))
                .label_style(("sans-serif", 15))
                .draw()
                .map_err(&e)?;
            for (i, s) in series.iter().enumerate() {
                let c = color(i);
                let pts: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .copied()
                    .filter(|p| p.1.is_finite() && (!log_y || p.1 > 0.0))
                    .collect();
                let anno = if s.style == Style::Dots {
                    chart
                        .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.mix(0.7).filled())))
                        .map_err(&e)?
                } else {
                    chart
                        .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                        .map_err(&e)?
                };
                anno.label(s.name.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
                });
                if s.style == Style::LineDots {
                    chart
                        .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
                        .map_err(&e)?;
                }
            }
            chart
                .configure_series_labels()
                .label_font(("sans-serif", 15))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(&e)?;
        }};
    }
    if log_y {
        draw!(builder
            .build_cartesian_2d(x0..x1, (y0..y1).log_scale())
            .map_err(&e)?);
    } else {
        draw!(builder.build_cartesian_2d(x0..x1, y0..y1).map_err(&e)?);
    }
    root.present().map_err(&e)?;
    Ok(())
}

/// Line plot of named series over epochs.
pub fn curves(
    path: &Path,
    title: &str,
    y_desc: &str,
    series: &[(&str, Vec<(f64, f64)>)],
) -> Result<()> {
    curves_over(path, title, "epoch", y_desc, series)
}

/// Line plot of named series over `x_desc` (epochs, steps).
pub fn curves_over(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(&str, Vec<(f64, f64)>)],
) -> Result<()> {
    let s: Vec<Series> = series
        .iter()
        .map(|(n, p)| Series::new(*n, p.clone()))
        .collect();
    chart(path, title, x_desc, y_desc, &s, false)
}

/// Heat map of a confusion matrix with counts.
pub fn confusion(path: &Path, counts: &[Vec<usize>], names: &[String]) -> Result<()> {
    ensure_font()?;
    let e = err(path);
    let k = counts.len();
    let root = BitMapBackend::new(path, (760, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Confusion matrix (test set)", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(110)
        .build_cartesian_2d(
            (0..k as i32 - 1).into_segmented(),
            (0..k as i32 - 1).into_segmented(),
        )
        .map_err(&e)?;
    // Row 0 (true class 0) is drawn at the top.
    let name = |v: &SegmentValue<i32>, flip: bool| match v {
        SegmentValue::CenterOf(i) => {
            let i = if flip { k as i32 - 1 - i } else { *i };
            names.get(i.max(0) as usize).cloned().unwrap_or_default()
        }
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(k)
        .y_labels(k)
        .x_desc("predicted class")
        .y_desc("true class")
        .x_label_formatter(&|v| name(v, false))
        .y_label_formatter(&|v| name(v, true))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(&e)?;
    let max = counts.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    for (i, row) in counts.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            let t = v as f64 / max;
            let shade = RGBColor(
                (255.0 - 224.0 * t) as u8,
                (255.0 - 136.0 * t) as u8,
                (255.0 - 75.0 * t) as u8,
            );
            let (x, y) = (j as i32, (k - 1 - i) as i32);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [
                        (SegmentValue::Exact(x), SegmentValue::Exact(y)),
                        (SegmentValue::Exact(x + 1), SegmentValue::Exact(y + 1)),
                    ],
                    shade.filled(),
                )))
                .map_err(&e)?;
            let text_color = if t > 0.5 { WHITE } else { BLACK };
            chart
                .draw_series(std::iter::once(Text::new(
                    v.to_string(),
                    (SegmentValue::CenterOf(x), SegmentValue::CenterOf(y)),
                    ("sans-serif", 14)
                        .into_font()
                        .color(&text_color)
                        .pos(Pos::new(HPos::Center, VPos::Center)),
                )))
                .map_err(&e)?;
        }
    }
    root.present().map_err(&e)?;
    Ok(())
}

fn bounds(xs: &[f32], d: usize, j: usize) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in xs.iter().skip(j).step_by(d) {
        lo = lo.min(*v as f64);
        hi = hi.max(*v as f64);
    }
    let pad = ((hi - lo) * 0.1).max(0.1);
    (lo - pad, hi + pad)
}

/// Decision regions of a 2-feature classifier with the points `x` (coloured by `labels`).
pub fn decision_regions(
    path: &Path,
    title: &str,
    model: &dyn Module<f32>,
    x: &Tensor<f32>,
    labels: &[usize],
) -> Result<()> {
    ensure_font()?;
    let e = err(path);
    let data = x.to_vec()?;
    let ((x0, x1), (y0, y1)) = (bounds(&data, 2, 0), bounds(&data, 2, 1));
    let g = 160usize;
    let mut grid = Vec::with_capacity(g * g * 2);
    for iy in 0..g {
        for ix in 0..g {
            grid.push((x0 + (x1 - x0) * (ix as f64 + 0.5) / g as f64) as f32);
            grid.push((y0 + (y1 - y0) * (iy as f64 + 0.5) / g as f64) as f32);
        }
    }
    let logits = no_grad(|| model.forward(&Tensor::from_vec(grid, &[g * g, 2])?))?;
    let pred = predict_class(&logits)?;
    let root = BitMapBackend::new(path, (700, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(&e)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("feature 1")
        .y_desc("feature 2")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(&e)?;
    let (dx, dy) = ((x1 - x0) / g as f64, (y1 - y0) / g as f64);
    chart
        .draw_series(pred.iter().enumerate().map(|(i, &c)| {
            let (ix, iy) = ((i % g) as f64, (i / g) as f64);
            let (a, b) = (x0 + ix * dx, y0 + iy * dy);
            Rectangle::new([(a, b), (a + dx, b + dy)], color(c).mix(0.25).filled())
        }))
        .map_err(&e)?;
    chart
        .draw_series(labels.iter().enumerate().map(|(i, &c)| {
            Circle::new(
                (data[2 * i] as f64, data[2 * i + 1] as f64),
                3,
                color(c).filled(),
            )
        }))
        .map_err(&e)?;
    root.present().map_err(&e)?;
    Ok(())
}

/// A 1-input, 1-output model evaluated at `xs` (under `no_grad`), as (x, y) points.
pub fn model_curve(model: &dyn Module<f32>, xs: &[f32]) -> Result<Vec<(f64, f64)>> {
    let x = Tensor::from_vec(xs.to_vec(), &[xs.len(), 1])?;
    let y = no_grad(|| model.forward(&x))?.to_vec()?;
    Ok(xs
        .iter()
        .zip(y)
        .map(|(&a, b)| (a as f64, b as f64))
        .collect())
}

/// A 1-D regression fit: data points and the model's curve.
pub fn regression_fit(
    path: &Path,
    model: &dyn Module<f32>,
    x: &Tensor<f32>,
    y: &Tensor<f32>,
) -> Result<()> {
    ensure_font()?;
    let e = err(path);
    let (xs, ys) = (x.to_vec()?, y.to_vec()?);
    let (x0, x1) = bounds(&xs, 1, 0);
    let (y0, y1) = bounds(&ys, 1, 0);
    let g = 400;
    let grid: Vec<f32> = (0..g)
        .map(|i| (x0 + (x1 - x0) * i as f64 / (g - 1) as f64) as f32)
        .collect();
    let fit = model_curve(model, &grid)?;
    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Fit on the test set", ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(&e)?;
    chart
        .configure_mesh()
        .x_desc("x")
        .y_desc("y")
        .draw()
        .map_err(&e)?;
    chart
        .draw_series(
            xs.iter()
                .zip(&ys)
                .map(|(&a, &b)| Circle::new((a as f64, b as f64), 2, color(0).mix(0.6).filled())),
        )
        .map_err(&e)?;
    chart
        .draw_series(LineSeries::new(fit, color(3).stroke_width(3)))
        .map_err(&e)?;
    root.present().map_err(&e)?;
    Ok(())
}

/// All plots of a finished run; returns the file names written.
pub fn write_run_plots(
    dir: &Path,
    history: &[EpochMetrics],
    model: &dyn Module<f32>,
    test: &TaskData,
    names: &[String],
) -> Result<Vec<String>> {
    let mut written = Vec::new();
    // Rows within an epoch (--eval-every) are drawn over steps.
    let by_step = history.windows(2).any(|w| w[0].epoch == w[1].epoch);
    let x_desc = if by_step { "step" } else { "epoch" };
    let series = |f: &dyn Fn(&EpochMetrics) -> Option<f64>| -> Vec<(f64, f64)> {
        history
            .iter()
            .filter_map(|m| {
                let x = if by_step {
                    m.step as f64
                } else {
                    m.epoch as f64
                };
                f(m).map(|v| (x, v))
            })
            .collect()
    };
    let mut loss = vec![("train", series(&|m| Some(m.train_loss)))];
    let val_loss = series(&|m| m.val_loss);
    if !val_loss.is_empty() {
        loss.push(("validation", val_loss));
    }
    let test_loss = series(&|m| m.test_loss);
    if !test_loss.is_empty() {
        loss.push(("test", test_loss));
    }
    curves_over(&dir.join("loss.png"), "Loss", x_desc, "loss", &loss)?;
    written.push("loss.png".to_string());
    if history.iter().any(|m| m.train_accuracy.is_some()) {
        let mut acc = vec![("train", series(&|m| m.train_accuracy.map(|a| 100.0 * a)))];
        let val_acc = series(&|m| m.val_accuracy.map(|a| 100.0 * a));
        if !val_acc.is_empty() {
            acc.push(("validation", val_acc));
        }
        let test_acc = series(&|m| m.test_accuracy.map(|a| 100.0 * a));
        if !test_acc.is_empty() {
            acc.push(("test", test_acc));
        }
        curves_over(
            &dir.join("accuracy.png"),
            "Accuracy",
            x_desc,
            "accuracy (%)",
            &acc,
        )?;
        written.push("accuracy.png".to_string());
    }
    match test {
        TaskData::Class(c) if !c.is_empty() => {
            let ev = crate::metrics::evaluate(model, test, nabla::train::LossKind::CrossEntropy)?;
            if let Some(conf) = &ev.confusion {
                confusion(&dir.join("confusion.png"), &conf.counts, names)?;
                written.push("confusion.png".to_string());
            }
            if c.features() == 2 {
                decision_regions(
                    &dir.join("decision_regions.png"),
                    "Decision regions and test points",
                    model,
                    &c.x,
                    &c.labels,
                )?;
                written.push("decision_regions.png".to_string());
            }
        }
        TaskData::Reg(r) if !r.is_empty() && r.x.shape()[1] == 1 && r.y.shape()[1] == 1 => {
            regression_fit(&dir.join("fit.png"), model, &r.x, &r.y)?;
            written.push("fit.png".to_string());
        }
        _ => {}
    }
    Ok(written)
}

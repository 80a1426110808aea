//! Evaluation reports (the metrics themselves are computed by `nabla::train`).

pub use nabla::train::{evaluate, Confusion, EpochMetrics, Evaluation};

/// A text report: loss, accuracy, per-class precision/recall, confusion matrix.
pub fn report(e: &Evaluation, class_names: &[String]) -> String {
    let mut s = format!("samples {}\nloss {:.4}\n", e.samples, e.loss);
    if let Some(a) = e.accuracy {
        s += &format!("accuracy {:.2}%\n", 100.0 * a);
    }
    if let Some(c) = &e.confusion {
        let name = |i: usize| class_names.get(i).cloned().unwrap_or_else(|| i.to_string());
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", 100.0 * v));
        s += &format!("\n{:<14} {:>10} {:>10}\n", "class", "precision", "recall");
        for i in 0..c.counts.len() {
            s += &format!(
                "{:<14} {:>10} {:>10}\n",
                name(i),
                pct(c.precision(i)),
                pct(c.recall(i))
            );
        }
        s += "\nconfusion matrix (rows: true class, columns: predicted)\n";
        s += &format!("{:<14}", "");
        for j in 0..c.counts.len() {
            s += &format!(" {j:>6}");
        }
        s += "\n";
        for (i, row) in c.counts.iter().enumerate() {
            s += &format!(
                "{:<14}",
                format!("{i} {}", name(i))
                    .chars()
                    .take(14)
                    .collect::<String>()
            );
            for v in row {
                s += &format!(" {v:>6}");
            }
            s += "\n";
        }
    }
    s
}

//! `nabla train`'s progress output, as a [`Callback`] of the library's trainer: a bar per
//! epoch on a terminal, one line per epoch otherwise, nothing with `--quiet`.

use indicatif::{ProgressBar, ProgressStyle};
use nabla::train::{Callback, EpochMetrics, StepProgress};

/// Progress output.
pub struct Progress {
    show: bool,
    tty: bool,
    epochs: usize,
    which: &'static str,
    bar: Option<ProgressBar>,
    /// Counting steps, not epochs (a language model's run, whose rows come every
    /// `--eval-every` steps): the run's total steps.
    steps: Option<u64>,
}

impl Progress {
    /// `show`: print at all; `tty`: bars instead of lines; `validation`: per-epoch metrics are
    /// the validation set's (else the test set's).
    pub fn new(show: bool, tty: bool, epochs: usize, validation: bool) -> Self {
        Progress {
            show,
            tty,
            epochs,
            which: if validation { "val" } else { "test" },
            bar: None,
            steps: None,
        }
    }

    /// Progress counted in steps, out of `total`: one bar for the run, a line per evaluation.
    pub fn in_steps(mut self, total: u64) -> Self {
        self.steps = Some(total);
        self
    }
}

/// A fraction as a percentage, or `-`.
pub fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2}%", 100.0 * v))
}

impl Callback for Progress {
    fn epoch_start(&mut self, epoch: usize, batches: usize, done: usize) {
        if let Some(total) = self.steps {
            if self.show && self.tty && self.bar.is_none() {
                let b = ProgressBar::new(total);
                b.set_style(
                    ProgressStyle::with_template("step [{bar:30}] {pos}/{len} {msg}")
                        .expect("static template")
                        .progress_chars("=> "),
                );
                self.bar = Some(b);
            }
            return;
        }
        if self.show && self.tty {
            let b = ProgressBar::new(batches as u64);
            b.set_style(
                ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            b.set_prefix(format!("{epoch}/{}", self.epochs));
            b.set_position(done as u64);
            self.bar = Some(b);
        }
    }

    fn step(&mut self, p: &StepProgress) {
        if let Some(b) = &self.bar {
            b.set_position(if self.steps.is_some() {
                p.step
            } else {
                p.batch as u64
            });
            if p.batch % 10 == 1 {
                let acc = p
                    .accuracy
                    .map_or(String::new(), |a| format!(" acc {:.1}%", 100.0 * a));
                b.set_message(format!(
                    "loss {:.4}{acc} {:.0} samples/s",
                    p.loss, p.samples_per_second
                ));
            }
        }
    }

    fn epoch_end(&mut self, row: &EpochMetrics) {
        if let Some(total) = self.steps {
            let val = row.val_loss.map_or("-".into(), |l| {
                format!("{l:.4} ({:.3} bits/char)", l / std::f64::consts::LN_2)
            });
            let line = format!(
                "step {}/{total}  loss {:.4}  val loss {val}  val acc {}  lr {:.3e}  {:.0} windows/s  {:.1} s",
                row.step,
                row.train_loss,
                pct(row.val_accuracy),
                row.lr,
                row.samples_per_second,
                row.seconds
            );
            match &self.bar {
                Some(b) if row.step >= total => b.finish_with_message(line),
                Some(b) => b.println(line),
                None if self.show => crate::outln!("{line}"),
                None => {}
            }
            return;
        }
        let which = self.which;
        let (el, ea) = if which == "val" {
            (row.val_loss, row.val_accuracy)
        } else {
            (row.test_loss, row.test_accuracy)
        };
        let line = format!(
            "epoch {}/{}  loss {:.4}  acc {}  {which} loss {}  {which} acc {}  lr {:.3e}  {:.0} samples/s  {:.1} s",
            row.epoch,
            self.epochs,
            row.train_loss,
            pct(row.train_accuracy),
            el.map_or("-".into(), |v| format!("{v:.4}")),
            pct(ea),
            row.lr,
            row.samples_per_second,
            row.seconds
        );
        match self.bar.take() {
            Some(b) => b.finish_with_message(
                line.split_once("  ")
                    .map_or(String::new(), |x| x.1.to_string()),
            ),
            None if self.show => crate::outln!("{line}"),
            None => {}
        }
    }
}

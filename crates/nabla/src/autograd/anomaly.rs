//! Anomaly detection: finding the first operation, in forward order, whose output is not
//! finite (NaN or ±∞).
//!
//! While detection is on (see [`detect_anomaly`]), every operation checks its output as it
//! runs and the first one with a non-finite value is remembered with its input ranges. Off, the
//! cost is one thread-local read per operation.

use std::cell::{Cell, RefCell};
use std::fmt;

use super::Op;
use crate::tensor::shape::fmt_shape;
use crate::tensor::{Float, Tensor};

thread_local! {
    static DETECT: Cell<bool> = const { Cell::new(false) };
    static FIRST: RefCell<Option<Anomaly>> = const { RefCell::new(None) };
}

/// The range of one input of an anomalous operation.
#[derive(Debug, Clone, PartialEq)]
pub struct InputRange {
    /// The input's shape.
    pub shape: Vec<usize>,
    /// Smallest finite value (NaN when there is none).
    pub min: f64,
    /// Largest finite value (NaN when there is none).
    pub max: f64,
    /// How many of its values were already not finite.
    pub non_finite: usize,
}

/// The first operation whose output was not finite.
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    /// The operation's name, as the method spells it (`log`, `matmul`, …).
    pub op: &'static str,
    /// The output's shape.
    pub shape: Vec<usize>,
    /// Non-finite values in the output.
    pub non_finite: usize,
    /// Elements of the output.
    pub numel: usize,
    /// Each input's range.
    pub inputs: Vec<InputRange>,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} produced {} non-finite of {} values in its output {}",
            self.op,
            self.non_finite,
            self.numel,
            fmt_shape(&self.shape)
        )?;
        for (i, r) in self.inputs.iter().enumerate() {
            write!(
                f,
                "{} input {} {} ranged over [{:.3e}, {:.3e}]",
                if i == 0 { ";" } else { "," },
                i,
                fmt_shape(&r.shape),
                r.min,
                r.max
            )?;
            if r.non_finite > 0 {
                write!(f, " with {} non-finite", r.non_finite)?;
            }
        }
        Ok(())
    }
}

/// Whether detection is on for this thread.
pub fn is_detecting() -> bool {
    DETECT.with(|d| d.get())
}

/// Runs `f` with anomaly detection on and returns its result with the first anomaly seen, if
/// any.
///
/// ```
/// use nabla::{autograd::detect_anomaly, Tensor};
/// let x = Tensor::<f32>::from_vec(vec![1.0, -1.0], &[2]).unwrap();
/// let (_, anomaly) = detect_anomaly(|| x.log()?.exp());
/// assert_eq!(anomaly.unwrap().op, "log");
/// ```
pub fn detect_anomaly<R>(f: impl FnOnce() -> R) -> (R, Option<Anomaly>) {
    let previous = DETECT.with(|d| d.replace(true));
    let saved = FIRST.with(|a| a.borrow_mut().take());
    let r = f();
    DETECT.with(|d| d.set(previous));
    let found = FIRST.with(|a| std::mem::replace(&mut *a.borrow_mut(), saved));
    (r, found)
}

/// Smallest and largest finite value and the number of non-finite ones, counting each stored
/// value of a broadcast view once.
fn range<T: Float>(t: &Tensor<T>) -> (f64, f64, usize) {
    let (mut lo, mut hi, mut bad) = (f64::INFINITY, f64::NEG_INFINITY, 0);
    t.for_each_distinct_while(|v| {
        if v.is_finite() {
            let v = v.to_f64();
            lo = lo.min(v);
            hi = hi.max(v);
        } else {
            bad += 1;
        }
        true
    });
    if lo > hi {
        (f64::NAN, f64::NAN, bad)
    } else {
        (lo, hi, bad)
    }
}

/// Called by every operation while detecting: remembers the op if its output is the first
/// non-finite one.
pub(crate) fn check_output<T: Float>(op: &Op<T>, out: &Tensor<T>) {
    if FIRST.with(|a| a.borrow().is_some()) {
        return;
    }
    let (_, _, bad) = range(out);
    if bad == 0 {
        return;
    }
    let inputs = op
        .inputs()
        .iter()
        .map(|t| {
            let (min, max, non_finite) = range(t);
            InputRange {
                shape: t.shape().to_vec(),
                min,
                max,
                non_finite,
            }
        })
        .collect();
    let anomaly = Anomaly {
        op: op.kind().name(),
        shape: out.shape().to_vec(),
        non_finite: bad,
        numel: out.numel(),
        inputs,
    };
    FIRST.with(|a| *a.borrow_mut() = Some(anomaly));
}

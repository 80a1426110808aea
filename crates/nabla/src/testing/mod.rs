//! Tools to check gradients and compare tensors, public so users can check their own code.
//!
//! [`gradcheck`] compares the gradient computed by backpropagation with central finite
//! differences, element by element, in `f64`:
//!
//! ```
//! use nabla::testing::{gradcheck, GradcheckOptions};
//! use nabla::Tensor;
//! let x = Tensor::<f64>::rand_uniform(&[3, 4], -1.0, 1.0, 0).unwrap();
//! let report = gradcheck(
//!     |t| t[0].tanh()?.mul(&t[0])?.sum_all(),   // f(x) = Σ x·tanh(x)
//!     &[x],
//!     &GradcheckOptions::default(),
//! ).unwrap();
//! assert!(report.passed, "{report}");
//! ```

mod cases;
mod image_cases;
mod program;
mod second;
mod sequence_cases;

pub use cases::{module_cases, op_cases, run_op_gradchecks, OpCase, OpCheck};
pub use image_cases::image_module_cases;
pub use program::{run_program, PROGRAM_ALLOCATION_LIMIT};
pub use second::gradgradcheck;
pub use sequence_cases::sequence_module_cases;

use std::fmt;

use crate::autograd::no_grad;
use crate::error::{Error, Result};
use crate::tensor::shape::fmt_shape;
use crate::tensor::{Float, Tensor};

/// Step and tolerances of a gradient check. An element passes when
/// `|analytic − numeric| ≤ atol + rtol·|numeric|`.
#[derive(Debug, Clone, PartialEq)]
pub struct GradcheckOptions {
    /// Finite-difference step ε.
    pub eps: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance.
    pub rtol: f64,
    /// Seed of the random projection used when the function's output is not a scalar.
    pub seed: u64,
}

impl GradcheckOptions {
    /// `Err` naming `op` unless `eps > 0` and both tolerances are non-negative.
    fn validate(&self, op: &'static str) -> Result<()> {
        if self.eps > 0.0 && self.atol >= 0.0 && self.rtol >= 0.0 {
            return Ok(());
        }
        Err(Error::arg(
            op,
            format!(
                "need eps > 0 and non-negative tolerances, got eps {}, atol {}, rtol {}",
                self.eps, self.atol, self.rtol
            ),
        ))
    }
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions {
            eps: 1e-6,
            atol: 1e-6,
            rtol: 1e-5,
            seed: 0x5eed,
        }
    }
}

/// The element where analytic and numeric gradients disagree most (relative to tolerance).
#[derive(Debug, Clone, PartialEq)]
pub struct WorstElement {
    /// Which input (position in the slice given to `gradcheck`).
    pub input: usize,
    /// Row-major index of the element in that input.
    pub index: usize,
    /// Gradient from backpropagation.
    pub analytic: f64,
    /// Gradient from central differences.
    pub numeric: f64,
    /// `|analytic − numeric|`.
    pub abs_error: f64,
    /// `abs_error / (atol + rtol·|numeric|)`: above 1 fails. Infinite for a non-finite value.
    pub ratio: f64,
}

/// The outcome of a gradient check.
#[derive(Debug, Clone, PartialEq)]
pub struct GradcheckReport {
    /// Elements compared.
    pub checked: usize,
    /// The worst element, if any element was compared.
    pub worst: Option<WorstElement>,
    /// True when every element is within tolerance.
    pub passed: bool,
}

impl fmt::Display for GradcheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed { "passed" } else { "FAILED" };
        match &self.worst {
            None => write!(f, "gradcheck {verdict}: no elements"),
            Some(w) => write!(
                f,
                "gradcheck {verdict}: {} elements; worst input {} element {}: analytic {:.10e}, \
                 numeric {:.10e}, |diff| {:.3e} ({:.3} of tolerance)",
                self.checked, w.input, w.index, w.analytic, w.numeric, w.abs_error, w.ratio
            ),
        }
    }
}

impl GradcheckReport {
    /// An empty, passing report.
    fn new() -> Self {
        GradcheckReport {
            checked: 0,
            worst: None,
            passed: true,
        }
    }

    /// Counts one element, `analytic` against `numeric` under `opts`' tolerances, keeping the
    /// worst.
    fn compare(
        &mut self,
        input: usize,
        index: usize,
        analytic: f64,
        numeric: f64,
        opts: &GradcheckOptions,
    ) {
        let abs_error = (analytic - numeric).abs();
        let ratio = if analytic.is_finite() && numeric.is_finite() {
            abs_error / (opts.atol + opts.rtol * numeric.abs())
        } else {
            f64::INFINITY
        };
        self.checked += 1;
        if ratio > 1.0 || ratio.is_nan() {
            self.passed = false;
        }
        if self.worst.as_ref().is_none_or(|w| ratio > w.ratio) {
            self.worst = Some(WorstElement {
                input,
                index,
                analytic,
                numeric,
                abs_error,
                ratio,
            });
        }
    }

    /// `Ok` when passed, otherwise an error carrying the report.
    pub fn check(&self) -> Result<()> {
        if self.passed {
            Ok(())
        } else {
            Err(Error::autograd("gradcheck", self.to_string()))
        }
    }
}

/// Reduces an output to a scalar: itself when it has one element, otherwise `Σ out ⊙ r` with a
/// fixed random `r`, so every output element's gradient is checked.
fn scalarize(out: &Tensor<f64>, r: &Option<Tensor<f64>>) -> Result<Tensor<f64>> {
    match r {
        None => out.sum_all(),
        Some(r) => out.mul(r)?.sum_all(),
    }
}

/// Checks the gradient of `f` at `inputs` against central finite differences.
///
/// Every input is treated as a leaf requiring a gradient. `f` may return any shape; a
/// non-scalar output is contracted with a fixed random tensor first. Returns the worst element;
/// [`GradcheckReport::passed`] says whether all were within tolerance.
pub fn gradcheck<F>(
    f: F,
    inputs: &[Tensor<f64>],
    opts: &GradcheckOptions,
) -> Result<GradcheckReport>
where
    F: Fn(&[Tensor<f64>]) -> Result<Tensor<f64>>,
{
    opts.validate("gradcheck")?;
    let leaves: Vec<Tensor<f64>> = inputs.iter().map(|t| t.detach().requires_grad()).collect();
    let out = f(&leaves)?;
    let r = match out.numel() {
        1 => None,
        _ => Some(Tensor::randn(out.shape(), 0.0, 1.0, opts.seed)?),
    };
    let loss = scalarize(&out, &r)?;
    if !loss.requires_grad_flag() {
        return Err(Error::autograd(
            "gradcheck",
            "the function's output does not depend on any input",
        ));
    }
    let grads = loss.backward()?;

    let mut report = GradcheckReport::new();
    for (i, leaf) in leaves.iter().enumerate() {
        let analytic = match grads.get(leaf) {
            Some(g) => g.to_vec()?,
            None => vec![0.0; leaf.numel()],
        };
        let base = leaf.to_vec()?;
        for (j, &a) in analytic.iter().enumerate() {
            let eval = |delta: f64| -> Result<f64> {
                let mut data = base.clone();
                data[j] += delta;
                let mut xs: Vec<Tensor<f64>> = leaves.iter().map(|t| t.detach()).collect();
                xs[i] = Tensor::from_vec(data, leaf.shape())?;
                no_grad(|| scalarize(&f(&xs)?, &r)?.item())
            };
            let numeric = (eval(opts.eps)? - eval(-opts.eps)?) / (2.0 * opts.eps);
            report.compare(i, j, a, numeric, opts);
        }
    }
    Ok(report)
}

/// `Ok` when `a` and `b` have the same shape and every element satisfies
/// `|a − b| ≤ atol + rtol·|b|`; otherwise an error naming the worst element.
pub fn assert_close<T: Float>(a: &Tensor<T>, b: &Tensor<T>, atol: f64, rtol: f64) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::shape(
            "assert_close",
            format!("{} vs {}", fmt_shape(a.shape()), fmt_shape(b.shape())),
        ));
    }
    let (da, db) = (a.data()?, b.data()?);
    let mut worst: Option<(usize, f64, f64, f64)> = None;
    for (i, (&x, &y)) in da.iter().zip(db.iter()).enumerate() {
        let (x, y) = (x.to_f64(), y.to_f64());
        let excess = if x == y {
            0.0
        } else {
            (x - y).abs() - (atol + rtol * y.abs())
        };
        let bad = excess > 0.0 || x.is_nan() != y.is_nan();
        if bad && worst.is_none_or(|(_, _, _, e)| excess > e || excess.is_nan()) {
            worst = Some((i, x, y, excess));
        }
    }
    match worst {
        None => Ok(()),
        Some((i, x, y, _)) => Err(Error::arg(
            "assert_close",
            format!(
                "element {i} of {}: {x} vs {y} (|diff| {:e}, allowed {:e})",
                fmt_shape(a.shape()),
                (x - y).abs(),
                atol + rtol * y.abs()
            ),
        )),
    }
}

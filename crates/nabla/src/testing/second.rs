//! [`gradgradcheck`]: second derivatives against central finite differences of the first
//! derivative, in `f64`.

use super::{GradcheckOptions, GradcheckReport};
use crate::autograd::{grad, GradOptions};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// `S(x, v) = Σᵢ ⟨∂(vᵀf)/∂xᵢ, uᵢ⟩` computed by a plain (first-order) backward pass.
fn projected_gradient<F>(
    f: &F,
    xs: &[Tensor<f64>],
    v: &Tensor<f64>,
    u: &[Tensor<f64>],
) -> Result<f64>
where
    F: Fn(&[Tensor<f64>]) -> Result<Tensor<f64>>,
{
    let xs: Vec<Tensor<f64>> = xs.iter().map(|t| t.detach().requires_grad()).collect();
    let out = f(&xs)?;
    if !out.requires_grad_flag() {
        return Ok(0.0);
    }
    let opts = GradOptions {
        create_graph: false,
        allow_unused: true,
        grad_outputs: Some(vec![v.detach()]),
    };
    let g = grad(&[out], &xs, opts)?;
    let mut s = 0.0;
    for (g, u) in g.iter().zip(u) {
        s += g.mul(u)?.sum_all()?.item()?;
    }
    Ok(s)
}

/// Checks the second derivatives of `f` at `inputs`. With a random output gradient `v` and
/// random directions `uᵢ`, the scalar `S = Σᵢ ⟨∂(vᵀf)/∂xᵢ, uᵢ⟩` is built with
/// `create_graph` and differentiated again by backpropagation; each element of `∂S/∂xᵢ`
/// (a Hessian-vector product) and of `∂S/∂v` is compared with central differences of `S`, where
/// `S` is evaluated with a plain first-order backward pass. So both the recorded backward rules
/// and their own derivatives are checked, like PyTorch's `gradgradcheck`. The report's input
/// index `inputs.len()` stands for `v`.
///
/// ```
/// use nabla::testing::{gradgradcheck, GradcheckOptions};
/// use nabla::Tensor;
/// let x = Tensor::<f64>::rand_uniform(&[3, 4], -1.0, 1.0, 0).unwrap();
/// let report = gradgradcheck(|t| t[0].tanh()?.mul(&t[0]), &[x], &GradcheckOptions::default())
///     .unwrap();
/// assert!(report.passed, "{report}");
/// ```
pub fn gradgradcheck<F>(
    f: F,
    inputs: &[Tensor<f64>],
    opts: &GradcheckOptions,
) -> Result<GradcheckReport>
where
    F: Fn(&[Tensor<f64>]) -> Result<Tensor<f64>>,
{
    opts.validate("gradgradcheck")?;
    let leaves: Vec<Tensor<f64>> = inputs.iter().map(|t| t.detach().requires_grad()).collect();
    let out = f(&leaves)?;
    if !out.requires_grad_flag() {
        return Err(Error::autograd(
            "gradgradcheck",
            "the function's output does not depend on any input",
        ));
    }
    let v = Tensor::randn(out.shape(), 0.0, 1.0, opts.seed)?.requires_grad();
    let u: Vec<Tensor<f64>> = leaves
        .iter()
        .enumerate()
        .map(|(i, t)| Tensor::randn(t.shape(), 0.0, 1.0, opts.seed.wrapping_add(1 + i as u64)))
        .collect::<Result<_>>()?;
    let first = grad(
        &[out],
        &leaves,
        GradOptions {
            create_graph: true,
            allow_unused: true,
            grad_outputs: Some(vec![v.clone()]),
        },
    )?;
    let mut s: Option<Tensor<f64>> = None;
    for (g, u) in first.iter().zip(&u) {
        let d = g.mul(u)?.sum_all()?;
        s = Some(match s {
            None => d,
            Some(s) => s.add(&d)?,
        });
    }
    let mut all = leaves.clone();
    all.push(v.clone());
    let analytic: Vec<Vec<f64>> = match s {
        Some(s) if s.requires_grad_flag() => {
            let opts = GradOptions {
                allow_unused: true,
                ..Default::default()
            };
            grad(&[s], &all, opts)?
                .iter()
                .map(|g| g.to_vec())
                .collect::<Result<_>>()?
        }
        _ => all.iter().map(|t| vec![0.0; t.numel()]).collect(),
    };

    let mut report = GradcheckReport::new();
    let n = leaves.len();
    for (i, target) in all.iter().enumerate() {
        let base = target.to_vec()?;
        for (j, &a) in analytic[i].iter().enumerate() {
            let eval = |delta: f64| -> Result<f64> {
                let mut data = base.clone();
                data[j] += delta;
                let moved = Tensor::from_vec(data, target.shape())?;
                if i == n {
                    projected_gradient(&f, &leaves, &moved, &u)
                } else {
                    let mut xs = leaves.clone();
                    xs[i] = moved;
                    projected_gradient(&f, &xs, &v, &u)
                }
            };
            let numeric = (eval(opts.eps)? - eval(-opts.eps)?) / (2.0 * opts.eps);
            report.compare(i, j, a, numeric, opts);
        }
    }
    Ok(report)
}

//! Gradients as values: [`grad`] (PyTorch's `autograd.grad`), and built on it Hessian-vector
//! products ([`hvp`]), full Hessians ([`hessian`]), Jacobians ([`jacobian`]) and
//! Jacobian-vector products ([`jvp`]).

use std::collections::HashSet;

use super::graph::reverse_pass;
use crate::error::{Error, Result};
use crate::tensor::shape::fmt_shape;
use crate::tensor::{Float, Tensor, TensorId};

/// Options of [`grad`].
#[derive(Clone)]
pub struct GradOptions<T: Float = f32> {
    /// Run the backward rules recorded, so the returned gradients carry a graph and can be
    /// differentiated again (second derivatives, gradient penalties). Off: the fast path of
    /// `backward()`, gradients are plain values.
    pub create_graph: bool,
    /// An input that the outputs do not depend on gets a zero gradient instead of an error.
    pub allow_unused: bool,
    /// The output gradients `vᵢ` (one per output, its shape): [`grad`] then computes the
    /// vector–Jacobian product `Σᵢ vᵢᵀ·∂outᵢ/∂input`. `None`: every output must have one
    /// element, and `vᵢ = 1`.
    pub grad_outputs: Option<Vec<Tensor<T>>>,
}

impl<T: Float> Default for GradOptions<T> {
    fn default() -> Self {
        GradOptions {
            create_graph: false,
            allow_unused: false,
            grad_outputs: None,
        }
    }
}

/// The gradients of `outputs` with respect to exactly `inputs`, in order: for each input,
/// `Σᵢ vᵢᵀ·∂outputᵢ/∂input` with `vᵢ` from [`GradOptions::grad_outputs`] (ones by default).
/// Inputs may be leaves or intermediate tensors; they must require a gradient.
///
/// With `create_graph`, the gradients are themselves differentiable:
///
/// ```
/// use nabla::autograd::{grad, GradOptions};
/// use nabla::Tensor;
/// let x = Tensor::<f64>::from_vec(vec![2.0], &[1]).unwrap().requires_grad();
/// let y = x.pow_scalar(3.0).unwrap().sum_all().unwrap();             // y = x³
/// let opts = GradOptions { create_graph: true, ..Default::default() };
/// let dy = grad(&[y], &[x.clone()], opts).unwrap().remove(0);        // 3x² = 12
/// assert_eq!(dy.to_vec().unwrap(), [12.0]);
/// let d2y = grad(&[dy.sum_all().unwrap()], &[x], GradOptions::default()).unwrap();
/// assert_eq!(d2y[0].to_vec().unwrap(), [12.0]);                       // 6x = 12
/// ```
pub fn grad<T: Float>(
    outputs: &[Tensor<T>],
    inputs: &[Tensor<T>],
    opts: GradOptions<T>,
) -> Result<Vec<Tensor<T>>> {
    let seeds = seeds(outputs, opts.grad_outputs)?;
    if let Some(i) = inputs.iter().position(|t| !t.requires_grad_flag()) {
        return Err(Error::autograd(
            "grad",
            format!(
                "input {i} (shape {}) does not require a gradient",
                fmt_shape(inputs[i].shape())
            ),
        ));
    }
    let roots: Vec<(Tensor<T>, Tensor<T>)> = outputs
        .iter()
        .zip(seeds)
        .filter(|(o, _)| o.requires_grad_flag())
        .map(|(o, s)| (o.clone(), s))
        .collect();
    let keep: HashSet<TensorId> = inputs.iter().map(|t| t.id()).collect();
    let grads = if roots.is_empty() {
        Default::default()
    } else {
        reverse_pass(&roots, opts.create_graph, &HashSet::new(), &keep)?
    };
    inputs
        .iter()
        .enumerate()
        .map(|(i, t)| match grads.get(&t.id()) {
            Some(g) => Ok(g.clone()),
            None if opts.allow_unused => Tensor::zeros(t.shape()),
            None => Err(Error::autograd(
                "grad",
                format!(
                    "input {i} (shape {}) is not used by the outputs (set allow_unused for a \
                     zero gradient)",
                    fmt_shape(t.shape())
                ),
            )),
        })
        .collect()
}

/// The output gradients: given ones (checked against the outputs), or ones for scalars.
fn seeds<T: Float>(outputs: &[Tensor<T>], given: Option<Vec<Tensor<T>>>) -> Result<Vec<Tensor<T>>> {
    if outputs.is_empty() {
        return Err(Error::arg("grad", "no outputs to differentiate"));
    }
    match given {
        Some(v) => {
            matching("grad", "grad_outputs", &v, "output", outputs)?;
            Ok(v)
        }
        None => outputs
            .iter()
            .enumerate()
            .map(|(i, o)| {
                if o.numel() != 1 {
                    return Err(Error::shape(
                        "grad",
                        format!(
                            "output {i} has shape {}: give grad_outputs for a non-scalar output",
                            fmt_shape(o.shape())
                        ),
                    ));
                }
                Tensor::ones(o.shape())
            })
            .collect(),
    }
}

/// `Err` naming `op` unless `given` has one tensor per `of`, each of the same shape.
fn matching<T: Float>(
    op: &'static str,
    given_name: &str,
    given: &[Tensor<T>],
    of_name: &str,
    of: &[Tensor<T>],
) -> Result<()> {
    if given.len() != of.len() {
        return Err(Error::arg(
            op,
            format!("{} {given_name} for {} {of_name}s", given.len(), of.len()),
        ));
    }
    match given
        .iter()
        .zip(of)
        .position(|(g, o)| g.shape() != o.shape())
    {
        None => Ok(()),
        Some(i) => Err(Error::shape(
            op,
            format!(
                "{given_name}[{i}] {} does not match {of_name} {i} {}",
                fmt_shape(given[i].shape()),
                fmt_shape(of[i].shape())
            ),
        )),
    }
}

fn with_graph<T: Float>() -> GradOptions<T> {
    GradOptions {
        create_graph: true,
        allow_unused: true,
        grad_outputs: None,
    }
}

/// Σᵢ ⟨aᵢ, bᵢ⟩ as a recorded scalar.
fn dot<T: Float>(a: &[Tensor<T>], b: &[Tensor<T>]) -> Result<Tensor<T>> {
    let mut total: Option<Tensor<T>> = None;
    for (x, y) in a.iter().zip(b) {
        let d = x.mul(y)?.sum_all()?;
        total = Some(match total {
            None => d,
            Some(t) => t.add(&d)?,
        });
    }
    total.ok_or_else(|| Error::arg("hvp", "no parameters"))
}

/// The Hessian-vector product `H·v = ∂/∂θ (∇_θ f · v)` of the scalar `f()` with respect to
/// `params` (tensors requiring a gradient that `f` reads, e.g. a model's parameters), by
/// reverse over reverse: one backward pass with `create_graph`, then one through it. Costs
/// about two gradient evaluations, never forms `H`. Returns `(f, H·v)`.
///
/// ```
/// use nabla::autograd::hvp;
/// use nabla::Tensor;
/// // f(x) = x₀²·x₁  ⇒  H = [[2x₁, 2x₀], [2x₀, 0]]
/// let x = Tensor::<f64>::from_vec(vec![1.0, 3.0], &[2]).unwrap().requires_grad();
/// let v = Tensor::from_vec(vec![1.0, 1.0], &[2]).unwrap();
/// let f = || x.narrow(0, 0, 1)?.square()?.mul(&x.narrow(0, 1, 1)?)?.sum_all();
/// let (_, hv) = hvp(f, &[x.clone()], &[v]).unwrap();
/// assert_eq!(hv[0].to_vec().unwrap(), [8.0, 2.0]);   // [2·3 + 2·1, 2·1 + 0]
/// ```
pub fn hvp<T: Float>(
    f: impl FnOnce() -> Result<Tensor<T>>,
    params: &[Tensor<T>],
    v: &[Tensor<T>],
) -> Result<(Tensor<T>, Vec<Tensor<T>>)> {
    matching("hvp", "v", v, "parameter", params)?;
    let y = f()?;
    let g = grad(std::slice::from_ref(&y), params, with_graph())?;
    let gv = dot(&g, v)?;
    let hv = grad(
        &[gv],
        params,
        GradOptions {
            allow_unused: true,
            ..Default::default()
        },
    )?;
    Ok((y.detach(), hv))
}

/// The Hessian `∂²f/∂xᵢ∂xⱼ` of the scalar `f(x)`, as `[n, n]` with `n = x.numel()` (row-major
/// element order): one gradient with `create_graph`, then one reverse pass per row. For small
/// inputs: `n` backward passes and `n²` values.
///
/// ```
/// use nabla::autograd::hessian;
/// use nabla::Tensor;
/// // f(x) = x₀²·x₁ + x₁³  at (1, 2)  ⇒  H = [[2x₁, 2x₀], [2x₀, 6x₁]] = [[4, 2], [2, 12]]
/// let x = Tensor::<f64>::from_vec(vec![1.0, 2.0], &[2]).unwrap();
/// let h = hessian(|x| {
///     let (a, b) = (x.narrow(0, 0, 1)?, x.narrow(0, 1, 1)?);
///     a.square()?.mul(&b)?.add(&b.pow_scalar(3.0)?)?.sum_all()
/// }, &x).unwrap();
/// assert_eq!(h.to_vec().unwrap(), [4.0, 2.0, 2.0, 12.0]);
/// ```
pub fn hessian<T: Float>(
    f: impl Fn(&Tensor<T>) -> Result<Tensor<T>>,
    x: &Tensor<T>,
) -> Result<Tensor<T>> {
    let x = x.detach().requires_grad();
    let y = f(&x)?;
    let g = grad(&[y], std::slice::from_ref(&x), with_graph())?.remove(0);
    jacobian_of(&g, &x)
}

/// Rows `∂out_i/∂x` of an already computed `out`, one reverse pass each.
fn jacobian_of<T: Float>(out: &Tensor<T>, x: &Tensor<T>) -> Result<Tensor<T>> {
    let (m, n) = (out.numel(), x.numel());
    let mut rows = Vec::with_capacity(m.saturating_mul(n));
    for i in 0..m {
        let mut e = vec![T::ZERO; m];
        e[i] = T::ONE;
        let opts = GradOptions {
            create_graph: false,
            allow_unused: true,
            grad_outputs: Some(vec![Tensor::from_vec(e, out.shape())?]),
        };
        let row = if out.requires_grad_flag() {
            grad(std::slice::from_ref(out), std::slice::from_ref(x), opts)?.remove(0)
        } else {
            Tensor::zeros(x.shape())?
        };
        rows.extend(row.to_vec()?);
    }
    Tensor::from_vec(rows, &[m, n])
}

/// The Jacobian `∂f(x)ᵢ/∂xⱼ` as `[m, n]` (`m = f(x).numel()`, `n = x.numel()`, row-major
/// element order), one reverse pass per row (output element): cheap when the output is small.
///
/// ```
/// use nabla::autograd::jacobian;
/// use nabla::Tensor;
/// // f(x) = (x₀·x₁, 2x₀)  ⇒  J = [[x₁, x₀], [2, 0]]
/// let x = Tensor::<f64>::from_vec(vec![3.0, 5.0], &[2]).unwrap();
/// let j = jacobian(|x| {
///     let (a, b) = (x.narrow(0, 0, 1)?, x.narrow(0, 1, 1)?);
///     Tensor::concat(&[&a.mul(&b)?, &a.mul_scalar(2.0)?], 0)
/// }, &x).unwrap();
/// assert_eq!(j.to_vec().unwrap(), [5.0, 3.0, 2.0, 0.0]);
/// ```
pub fn jacobian<T: Float>(
    f: impl Fn(&Tensor<T>) -> Result<Tensor<T>>,
    x: &Tensor<T>,
) -> Result<Tensor<T>> {
    let x = x.detach().requires_grad();
    let y = f(&x)?;
    jacobian_of(&y, &x)
}

/// The Jacobian-vector product `J·t = ∂f(x)/∂x · t` (forward-mode derivative along `t`),
/// returned with `f(x)`, by the double-vjp trick: `g(u) = Jᵀu` is computed with
/// `create_graph` for a dummy `u`, and since `g` is linear in `u`, the vjp of `g` with `t` is
/// `(Jᵀ)ᵀt = J·t`. It reuses the reverse-mode rules — each derivative stays written once,
/// with no second set of forward-mode rules to keep in step — at the price of about three
/// reverse passes instead of the one forward pass a dual-number forward mode would cost.
///
/// ```
/// use nabla::autograd::jvp;
/// use nabla::Tensor;
/// // f(x) = x²  ⇒  J·t = 2x ⊙ t
/// let x = Tensor::<f64>::from_vec(vec![1.0, 2.0, 3.0], &[3]).unwrap();
/// let t = Tensor::from_vec(vec![1.0, 0.0, -1.0], &[3]).unwrap();
/// let (y, jt) = jvp(|x| x.square(), &x, &t).unwrap();
/// assert_eq!(y.to_vec().unwrap(), [1.0, 4.0, 9.0]);
/// assert_eq!(jt.to_vec().unwrap(), [2.0, 0.0, -6.0]);
/// ```
pub fn jvp<T: Float>(
    f: impl Fn(&Tensor<T>) -> Result<Tensor<T>>,
    x: &Tensor<T>,
    t: &Tensor<T>,
) -> Result<(Tensor<T>, Tensor<T>)> {
    if t.shape() != x.shape() {
        return Err(Error::shape(
            "jvp",
            format!(
                "tangent {} does not match input {}",
                fmt_shape(t.shape()),
                fmt_shape(x.shape())
            ),
        ));
    }
    let x = x.detach().requires_grad();
    let y = f(&x)?;
    if !y.requires_grad_flag() {
        let zero = Tensor::zeros(y.shape())?;
        return Ok((y, zero));
    }
    let u = Tensor::zeros(y.shape())?.requires_grad();
    let opts = GradOptions {
        grad_outputs: Some(vec![u.clone()]),
        ..with_graph()
    };
    let g = grad(std::slice::from_ref(&y), &[x], opts)?.remove(0);
    if !g.requires_grad_flag() {
        return Ok((y.detach(), Tensor::zeros(y.shape())?));
    }
    let opts = GradOptions {
        create_graph: false,
        allow_unused: true,
        grad_outputs: Some(vec![t.clone()]),
    };
    let jt = grad(&[g], &[u], opts)?.remove(0);
    Ok((y.detach(), jt))
}

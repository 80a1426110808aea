//! Every derivative of nabla, in one place: one arm per [`Op`] variant, in the enum's order,
//! each headed by its formula. There is no wildcard arm, so a new op cannot compile without its
//! rule. `g` is the gradient of the loss with respect to the op's output `y`.
//!
//! Rules run under `no_grad` and use the forward kernels directly; broadcast operands get
//! their gradient summed back to their own shape (`sum_to`). Before a rule runs, the graph walk
//! checks that the values it reads (listed by [`saved`]) were not modified in place since the
//! forward pass.

use super::Op;
use crate::error::Result;
use crate::ops::matmul_raw;
use crate::ops::unary::{sigmoid, GELU_A, GELU_C};
use crate::tensor::kernels::{layout, reduce};
use crate::tensor::storage::filled;
use crate::tensor::{Float, Tensor};

/// `f(x, g)` element-wise over two same-shape tensors, as a new (unrecorded) tensor.
fn ew<T: Float>(
    x: &Tensor<T>,
    g: &Tensor<T>,
    f: impl Fn(T, T) -> T + Sync + Send,
) -> Result<Tensor<T>> {
    x.map2_raw(g, "backward", f)
}

fn raw<T: Float>(data: Vec<T>, shape: &[usize]) -> Tensor<T> {
    Tensor::from_parts(data, shape.to_vec(), None)
}

fn mm<T: Float>(a: &Tensor<T>, b: &Tensor<T>, ta: bool, tb: bool) -> Result<Tensor<T>> {
    let (data, shape) = matmul_raw(a, b, ta, tb)?;
    Ok(Tensor::from_parts(data, shape, None))
}

/// Flattens a 3-D tensor's first two axes (for a shared right operand's gradient).
fn flat2<T: Float>(t: &Tensor<T>) -> Result<Tensor<T>> {
    let s = t.shape();
    t.reshape(&[s[0] * s[1], s[2]])
}

/// The values a rule reads: a bit per input position, and the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Saved {
    /// Bit `i` set: the rule reads input `i`'s values.
    pub(crate) inputs: u8,
    /// The rule reads the op's output.
    pub(crate) output: bool,
}

impl Saved {
    const NOTHING: Saved = Saved {
        inputs: 0,
        output: false,
    };
    const INPUT: Saved = Saved {
        inputs: 1,
        output: false,
    };
    const OUTPUT: Saved = Saved {
        inputs: 0,
        output: true,
    };
}

/// The values each rule below reads, given which inputs need a gradient. Backward checks that
/// none of them was modified in place since the forward pass before running the rule. Keep in
/// step with `backward_op`: a test edits every value a rule is not listed as reading and
/// requires the same gradients.
pub(crate) fn saved<T: Float>(op: &Op<T>, need: &[bool]) -> Saved {
    let needs = |i: usize| need.get(i).copied().unwrap_or(false);
    // For products: the gradient of each factor reads the other one.
    let crossed = Saved {
        inputs: u8::from(needs(1)) | (u8::from(needs(0)) << 1),
        output: false,
    };
    match op {
        Op::Add(..) | Op::Sub(..) => Saved::NOTHING,
        Op::Mul(..) => crossed,
        Op::Div(..) => Saved {
            inputs: u8::from(needs(0) || needs(1)) << 1,
            output: needs(1),
        },
        Op::Neg(_) | Op::AddScalar(_) | Op::MulScalar(..) => Saved::NOTHING,
        Op::PowScalar(..) => Saved::INPUT,
        Op::Exp(_) => Saved::OUTPUT,
        Op::Log(_) => Saved::INPUT,
        Op::Sqrt(_) => Saved::OUTPUT,
        Op::Abs(_) | Op::Clamp(..) | Op::Relu(_) | Op::LeakyRelu(..) => Saved::INPUT,
        Op::Sigmoid(_) | Op::Tanh(_) => Saved::OUTPUT,
        Op::Gelu(_) | Op::Softplus(_) => Saved::INPUT,
        Op::Matmul { .. } => crossed,
        Op::Linear(..) => crossed,
        Op::Permute(..)
        | Op::Reshape(_)
        | Op::Contiguous(_)
        | Op::BroadcastTo(_)
        | Op::Narrow { .. }
        | Op::Concat(..)
        | Op::IndexSelect(..)
        | Op::Gather(..)
        | Op::Sum(..) => Saved::NOTHING,
        Op::Max(..) => Saved::INPUT,
        Op::Softmax(..) | Op::LogSoftmax(..) => Saved::OUTPUT,
        Op::SoftmaxCrossEntropy(..) => Saved::INPUT,
    }
}

/// The gradients of `op`'s inputs (in `op.inputs()` order) given `g = ∂L/∂y` and the output
/// `y`. An entry is `None` where `need` says the input does not require a gradient.
pub(crate) fn backward_op<T: Float>(
    op: &Op<T>,
    y: &Tensor<T>,
    g: &Tensor<T>,
    need: &[bool],
) -> Result<Vec<Option<Tensor<T>>>> {
    let when = |i: usize, f: &dyn Fn() -> Result<Tensor<T>>| -> Result<Option<Tensor<T>>> {
        if need.get(i).copied().unwrap_or(false) {
            f().map(Some)
        } else {
            Ok(None)
        }
    };
    let zero = T::ZERO;
    let one = T::ONE;
    Ok(match op {
        // y = a + b  ⇒  da = g, db = g  (each summed to its operand's shape)
        Op::Add(a, b) => vec![
            when(0, &|| g.sum_to(a.shape()))?,
            when(1, &|| g.sum_to(b.shape()))?,
        ],
        // y = a − b  ⇒  da = g, db = −g
        Op::Sub(a, b) => vec![
            when(0, &|| g.sum_to(a.shape()))?,
            when(1, &|| g.neg()?.sum_to(b.shape()))?,
        ],
        // y = a·b  ⇒  da = g·b, db = g·a
        Op::Mul(a, b) => vec![
            when(0, &|| g.mul(b)?.sum_to(a.shape()))?,
            when(1, &|| g.mul(a)?.sum_to(b.shape()))?,
        ],
        // y = a/b  ⇒  da = g/b, db = −g·a/b² = −g·y/b
        Op::Div(a, b) => vec![
            when(0, &|| g.div(b)?.sum_to(a.shape()))?,
            when(1, &|| g.mul(y)?.div(b)?.neg()?.sum_to(b.shape()))?,
        ],
        // y = −x  ⇒  dx = −g
        Op::Neg(_) => vec![when(0, &|| g.neg())?],
        // y = x + c  ⇒  dx = g
        Op::AddScalar(_) => vec![when(0, &|| Ok(g.clone()))?],
        // y = c·x  ⇒  dx = c·g
        Op::MulScalar(_, c) => vec![when(0, &|| g.mul_scalar(c.to_f64()))?],
        // y = x^p  ⇒  dx = g·p·x^(p−1)
        Op::PowScalar(x, p) => {
            let p = *p;
            vec![when(0, &|| {
                ew(x, g, move |x, g| {
                    if p == T::ZERO {
                        zero
                    } else {
                        g * p * x.powf(p - one)
                    }
                })
            })?]
        }
        // y = eˣ  ⇒  dx = g·y
        Op::Exp(_) => vec![when(0, &|| ew(y, g, |y, g| g * y))?],
        // y = ln x  ⇒  dx = g/x
        Op::Log(x) => vec![when(0, &|| ew(x, g, |x, g| g / x))?],
        // y = √x  ⇒  dx = g/(2y)
        Op::Sqrt(_) => vec![when(0, &|| ew(y, g, |y, g| g / (y + y)))?],
        // y = |x|  ⇒  dx = g·sign(x), sign(0) = 0
        Op::Abs(x) => vec![when(0, &|| {
            ew(x, g, |x, g| {
                if x > zero {
                    g
                } else if x < zero {
                    -g
                } else {
                    zero
                }
            })
        })?],
        // y = clamp(x, lo, hi)  ⇒  dx = g where lo ≤ x ≤ hi (or x is NaN), else 0
        Op::Clamp(x, lo, hi) => {
            let (lo, hi) = (*lo, *hi);
            vec![when(0, &|| {
                ew(x, g, move |x, g| if x < lo || x > hi { zero } else { g })
            })?]
        }
        // y = max(x, 0)  ⇒  dx = g·[x > 0]  (relu'(0) = 0; NaN passes g, as in PyTorch)
        Op::Relu(x) => vec![when(0, &|| {
            ew(x, g, |x, g| if x <= zero { zero } else { g })
        })?],
        // y = x if x > 0 else s·x  ⇒  dx = g if x > 0 else s·g
        Op::LeakyRelu(x, s) => {
            let s = *s;
            vec![when(0, &|| {
                ew(x, g, move |x, g| if x > zero { g } else { s * g })
            })?]
        }
        // y = σ(x)  ⇒  dx = g·y·(1 − y)
        Op::Sigmoid(_) => vec![when(0, &|| ew(y, g, |y, g| g * y * (one - y)))?],
        // y = tanh x  ⇒  dx = g·(1 − y²)
        Op::Tanh(_) => vec![when(0, &|| ew(y, g, |y, g| g * (one - y * y)))?],
        // y = x/2·(1 + tanh u), u = c(x + a·x³)  ⇒  dx = g·[(1 + t)/2 + x/2·(1 − t²)·c(1 + 3a·x²)]
        Op::Gelu(x) => {
            let (c, a, half) = (T::from_f64(GELU_C), T::from_f64(GELU_A), T::from_f64(0.5));
            let three = T::from_f64(3.0);
            vec![when(0, &|| {
                ew(x, g, move |x, g| {
                    let t = (c * (x + a * x * x * x)).tanh();
                    let du = c * (one + three * a * x * x);
                    g * (half * (one + t) + half * x * (one - t * t) * du)
                })
            })?]
        }
        // y = ln(1 + eˣ)  ⇒  dx = g·σ(x)
        Op::Softplus(x) => vec![when(0, &|| ew(x, g, |x, g| g * sigmoid(x)))?],
        // y = op(a)·op(b)  ⇒  d op(a) = g·op(b)ᵀ, d op(b) = op(a)ᵀ·g  (transposes as strides)
        Op::Matmul { a, b, ta, tb } => {
            let (ta, tb) = (*ta, *tb);
            let shared_b = a.rank() == 3 && b.rank() == 2;
            vec![
                when(0, &|| {
                    if ta {
                        mm(b, g, tb, true)
                    } else {
                        mm(g, b, false, !tb)
                    }
                })?,
                when(1, &|| match (shared_b, tb) {
                    (true, false) => mm(&flat2(a)?, &flat2(g)?, true, false),
                    (true, true) => mm(&flat2(g)?, &flat2(a)?, true, false),
                    (false, false) => mm(a, g, !ta, false),
                    (false, true) => mm(g, a, true, ta),
                })?,
            ]
        }
        // y = x·w + b  ⇒  dx = g·wᵀ, dw = xᵀ·g, db = Σ_rows g
        Op::Linear(x, w, _) => vec![
            when(0, &|| mm(g, w, false, true))?,
            when(1, &|| mm(x, g, true, false))?,
            when(2, &|| {
                let n = w.shape()[1];
                Ok(raw(reduce::sum_axis(&g.data()?, g.shape(), 0), &[n]))
            })?,
        ],
        // y = permute(x, p)  ⇒  dx = permute(g, p⁻¹)
        Op::Permute(_, perm) => vec![when(0, &|| {
            let mut inv = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inv[p] = i;
            }
            g.permute(&inv)
        })?],
        // y = reshape(x)  ⇒  dx = reshape(g, shape(x))
        Op::Reshape(x) => vec![when(0, &|| g.reshape(x.shape()))?],
        // y = x laid out row-major  ⇒  dx = g
        Op::Contiguous(_) => vec![when(0, &|| Ok(g.clone()))?],
        // y = broadcast(x)  ⇒  dx = g summed over the broadcast axes
        Op::BroadcastTo(x) => vec![when(0, &|| g.sum_to(x.shape()))?],
        // y = x[start..start+len] along axis  ⇒  dx = g placed there, 0 elsewhere
        Op::Narrow {
            input,
            axis,
            start,
            len,
        } => vec![when(0, &|| {
            let mut d = filled("narrow", input.shape(), zero)?;
            layout::narrow_backward(&g.data()?, input.shape(), *axis, *start, *len, &mut d);
            Ok(raw(d, input.shape()))
        })?],
        // y = concat(xᵢ) along axis  ⇒  dxᵢ = the slice of g at xᵢ's place
        Op::Concat(xs, axis) => {
            let mut start = 0;
            let mut out = Vec::with_capacity(xs.len());
            for (i, x) in xs.iter().enumerate() {
                let len = x.shape()[*axis];
                out.push(when(i, &|| g.narrow(*axis, start, len))?);
                start += len;
            }
            out
        }
        // y = x[idx] along axis  ⇒  dx[idx[j]] += g[j]
        Op::IndexSelect(x, axis, idx) => vec![when(0, &|| {
            let mut d = filled("index_select", x.shape(), zero)?;
            layout::index_add(&g.data()?, x.shape(), *axis, idx, &mut d);
            Ok(raw(d, x.shape()))
        })?],
        // y[.., j, ..] = x[.., idx[.., j, ..], ..]  ⇒  dx[.., idx, ..] += g
        Op::Gather(x, axis, idx) => vec![when(0, &|| {
            let mut d = filled("gather", x.shape(), zero)?;
            layout::scatter_add(&g.data()?, x.shape(), *axis, idx, &mut d);
            Ok(raw(d, x.shape()))
        })?],
        // y = Σ over axes of x  ⇒  dx = g broadcast back over those axes
        Op::Sum(x, axes, _) => vec![when(0, &|| {
            let mut kept = x.shape().to_vec();
            for &a in axes {
                kept[a] = 1;
            }
            g.reshape(&kept)?.broadcast_to(x.shape())
        })?],
        // y = max along axis  ⇒  dx = g at the first arg-max of each group, 0 elsewhere
        Op::Max(x, axis, _) => vec![when(0, &|| {
            let (_, arg) = reduce::max_axis(&x.data()?, x.shape(), *axis);
            let mut d = filled("max", x.shape(), zero)?;
            layout::scatter_add(&g.data()?, x.shape(), *axis, &arg, &mut d);
            Ok(raw(d, x.shape()))
        })?],
        // y = softmax(x)  ⇒  dx = y·(g − Σ g·y)
        Op::Softmax(x, axis) => vec![when(0, &|| {
            let d = reduce::softmax_backward(&y.data()?, &g.data()?, x.shape(), *axis, false);
            Ok(raw(d, x.shape()))
        })?],
        // y = log_softmax(x)  ⇒  dx = g − eʸ·Σ g
        Op::LogSoftmax(x, axis) => vec![when(0, &|| {
            let d = reduce::softmax_backward(&y.data()?, &g.data()?, x.shape(), *axis, true);
            Ok(raw(d, x.shape()))
        })?],
        // yᵢ = −Σⱼ tᵢⱼ log softmax(zᵢ)ⱼ  ⇒  dzᵢⱼ = gᵢ·(softmax(zᵢ)ⱼ·Σₖ tᵢₖ − tᵢⱼ)
        Op::SoftmaxCrossEntropy(z, t) => vec![when(0, &|| {
            let (zd, gd) = (z.data()?, g.data()?);
            let d = reduce::softmax_cross_entropy_backward(&zd, t, &gd, z.shape()[1]);
            Ok(raw(d, z.shape()))
        })?],
    })
}

//! Every derivative of nabla, in one place: one arm per [`Op`] variant, in the enum's order,
//! each headed by its formula and giving, beside the rule, what the rule reads (so the two
//! cannot drift apart). There is no wildcard arm, so a new op cannot compile without its rule.
//! `g` is the gradient of the loss with respect to the op's output `y`.
//!
//! Each rule is written once, with tensor operations, and serves both kinds of backward pass:
//! plain backpropagation runs it under `no_grad` (nothing is recorded, so it costs the kernels
//! alone), and `grad(.., create_graph: true)` runs it with recording on, so the gradient it
//! returns carries a graph and can be differentiated again. Where a fused kernel matters
//! (relu & co., the adjoints of gathers) the rule calls an op that is itself differentiable
//! ([`Tensor::step_mul`], [`Tensor::index_add`], [`Tensor::scatter_add`]). A rule may take a
//! shortcut in plain backward only, where a value the forward pass kept stands in for a
//! differentiable op (GELU's slope, for `gelu_backward`).
//!
//! Broadcast operands get their gradient summed back to their own shape (`sum_to`). Before a
//! rule runs, the graph walk checks that the values it reads (listed by [`saved`]) were not
//! modified in place since the forward pass.

use super::{checkpoint, Op, Step};
use crate::error::Result;
use crate::tensor::float::{GELU_A, GELU_C};
use crate::tensor::kernels::{self, reduce};
use crate::tensor::{Float, Tensor};

/// Flattens a 3-D tensor's first two axes (for a shared right operand's gradient).
fn flat2<T: Float>(t: &Tensor<T>) -> Result<Tensor<T>> {
    let s = t.shape();
    t.reshape(&[s[0] * s[1], s[2]])
}

/// `g` with a size-1 axis put back where a reduction without `keepdim` removed it.
fn keep_axes<T: Float>(g: &Tensor<T>, x_shape: &[usize], axes: &[usize]) -> Result<Tensor<T>> {
    let mut kept = x_shape.to_vec();
    for &a in axes {
        kept[a] = 1;
    }
    g.reshape(&kept)
}

/// The values a rule reads: a bit per input position, and the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Saved {
    /// Bit `i` set: the rule reads input `i`'s values.
    pub(crate) inputs: u8,
    /// The rule reads the op's output.
    pub(crate) output: bool,
    /// The rule reads every input (checkpoint recomputation), however many there are.
    pub(crate) all_inputs: bool,
}

impl Saved {
    const NOTHING: Saved = Saved {
        inputs: 0,
        output: false,
        all_inputs: false,
    };
    const INPUT: Saved = Saved {
        inputs: 1,
        output: false,
        all_inputs: false,
    };
    const OUTPUT: Saved = Saved {
        inputs: 0,
        output: true,
        all_inputs: false,
    };
    /// The inputs whose bits are set.
    const fn inputs(bits: u8) -> Saved {
        Saved {
            inputs: bits,
            output: false,
            all_inputs: false,
        }
    }
}

/// The gradients a rule returns, one per input (`None` where not needed).
type Grads<T> = Vec<Option<Tensor<T>>>;

/// How [`rules`] is asked: for what a rule reads (`run: None`), or to run it on the output `y`
/// and its gradient `g`.
struct Ask<'a, T: Float> {
    run: Option<(&'a Tensor<T>, &'a Tensor<T>)>,
}

/// What [`rules`] answers.
enum Answer<T: Float> {
    Reads(Saved),
    Grads(Grads<T>),
}

impl<T: Float> Ask<'_, T> {
    /// One rule: it reads `reads`; `f(y, g)` computes the gradients.
    fn rule(
        &self,
        reads: Saved,
        f: impl FnOnce(&Tensor<T>, &Tensor<T>) -> Result<Grads<T>>,
    ) -> Result<Answer<T>> {
        match self.run {
            None => Ok(Answer::Reads(reads)),
            Some((y, g)) => f(y, g).map(Answer::Grads),
        }
    }
}

/// The values `op`'s rule reads, given which inputs need a gradient. Backward checks that none
/// of them was modified in place since the forward pass before running the rule. A test edits,
/// in the graphs of every op case, each recorded value a rule is not listed as reading and
/// requires the same gradients (values a rule keeps as its own copy, such as the cross-entropy
/// target, are outside that test: they are copies for that reason).
pub(crate) fn saved<T: Float>(op: &Op<T>, need: &[bool]) -> Saved {
    match rules(op, need, Ask { run: None }) {
        Ok(Answer::Reads(s)) => s,
        _ => unreachable!("internal: a rule asked what it reads ran instead"),
    }
}

/// The gradients of `op`'s inputs (in `op.inputs()` order) given `g = ∂L/∂y` and the output
/// `y`. An entry is `None` where `need` says the input does not require a gradient, or where
/// the gradient is zero by construction (the `x` of `step_mul`).
pub(crate) fn backward_op<T: Float>(
    op: &Op<T>,
    y: &Tensor<T>,
    g: &Tensor<T>,
    need: &[bool],
) -> Result<Grads<T>> {
    match rules(op, need, Ask { run: Some((y, g)) })? {
        Answer::Grads(grads) => Ok(grads),
        Answer::Reads(_) => unreachable!("internal: a rule asked to run answered what it reads"),
    }
}

/// Products of at least this many multiply-adds make the two gradients of a product worth
/// computing side by side (below it, waking a second thread costs more than it saves).
const PAIR_MIN_MACS: usize = 1 << 21;

/// Products whose output has at least this many rows (all axes but the last) compute their two
/// gradients one after the other, each on all threads: cut into row parts they scale well, and
/// side by side the thread with the slower one (a transposed operand to pack) kept the other
/// waiting. The baby GPT's 768-row products: 300 steps in 6.42 vs 6.80 s (medians of five,
/// alternated; backward products 2.60–2.75 vs 2.92 s per 300 steps in profiles). Fewer rows (a small MLP's
/// batch of 128) keep the side-by-side split, which was measured to pay there.
const PAIR_MAX_ROWS: usize = 512;

/// Rows of a product's output: all its axes but the last.
fn output_rows<T: Float>(y: &Tensor<T>) -> usize {
    let s = y.shape();
    s[..s.len().saturating_sub(1)].iter().product()
}

/// The gradients of a product's two factors, `da()` and `db()` (each computed only where `need`
/// asks for it), each costing `macs` multiply-adds, the product's output having `rows` rows.
/// Side by side, each on half of the threads products may use, when both are needed, large
/// and of fewer than [`PAIR_MAX_ROWS`] rows, nothing is being recorded (plain
/// backward; a recorded rule keeps one order of recording), anomaly detection is off and two
/// threads are there; one after the other otherwise. Side by side, a product of the m = 128
/// size of a small MLP runs on one thread instead of two, where it scales poorly
/// (`bench/README.md`). Results are the same either way: every product is bit-identical for any
/// thread count. Each side runs with this thread's allocation limit and recording off, wherever
/// rayon runs it.
fn product_grads<T: Float>(
    need: &[bool],
    (macs, rows): (usize, usize),
    da: impl Fn() -> Result<Tensor<T>> + Send + Sync,
    db: impl Fn() -> Result<Tensor<T>> + Send + Sync,
) -> Result<[Option<Tensor<T>>; 2]> {
    let needs = |i: usize| need.get(i).copied().unwrap_or(false);
    let threads = kernels::threads();
    if !(needs(0) && needs(1))
        || macs < PAIR_MIN_MACS
        || rows >= PAIR_MAX_ROWS
        || threads < 2
        || super::is_grad_enabled()
        || super::anomaly::is_detecting()
    {
        return Ok([
            needs(0).then(&da).transpose()?,
            needs(1).then(&db).transpose()?,
        ]);
    }
    let limit = crate::tensor::storage::allocation_limit();
    let side = move |t: usize, f: &dyn Fn() -> Result<Tensor<T>>| {
        super::no_grad(|| {
            crate::tensor::with_allocation_limit(limit, || kernels::with_threads(t, f))
        })
    };
    let (ra, rb) = rayon::join(
        || side(threads - threads / 2, &da),
        || side(threads / 2, &db),
    );
    Ok([Some(ra?), Some(rb?)])
}

/// Every op's rule, with what it reads.
fn rules<T: Float>(op: &Op<T>, need: &[bool], r: Ask<'_, T>) -> Result<Answer<T>> {
    let needs = |i: usize| need.get(i).copied().unwrap_or(false);
    let when = |i: usize, f: &dyn Fn() -> Result<Tensor<T>>| -> Result<Option<Tensor<T>>> {
        if needs(i) {
            f().map(Some)
        } else {
            Ok(None)
        }
    };
    // For products: the gradient of each factor reads the other one.
    let crossed = Saved::inputs(u8::from(needs(1)) | (u8::from(needs(0)) << 1));
    match op {
        // y = a + b  ⇒  da = g, db = g  (each summed to its operand's shape)
        Op::Add(a, b) => r.rule(Saved::NOTHING, |_, g| {
            Ok(vec![
                when(0, &|| g.sum_to(a.shape()))?,
                when(1, &|| g.sum_to(b.shape()))?,
            ])
        }),
        // y = a − b  ⇒  da = g, db = −g
        Op::Sub(a, b) => r.rule(Saved::NOTHING, |_, g| {
            Ok(vec![
                when(0, &|| g.sum_to(a.shape()))?,
                when(1, &|| g.neg()?.sum_to(b.shape()))?,
            ])
        }),
        // y = a·b  ⇒  da = g·b, db = g·a
        Op::Mul(a, b) => r.rule(crossed, |_, g| {
            Ok(vec![
                when(0, &|| g.mul(b)?.sum_to(a.shape()))?,
                when(1, &|| g.mul(a)?.sum_to(b.shape()))?,
            ])
        }),
        // y = a/b  ⇒  da = g/b, db = −g·a/b² = −g·y/b
        Op::Div(a, b) => {
            let reads = Saved {
                inputs: u8::from(needs(0) || needs(1)) << 1,
                output: needs(1),
                all_inputs: false,
            };
            r.rule(reads, |y, g| {
                Ok(vec![
                    when(0, &|| g.div(b)?.sum_to(a.shape()))?,
                    when(1, &|| g.mul(y)?.div(b)?.neg()?.sum_to(b.shape()))?,
                ])
            })
        }
        // y = −x  ⇒  dx = −g
        Op::Neg(_) => r.rule(Saved::NOTHING, |_, g| Ok(vec![when(0, &|| g.neg())?])),
        // y = x + c  ⇒  dx = g
        Op::AddScalar(_) => r.rule(Saved::NOTHING, |_, g| Ok(vec![when(0, &|| Ok(g.clone()))?])),
        // y = c·x  ⇒  dx = c·g
        Op::MulScalar(_, c) => r.rule(Saved::NOTHING, |_, g| {
            Ok(vec![when(0, &|| g.mul_scalar(c.to_f64()))?])
        }),
        // y = x^p  ⇒  dx = g·p·x^(p−1)  (0 for p = 0)
        Op::PowScalar(x, p) => r.rule(Saved::INPUT, |_, g| {
            Ok(vec![when(0, &|| {
                let p = p.to_f64();
                if p == 0.0 {
                    Tensor::zeros(x.shape())
                } else {
                    g.mul(&x.pow_scalar(p - 1.0)?)?.mul_scalar(p)
                }
            })?])
        }),
        // y = eˣ  ⇒  dx = g·y
        Op::Exp(_) => r.rule(Saved::OUTPUT, |y, g| Ok(vec![when(0, &|| g.mul(y))?])),
        // y = ln x  ⇒  dx = g/x
        Op::Log(x) => r.rule(Saved::INPUT, |_, g| Ok(vec![when(0, &|| g.div(x))?])),
        // y = √x  ⇒  dx = g/(2y)
        Op::Sqrt(_) => r.rule(Saved::OUTPUT, |y, g| {
            Ok(vec![when(0, &|| g.div(y)?.mul_scalar(0.5))?])
        }),
        // y = |x|  ⇒  dx = g·sign(x), sign(0) = 0
        Op::Abs(x) => r.rule(Saved::INPUT, |_, g| {
            Ok(vec![when(0, &|| g.step_mul(x, Step::Sign))?])
        }),
        // y = clamp(x, lo, hi)  ⇒  dx = g where lo ≤ x ≤ hi (or x is NaN), else 0
        Op::Clamp(x, lo, hi) => r.rule(Saved::INPUT, |_, g| {
            let step = Step::Clamp(lo.to_f64(), hi.to_f64());
            Ok(vec![when(0, &|| g.step_mul(x, step))?])
        }),
        // y = max(x, 0)  ⇒  dx = g·[x > 0]  (relu'(0) = 0; NaN passes g, as in PyTorch)
        Op::Relu(x) => r.rule(Saved::INPUT, |_, g| {
            Ok(vec![when(0, &|| g.step_mul(x, Step::Relu))?])
        }),
        // y = x if x > 0 else s·x  ⇒  dx = g if x > 0 else s·g
        Op::LeakyRelu(x, s) => r.rule(Saved::INPUT, |_, g| {
            Ok(vec![when(0, &|| {
                g.step_mul(x, Step::LeakyRelu(s.to_f64()))
            })?])
        }),
        // y = σ(x)  ⇒  dx = g·y·(1 − y)
        Op::Sigmoid(_) => r.rule(Saved::OUTPUT, |y, g| {
            Ok(vec![when(0, &|| {
                g.mul(y)?.mul(&y.neg()?.add_scalar(1.0)?)
            })?])
        }),
        // y = tanh x  ⇒  dx = g·(1 − y²)
        Op::Tanh(_) => r.rule(Saved::OUTPUT, |y, g| {
            Ok(vec![when(0, &|| {
                g.mul(&y.mul(y)?.neg()?.add_scalar(1.0)?)
            })?])
        }),
        // y = x/2·(1 + tanh u), u = c(x + a·x³)  ⇒  dx = g·[(1 + t)/2 + x/2·(1 − t²)·c(1 + 3a·x²)]
        // (plain backward multiplies by the slope the forward pass kept, the same values;
        // under anomaly detection the op that checks its output stays `gelu_backward`)
        Op::Gelu(x, slope) => r.rule(Saved::INPUT, |_, g| {
            Ok(vec![when(0, &|| match slope {
                Some(s) if !super::is_grad_enabled() && !super::anomaly::is_detecting() => g.mul(s),
                _ => g.gelu_backward(x),
            })?])
        }),
        // y = ln(1 + eˣ)  ⇒  dx = g·σ(x)
        Op::Softplus(x) => r.rule(Saved::INPUT, |_, g| {
            Ok(vec![when(0, &|| g.mul(&x.sigmoid()?))?])
        }),
        // y = op(a)·op(b)  ⇒  d op(a) = g·op(b)ᵀ, d op(b) = op(a)ᵀ·g  (transposes as strides)
        Op::Matmul(a, b, ta, tb) => r.rule(crossed, |y, g| {
            let (ta, tb) = (*ta, *tb);
            let shared_b = a.rank() == 3 && b.rank() == 2;
            // Both gradients cost m·k·n multiply-adds: a's elements times y's last axis.
            let macs = a
                .numel()
                .saturating_mul(y.shape().last().copied().unwrap_or(0));
            let da = || {
                if ta {
                    b.matmul_t(g, tb, true)
                } else {
                    g.matmul_t(b, false, !tb)
                }
            };
            let db = || match (shared_b, tb) {
                (true, false) => flat2(a)?.matmul_t(&flat2(g)?, true, false),
                (true, true) => flat2(g)?.matmul_t(&flat2(a)?, true, false),
                (false, false) => a.matmul_t(g, !ta, false),
                (false, true) => g.matmul_t(a, true, ta),
            };
            Ok(product_grads(need, (macs, output_rows(y)), da, db)?.into())
        }),
        // y = x·w + b  ⇒  dx = g·wᵀ, dw = xᵀ·g, db = Σ_rows g
        Op::Linear(x, w, _) => r.rule(crossed, |_, g| {
            let macs = x.numel().saturating_mul(w.shape()[1]);
            let [dx, dw] = product_grads(
                need,
                (macs, output_rows(g)),
                || g.matmul_t(w, false, true),
                || x.matmul_t(g, true, false),
            )?;
            Ok(vec![dx, dw, when(2, &|| g.sum(&[0], false))?])
        }),
        // y = permute(x, p)  ⇒  dx = permute(g, p⁻¹)
        Op::Permute(_, perm) => r.rule(Saved::NOTHING, |_, g| {
            let mut inv = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inv[p] = i;
            }
            Ok(vec![when(0, &|| g.permute(&inv))?])
        }),
        // y = reshape(x)  ⇒  dx = reshape(g, shape(x))
        Op::Reshape(x) => r.rule(Saved::NOTHING, |_, g| {
            Ok(vec![when(0, &|| g.reshape(x.shape()))?])
        }),
        // y = x laid out row-major  ⇒  dx = g
        Op::Contiguous(_) => r.rule(Saved::NOTHING, |_, g| Ok(vec![when(0, &|| Ok(g.clone()))?])),
        // y = broadcast(x)  ⇒  dx = g summed over the broadcast axes
        Op::BroadcastTo(x) => r.rule(Saved::NOTHING, |_, g| {
            Ok(vec![when(0, &|| g.sum_to(x.shape()))?])
        }),
        // y = x[start..start+len] along axis  ⇒  dx = g placed there, 0 elsewhere
        Op::Narrow(x, axis, start, len) => r.rule(Saved::NOTHING, |_, g| {
            let at: Vec<usize> = (*start..start + len).collect();
            Ok(vec![when(0, &|| {
                g.index_add(*axis, &at, x.shape()[*axis])
            })?])
        }),
        // y = concat(xᵢ) along axis  ⇒  dxᵢ = the slice of g at xᵢ's place
        Op::Concat(xs, axis) => r.rule(Saved::NOTHING, |_, g| {
            let mut start = 0;
            let mut out = Vec::with_capacity(xs.len());
            for (i, x) in xs.iter().enumerate() {
                let len = x.shape()[*axis];
                out.push(when(i, &|| g.narrow(*axis, start, len))?);
                start += len;
            }
            Ok(out)
        }),
        // y = x[idx] along axis  ⇒  dx[idx[j]] += g[j]
        Op::IndexSelect(x, axis, idx) => r.rule(Saved::NOTHING, |_, g| {
            Ok(vec![when(0, &|| {
                g.index_add(*axis, idx, x.shape()[*axis])
            })?])
        }),
        // y[.., j, ..] = x[.., idx[.., j, ..], ..]  ⇒  dx[.., idx, ..] += g
        Op::Gather(x, axis, idx) => r.rule(Saved::NOTHING, |_, g| {
            Ok(vec![when(0, &|| {
                // The gather checked these indices against this length when it ran.
                g.scatter_add_shared(*axis, idx, x.shape()[*axis], false)
            })?])
        }),
        // y = Σ over axes of x  ⇒  dx = g broadcast back over those axes
        Op::Sum(x, axes, _) => r.rule(Saved::NOTHING, |_, g| {
            Ok(vec![when(0, &|| {
                keep_axes(g, x.shape(), axes)?.broadcast_to(x.shape())
            })?])
        }),
        // y = max along axis  ⇒  dx = g at the first arg-max of each group, 0 elsewhere
        Op::Max(x, axis, _) => r.rule(Saved::INPUT, |_, g| {
            Ok(vec![when(0, &|| {
                let (_, arg) = reduce::max_axis(&x.data()?, x.shape(), *axis);
                keep_axes(g, x.shape(), &[*axis])?.scatter_add(*axis, &arg, x.shape()[*axis])
            })?])
        }),
        // y = softmax(x)  ⇒  dx = y·(g − Σ g·y)
        Op::Softmax(_, axis) => r.rule(Saved::OUTPUT, |y, g| {
            Ok(vec![when(0, &|| {
                let s = g.mul(y)?.sum(&[*axis], true)?;
                g.sub(&s)?.mul(y)
            })?])
        }),
        // y = log_softmax(x)  ⇒  dx = g − eʸ·Σ g
        Op::LogSoftmax(_, axis) => r.rule(Saved::OUTPUT, |y, g| {
            Ok(vec![when(0, &|| {
                g.sub(&y.exp()?.mul(&g.sum(&[*axis], true)?)?)
            })?])
        }),
        // yᵢ = −Σⱼ tᵢⱼ log softmax(zᵢ)ⱼ  ⇒  dzᵢⱼ = gᵢ·(softmax(zᵢ)ⱼ·Σₖ tᵢₖ − tᵢⱼ)
        Op::SoftmaxCrossEntropy(z, t, mass) => r.rule(Saved::INPUT, |_, g| {
            Ok(vec![when(0, &|| {
                if !super::is_grad_enabled() {
                    // Not recorded: the same ops' values in one pass per row.
                    return g.softmax_cross_entropy_grad(z, t, mass.as_ref());
                }
                let p = z.softmax(1)?;
                let p = match mass {
                    Some(m) => p.mul(m)?,
                    None => p, // every row of t sums to exactly 1
                };
                p.sub(t)?.mul(&g.reshape(&[z.shape()[0], 1])?)
            })?])
        }),
        // y = g·s(x), s piecewise constant  ⇒  dg = g'·s(x), dx = 0 (almost everywhere)
        Op::StepMul(_, x, step) => r.rule(Saved::inputs(u8::from(needs(0)) << 1), |_, g| {
            Ok(vec![when(0, &|| g.step_mul(x, *step))?, None])
        }),
        // y = h·gelu'(x)  ⇒  dh = g·gelu'(x), dx = g·h·gelu''(x) (composed)
        Op::GeluBackward(h, x) => r.rule(Saved::inputs(0b11), |_, g| {
            Ok(vec![
                when(0, &|| g.gelu_backward(x))?,
                when(1, &|| g.mul(h)?.mul(&gelu_second(x)?))?,
            ])
        }),
        // y = index_add(h, idx)  ⇒  dh = g[idx]
        Op::IndexAdd(_, axis, idx, _) => r.rule(Saved::NOTHING, |_, g| {
            Ok(vec![when(0, &|| g.index_select(*axis, idx))?])
        }),
        // y = scatter_add(h, idx)  ⇒  dh = gather(g, idx)
        Op::ScatterAdd(h, axis, idx, _) => r.rule(Saved::NOTHING, |_, g| {
            Ok(vec![when(0, &|| {
                if h.numel() == 0 {
                    Tensor::zeros(h.shape()) // nothing to gather (gather needs a non-empty slab)
                } else {
                    g.gather(*axis, idx)
                }
            })?])
        }),
        // y = conv(x, w) + b  ⇒  dx = conv_input(g, w), dw = conv_weight(x, g), db = Σ_n,h,w g
        Op::Conv2d(x, w, b, o) => r.rule(crossed, |_, g| {
            let (s, k) = (x.shape(), w.shape());
            let mut grads = vec![
                when(0, &|| g.conv2d_input(w, *o, (s[2], s[3])))?,
                when(1, &|| x.conv2d_weight(g, *o, (k[2], k[3])))?,
            ];
            if b.is_some() {
                grads.push(when(2, &|| g.sum(&[0, 2, 3], false))?);
            }
            Ok(grads)
        }),
        // y = conv_input(e, w), linear in each  ⇒  de = conv(g, w), dw = conv_weight(g, e)
        Op::Conv2dInput(e, w, o, _) => r.rule(crossed, |_, g| {
            let k = w.shape();
            Ok(vec![
                when(0, &|| g.conv2d(w, None, *o))?,
                when(1, &|| g.conv2d_weight(e, *o, (k[2], k[3])))?,
            ])
        }),
        // y = conv_weight(x, e), linear in each  ⇒  dx = conv_input(e, g), de = conv(x, g)
        Op::Conv2dWeight(x, e, o, _) => r.rule(crossed, |_, g| {
            let s = x.shape();
            Ok(vec![
                when(0, &|| e.conv2d_input(g, *o, (s[2], s[3])))?,
                when(1, &|| x.conv2d(g, None, *o))?,
            ])
        }),
        // y = avg_pool(x), linear  ⇒  dx = avg_pool_adjoint(g)
        Op::AvgPool2d(x, o) => r.rule(Saved::NOTHING, |_, g| {
            let s = x.shape();
            Ok(vec![when(0, &|| g.avg_pool2d_adjoint(*o, (s[2], s[3])))?])
        }),
        // y = avg_pool_adjoint(e), linear  ⇒  de = avg_pool(g)
        Op::AvgPool2dAdjoint(_, o, _) => r.rule(Saved::NOTHING, |_, g| {
            Ok(vec![when(0, &|| g.avg_pool2d_raw(*o))?])
        }),
        // y = x̂·w + b, x̂ = (x − μ)/σ over the batch  ⇒  db = Σg, dw = Σ g·x̂,
        // dx = w/σ·(g − mean(g) − x̂·mean(g·x̂)); recorded: the chain rule through the composition
        Op::BatchNorm(x, w, b, st, eps) => {
            let reads = Saved::inputs(if w.is_some() { 0b11 } else { 0b1 });
            r.rule(reads, |_, g| {
                if super::is_grad_enabled() {
                    let y = x.batch_norm_composed(w.as_ref(), b.as_ref(), *eps)?;
                    return through_composition(&op.inputs(), need, &y, g);
                }
                let slot = |t: &Option<Tensor<T>>, before: usize| t.as_ref().map(|_| before);
                let (wi, bi) = (slot(w, 1), slot(b, 1 + usize::from(w.is_some())));
                let [dx, dw, db] = g.batch_norm_grads(
                    x,
                    w.as_ref(),
                    st,
                    [needs(0), wi.is_some_and(needs), bi.is_some_and(needs)],
                )?;
                Ok(present_grads([dx, dw, db], w.is_some(), b.is_some()))
            })
        }
        // y = x̂·w + b, x̂ = (x − μ)/σ over each row  ⇒  db = Σ_rows g, dw = Σ_rows g·x̂,
        // dx = (gw − mean(gw) − x̂·mean(gw·x̂))/σ with gw = g·w; recorded: through the composition
        Op::LayerNorm(x, w, b, st, eps) => {
            let reads = Saved::inputs(if w.is_some() { 0b11 } else { 0b1 });
            r.rule(reads, |_, g| {
                if super::is_grad_enabled() {
                    let d = x.numel().checked_div(st.mean.len()).unwrap_or(0);
                    let y = x.layer_norm_composed(d, w.as_ref(), b.as_ref(), *eps)?;
                    return through_composition(&op.inputs(), need, &y, g);
                }
                let slot = |t: &Option<Tensor<T>>, before: usize| t.as_ref().map(|_| before);
                let (wi, bi) = (slot(w, 1), slot(b, 1 + usize::from(w.is_some())));
                let [dx, dw, db] = g.layer_norm_grads(
                    x,
                    w.as_ref(),
                    st,
                    [needs(0), wi.is_some_and(needs), bi.is_some_and(needs)],
                )?;
                Ok(present_grads([dx, dw, db], w.is_some(), b.is_some()))
            })
        }
        // y = softmax(c·x) (masked entries 0)  ⇒  dx = c·y·(g − Σ g·y)
        Op::AttentionSoftmax(_, c, _) => r.rule(Saved::OUTPUT, |y, g| {
            Ok(vec![when(0, &|| g.softmax_backward(y, c.to_f64()))?])
        }),
        // z = c·y⊙(h − s), s = Σ h⊙y  ⇒  dh = softmax_backward(g, y, c),
        // dy = c·(g⊙(h − s) − h·Σ g⊙y) (composed)
        Op::SoftmaxBackward(h, y, c) => r.rule(Saved::inputs(0b11), |_, g| {
            let last = y.rank() - 1;
            Ok(vec![
                when(0, &|| g.softmax_backward(y, c.to_f64()))?,
                when(1, &|| {
                    let s = h.mul(y)?.sum(&[last], true)?;
                    let s2 = g.mul(y)?.sum(&[last], true)?;
                    g.mul(&h.sub(&s)?)?
                        .sub(&h.mul(&s2)?)?
                        .mul_scalar(c.to_f64())
                })?,
            ])
        }),
        // y = P·v, P = softmax(c·q·kᵀ)  ⇒  dv = Pᵀ·g, dS = c·P⊙(g·vᵀ − Σ P⊙(g·vᵀ)),
        // dq = dS·k, dk = dSᵀ·q (each head in one pass); recorded: through the composition
        Op::Attention(q, k, v, c, causal) => r.rule(Saved::inputs(0b111), |_, g| {
            if super::is_grad_enabled() {
                let y = q.attention_composed(k, v, c.to_f64(), *causal)?;
                return through_composition(&op.inputs(), need, &y, g);
            }
            let [dq, dk, dv] =
                g.attention_grads(q, k, v, *c, *causal, [needs(0), needs(1), needs(2)])?;
            Ok(vec![dq, dk, dv])
        }),
        // y = merge(attention(split(qkv)))  ⇒  d(qkv) = each head's dq, dk, dv in its own
        // columns; recorded: through the composition
        Op::PackedAttention(x, heads, c, causal, keep) => r.rule(Saved::INPUT, |_, g| {
            if super::is_grad_enabled() {
                let y = x.packed_attention_composed(*heads, c.to_f64(), *causal, *keep)?;
                return through_composition(&op.inputs(), need, &y, g);
            }
            Ok(vec![when(0, &|| {
                g.packed_attention_grad(x, *heads, (*c, *causal, *keep))
            })?])
        }),
        // y = f(xs), recomputed  ⇒  dxs = the chain rule through f's recorded graph
        Op::Checkpoint(c) => {
            let reads = Saved {
                inputs: 0,
                output: false,
                all_inputs: true,
            };
            r.rule(reads, |y, g| checkpoint::backward(c, y, g, need))
        }
    }
}

/// The gradients, in the op's input order, of a fused op whose inputs are `present` (weight
/// and bias optional): `dx`, then `dw` and `db` where those inputs exist.
fn present_grads<T: Float>(
    [dx, dw, db]: [Option<Tensor<T>>; 3],
    has_w: bool,
    has_b: bool,
) -> Grads<T> {
    let mut grads = vec![dx];
    if has_w {
        grads.push(dw);
    }
    if has_b {
        grads.push(db);
    }
    grads
}

/// The gradients (where `need` asks) of `inputs` for the output gradient `g`, through `y`: the
/// same function as a fused op, composed of differentiable ops, so that a gradient taken with
/// `create_graph` can be differentiated again (the fused rule's own kernels are not).
fn through_composition<T: Float>(
    inputs: &[&Tensor<T>],
    need: &[bool],
    y: &Tensor<T>,
    g: &Tensor<T>,
) -> Result<Grads<T>> {
    let wanted: Vec<Tensor<T>> = inputs
        .iter()
        .zip(need)
        .filter(|(_, n)| **n)
        .map(|(t, _)| (*t).clone())
        .collect();
    let opts = super::GradOptions {
        create_graph: true,
        allow_unused: true,
        grad_outputs: Some(vec![g.clone()]),
    };
    let mut grads = super::grad(std::slice::from_ref(y), &wanted, opts)?.into_iter();
    Ok(need
        .iter()
        .map(|&n| if n { grads.next() } else { None })
        .collect())
}

/// GELU's (tanh approximation) second derivative, composed of differentiable ops: with
/// `u = c(x + a x³)`, `t = tanh u`, `s = 1 − t²`, `u' = c(1 + 3a x²)`:
/// `gelu''(x) = s·(u' + x/2·(6ac·x − 2t·u'²))`.
fn gelu_second<T: Float>(x: &Tensor<T>) -> Result<Tensor<T>> {
    let x2 = x.mul(x)?;
    let t = x2
        .mul_scalar(GELU_A)?
        .add_scalar(1.0)?
        .mul(x)?
        .mul_scalar(GELU_C)?
        .tanh()?;
    let du = x2
        .mul_scalar(3.0 * GELU_A)?
        .add_scalar(1.0)?
        .mul_scalar(GELU_C)?;
    let s = t.mul(&t)?.neg()?.add_scalar(1.0)?;
    let inner = x
        .mul_scalar(6.0 * GELU_A * GELU_C)?
        .sub(&t.mul(&du)?.mul(&du)?.mul_scalar(2.0)?)?
        .mul(x)?
        .mul_scalar(0.5)?;
    s.mul(&du.add(&inner)?)
}

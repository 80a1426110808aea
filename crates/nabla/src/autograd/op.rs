//! The closed set of recorded operations, declared once each in [`ops!`]: a variant of [`Op`]
//! (holding its inputs, which keeps them alive for backward, and whatever else its derivative
//! needs), its [`OpKind`], its name, and which of its fields are its inputs are all generated
//! from that one declaration. Each op's derivative, beside the statement of what it reads, is
//! in `backward.rs`; adding an op is described in `docs/adding-an-op.md`.

use std::sync::Arc;

use crate::tensor::kernels::conv::{Conv2dOptions, PoolOptions};
use crate::tensor::kernels::counter::Keep;
use crate::tensor::kernels::norm::NormStats;
use crate::tensor::kernels::rows::RowStats;
use crate::tensor::{Float, Tensor};

/// Declares every op: `Variant(field: Type, ..) "name" => inputs[, kept K];` where `inputs` is
/// an expression over the fields (bound by reference) giving the tensor inputs in the order
/// backward returns their gradients, and `K` (when the op keeps tensors beside its inputs, such
/// as GELU's slope) lists those. Generates [`Op`], [`OpKind`], `OpKind::ALL`,
/// [`OpKind::name`], [`Op::kind`], [`Op::inputs`] and `Op::kept`.
macro_rules! ops {
    (@kept) => { Vec::new() };
    (@kept $kept:expr) => { $kept };
    ($(
        $(#[doc = $doc:literal])+
        $name:ident ( $($field:ident : $ty:ty),* $(,)? ) $text:literal => $inputs:expr
            $(, kept $kept:expr)?;
    )*) => {
        /// The kind of an [`Op`], without its operands: for listings, statistics and the test
        /// that every kind has a gradient check.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum OpKind { $(#[doc = $text] $name),* }

        impl OpKind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [OpKind] = &[$(OpKind::$name),*];

            /// The op's name as the public method spells it.
            pub fn name(self) -> &'static str {
                match self { $(OpKind::$name => $text),* }
            }
        }

        /// A recorded operation: how a tensor was made from its inputs. The fields of each
        /// variant are named in its declaration in `op.rs` (the `ops!` list).
        #[derive(Clone)]
        pub enum Op<T: Float> {
            $( $(#[doc = $doc])+ $name($($ty),*) ),*
        }

        impl<T: Float> Op<T> {
            /// This op's kind.
            pub fn kind(&self) -> OpKind {
                match self { $(Op::$name(..) => OpKind::$name),* }
            }

            /// The tensor inputs, in the order backward returns their gradients.
            #[allow(unused_variables)]
            pub fn inputs(&self) -> Vec<&Tensor<T>> {
                match self { $(Op::$name($($field),*) => $inputs),* }
            }

            /// Tensors the op keeps besides its inputs (detached values its rule reads:
            /// GELU's slope, the cross-entropy target): part of the memory a recorded graph
            /// holds.
            #[allow(unused_variables)]
            pub(crate) fn kept(&self) -> Vec<&Tensor<T>> {
                match self { $(Op::$name($($field),*) => ops!(@kept $($kept)?)),* }
            }
        }
    };
}

ops! {
    /// `a + b` (broadcasting).
    Add(a: Tensor<T>, b: Tensor<T>) "add" => vec![a, b];
    /// `a − b` (broadcasting).
    Sub(a: Tensor<T>, b: Tensor<T>) "sub" => vec![a, b];
    /// `a ⊙ b` (broadcasting).
    Mul(a: Tensor<T>, b: Tensor<T>) "mul" => vec![a, b];
    /// `a ⊘ b` (broadcasting).
    Div(a: Tensor<T>, b: Tensor<T>) "div" => vec![a, b];
    /// `−x`.
    Neg(x: Tensor<T>) "neg" => vec![x];
    /// `x + c`.
    AddScalar(x: Tensor<T>) "add_scalar" => vec![x];
    /// `c·x`: (x, c).
    MulScalar(x: Tensor<T>, c: T) "mul_scalar" => vec![x];
    /// `x^p`: (x, p).
    PowScalar(x: Tensor<T>, p: T) "pow_scalar" => vec![x];
    /// `e^x` (backward reads the output).
    Exp(x: Tensor<T>) "exp" => vec![x];
    /// `ln x`.
    Log(x: Tensor<T>) "log" => vec![x];
    /// `√x` (backward reads the output).
    Sqrt(x: Tensor<T>) "sqrt" => vec![x];
    /// `|x|`.
    Abs(x: Tensor<T>) "abs" => vec![x];
    /// `min(max(x, lo), hi)`: (x, lo, hi).
    Clamp(x: Tensor<T>, lo: T, hi: T) "clamp" => vec![x];
    /// `max(x, 0)`.
    Relu(x: Tensor<T>) "relu" => vec![x];
    /// `x` for x > 0, `slope·x` otherwise: (x, slope).
    LeakyRelu(x: Tensor<T>, slope: T) "leaky_relu" => vec![x];
    /// `1 / (1 + e^−x)` (backward reads the output).
    Sigmoid(x: Tensor<T>) "sigmoid" => vec![x];
    /// `tanh x` (backward reads the output).
    Tanh(x: Tensor<T>) "tanh" => vec![x];
    /// GELU, tanh approximation: (x, slope), where `slope` is `gelu'(x)`, written by the
    /// forward pass when it was recorded on a contiguous `x` (held detached: a constant for plain
    /// backward; `create_graph` backward differentiates `gelu_backward` instead).
    Gelu(x: Tensor<T>, slope: Option<Tensor<T>>) "gelu" => vec![x], kept slope.iter().collect();
    /// `ln(1 + e^x)`.
    Softplus(x: Tensor<T>) "softplus" => vec![x];
    /// `op(a)·op(b)`, 2-D or batched 3-D: (a, b, ta, tb), where `ta`/`tb` read an operand
    /// transposed (last two axes).
    Matmul(a: Tensor<T>, b: Tensor<T>, ta: bool, tb: bool) "matmul" => vec![a, b];
    /// Fused `x·w + b` for `x` `[n, in]`, `w` `[in, out]`, `b` `[out]`: one GEMM onto the
    /// broadcast bias, one saved output.
    Linear(x: Tensor<T>, w: Tensor<T>, b: Tensor<T>) "linear" => vec![x, w, b];
    /// Axis permutation: `out.shape[i] = x.shape[perm[i]]` (a view): (x, perm).
    Permute(x: Tensor<T>, perm: Vec<usize>) "permute" => vec![x];
    /// Same elements, new shape (a view when the input is contiguous).
    Reshape(x: Tensor<T>) "reshape" => vec![x];
    /// The same values laid out row-major (a copy of a non-contiguous view).
    Contiguous(x: Tensor<T>) "contiguous" => vec![x];
    /// Broadcast to a larger shape (a view with stride 0 along the broadcast axes).
    BroadcastTo(x: Tensor<T>) "broadcast_to" => vec![x];
    /// `len` elements from `start` along `axis` (a view): (x, axis, start, len).
    Narrow(x: Tensor<T>, axis: usize, start: usize, len: usize) "narrow" => vec![x];
    /// Concatenation along an axis: (xs, axis).
    Concat(xs: Vec<Tensor<T>>, axis: usize) "concat" => xs.iter().collect();
    /// Rows (along an axis) chosen by an index list: (x, axis, indices).
    IndexSelect(x: Tensor<T>, axis: usize, idx: Arc<Vec<usize>>) "index_select" => vec![x];
    /// Element-wise pick along an axis, by an index per output element: (x, axis, indices).
    Gather(x: Tensor<T>, axis: usize, idx: Arc<Vec<usize>>) "gather" => vec![x];
    /// Sum over sorted axes: (x, axes, keepdim).
    Sum(x: Tensor<T>, axes: Vec<usize>, keepdim: bool) "sum" => vec![x];
    /// Maximum along one axis: (x, axis, keepdim). Gradient goes to the first maximum.
    Max(x: Tensor<T>, axis: usize, keepdim: bool) "max" => vec![x];
    /// Softmax along an axis (backward reads the output).
    Softmax(x: Tensor<T>, axis: usize) "softmax" => vec![x];
    /// Log-softmax along an axis (backward reads the output).
    LogSoftmax(x: Tensor<T>, axis: usize) "log_softmax" => vec![x];
    /// Fused, stable `−Σⱼ tᵢⱼ log softmax(zᵢ)ⱼ` per row of `[n, k]` logits, against a fixed
    /// `[n, k]` target distribution (data: not differentiated, held detached), with the
    /// target's row sums `[n, 1]` when some row's is not exactly 1: (z, t, mass).
    SoftmaxCrossEntropy(z: Tensor<T>, t: Tensor<T>, mass: Option<Tensor<T>>)
        "softmax_cross_entropy" => vec![z], kept std::iter::once(t).chain(mass).collect();
    /// `g ⊙ s(x)` for a piecewise-constant `s` (the derivative of relu & co., itself
    /// differentiable: so gradients of gradients work): (g, x, s).
    StepMul(g: Tensor<T>, x: Tensor<T>, step: Step) "step_mul" => vec![g, x];
    /// `g ⊙ gelu'(x)`: GELU's backward in one pass (its own derivative is composed of
    /// differentiable ops): (g, x).
    GeluBackward(g: Tensor<T>, x: Tensor<T>) "gelu_backward" => vec![g, x];
    /// Zeros with `len` entries along `axis`, plus `g[.., j, ..]` added at `idx[j]` (the
    /// derivative of `index_select` and `narrow`): (g, axis, idx, len).
    IndexAdd(g: Tensor<T>, axis: usize, idx: Arc<Vec<usize>>, len: usize) "index_add" => vec![g];
    /// Zeros with `len` entries along `axis`, plus each `g` element added at its index (the
    /// derivative of `gather` and `max`): (g, axis, idx, len).
    ScatterAdd(g: Tensor<T>, axis: usize, idx: Arc<Vec<usize>>, len: usize) "scatter_add"
        => vec![g];
    /// 2-D cross-correlation of `x` `[n, c, h, w]` with `w` `[o, c/groups, kh, kw]`, plus the
    /// bias `[o]` if any (added in the same pass): (x, w, b, options).
    Conv2d(x: Tensor<T>, w: Tensor<T>, b: Option<Tensor<T>>, opts: Conv2dOptions) "conv2d"
        => [Some(x), Some(w), b.as_ref()].into_iter().flatten().collect();
    /// The adjoint of `conv2d` in its input (a transposed convolution): `g` `[n, o, oh, ow]`
    /// and `w` give `[n, c, h, w]`: (g, w, options, (h, w)).
    Conv2dInput(g: Tensor<T>, w: Tensor<T>, opts: Conv2dOptions, hw: (usize, usize))
        "conv2d_input" => vec![g, w];
    /// The adjoint of `conv2d` in its weight: `x` and `g` `[n, o, oh, ow]` give
    /// `[o, c/groups, kh, kw]`: (x, g, options, (kh, kw)).
    Conv2dWeight(x: Tensor<T>, g: Tensor<T>, opts: Conv2dOptions, khw: (usize, usize))
        "conv2d_weight" => vec![x, g];
    /// Average pooling of `[n, c, h, w]` over windows (padding counted as zeros, PyTorch's
    /// `count_include_pad`): (x, options).
    AvgPool2d(x: Tensor<T>, opts: PoolOptions) "avg_pool2d" => vec![x];
    /// The adjoint of `avg_pool2d`: each `g` value spread evenly over its window, giving
    /// `[n, c, h, w]`: (g, options, (h, w)).
    AvgPool2dAdjoint(g: Tensor<T>, opts: PoolOptions, hw: (usize, usize))
        "avg_pool2d_adjoint" => vec![g];
    /// Batch normalisation of `[n, c, ..]` with the batch's statistics (kept, per channel),
    /// then the optional per-channel `weight` and `bias`: (x, weight, bias, statistics, eps).
    BatchNorm(x: Tensor<T>, w: Option<Tensor<T>>, b: Option<Tensor<T>>, st: Arc<NormStats>, eps: f64)
        "batch_norm" => [Some(x), w.as_ref(), b.as_ref()].into_iter().flatten().collect();
    /// Layer normalisation of each row of the trailing `d` values with the row's statistics
    /// (kept), then the optional `weight` and `bias` (`d` values each): (x, weight, bias,
    /// statistics, eps).
    LayerNorm(x: Tensor<T>, w: Option<Tensor<T>>, b: Option<Tensor<T>>, st: Arc<RowStats>, eps: f64)
        "layer_norm" => [Some(x), w.as_ref(), b.as_ref()].into_iter().flatten().collect();
    /// Softmax of `scale·x` along the last axis of `[.., t, s]` attention scores, with the keys
    /// after each query's position left out when `causal` (backward reads the output):
    /// (x, scale, causal).
    AttentionSoftmax(x: Tensor<T>, scale: T, causal: bool) "attention_softmax" => vec![x];
    /// `c·y ⊙ (g − Σ g⊙y)` along the last axis: the softmax's backward in one pass, for the
    /// output gradient `g` and the probabilities `y` (its own derivative is composed):
    /// (g, y, c).
    SoftmaxBackward(g: Tensor<T>, y: Tensor<T>, scale: T) "softmax_backward" => vec![g, y];
    /// Scaled dot-product attention `softmax(scale·q·kᵀ)·v` over `[.., t, d]` queries, `[.., s,
    /// d]` keys and `[.., s, dv]` values, each head in one pass (no score tensor); with
    /// `causal`, each query sees the keys up to its own position: (q, k, v, scale, causal).
    Attention(q: Tensor<T>, k: Tensor<T>, v: Tensor<T>, scale: T, causal: bool)
        "attention" => vec![q, k, v];
    /// Multi-head attention over packed projections: `[b, t, 3c]` queries, keys and values
    /// side by side (`c = heads·d` columns each) giving `[b, t, c]`, the heads side by side,
    /// the probabilities dropped by a counter-based mask where one is given (training-mode
    /// dropout): (qkv, heads, scale, causal, mask).
    PackedAttention(qkv: Tensor<T>, heads: usize, scale: T, causal: bool, keep: Option<Keep>)
        "packed_attention" => vec![qkv];
    /// A function run without keeping its activations, recomputed during backward.
    Checkpoint(c: Box<Checkpointed<T>>) "checkpoint" => c.inputs.iter().collect();
}

/// A piecewise-constant function `s(x)` for [`Tensor::step_mul`](crate::Tensor::step_mul):
/// the derivatives of relu, leaky relu, clamp and abs. Its own derivative is zero almost
/// everywhere, which is what makes those ops' second derivatives exactly zero.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// `[x > 0]` (NaN gives 1, so a NaN input passes the gradient on, as in PyTorch).
    Relu,
    /// 1 for x > 0, else `slope`.
    LeakyRelu(f64),
    /// 1 where `lo ≤ x ≤ hi` (or x is NaN), else 0.
    Clamp(f64, f64),
    /// `sign(x)`, with sign(0) = sign(NaN) = 0.
    Sign,
}

/// What [`Op::Checkpoint`] keeps instead of the activations of the function it wraps: the
/// function itself, its inputs, and the random draws it made (so recomputation replays them).
#[derive(Clone)]
pub struct Checkpointed<T: Float> {
    /// The explicit inputs, then the tensors requiring a gradient that `f` captured.
    pub inputs: Vec<Tensor<T>>,
    /// How many of `inputs` are explicit (passed to `f`).
    pub explicit: usize,
    /// The function, recomputed with recording when backward reaches it.
    pub f: CheckpointFn<T>,
    /// Seeds drawn by random layers (dropout) inside `f`, replayed in order on recomputation.
    pub seeds: Arc<Vec<u64>>,
}

/// A function that [`checkpoint`](crate::autograd::checkpoint) can recompute: it must own what
/// it captures (clone tensors into it; a clone is an `Arc`).
pub type CheckpointFn<T> = Arc<dyn Fn(&[Tensor<T>]) -> crate::Result<Tensor<T>> + Send + Sync>;

impl<T: Float> Op<T> {
    /// Moves the inputs out (used to drop long graphs without recursion): the returned handles
    /// are then the op's only references to its inputs.
    pub(crate) fn into_inputs(self) -> Vec<Tensor<T>> {
        let inputs: Vec<Tensor<T>> = self.inputs().into_iter().cloned().collect();
        drop(self);
        inputs
    }
}

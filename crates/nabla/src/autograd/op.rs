//! The closed set of recorded operations. Each variant holds its inputs (keeping them alive for
//! backward) and whatever else its derivative needs. The derivatives are in `backward.rs`.

use std::sync::Arc;

use crate::tensor::{Float, Tensor};

macro_rules! op_kinds {
    ($($name:ident => $text:literal),* $(,)?) => {
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
    };
}

op_kinds! {
    Add => "add", Sub => "sub", Mul => "mul", Div => "div", Neg => "neg",
    AddScalar => "add_scalar", MulScalar => "mul_scalar", PowScalar => "pow_scalar",
    Exp => "exp", Log => "log", Sqrt => "sqrt", Abs => "abs", Clamp => "clamp",
    Relu => "relu", LeakyRelu => "leaky_relu", Sigmoid => "sigmoid", Tanh => "tanh",
    Gelu => "gelu", Softplus => "softplus",
    Matmul => "matmul", Linear => "linear", Permute => "permute", Reshape => "reshape",
    Contiguous => "contiguous",
    BroadcastTo => "broadcast_to", Narrow => "narrow", Concat => "concat",
    IndexSelect => "index_select", Gather => "gather",
    Sum => "sum", Max => "max", Softmax => "softmax", LogSoftmax => "log_softmax",
    SoftmaxCrossEntropy => "softmax_cross_entropy",
    StepMul => "step_mul", IndexAdd => "index_add", ScatterAdd => "scatter_add",
    Checkpoint => "checkpoint",
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

/// A recorded operation: how a tensor was made from its inputs.
#[derive(Clone)]
pub enum Op<T: Float> {
    /// `a + b` (broadcasting).
    Add(Tensor<T>, Tensor<T>),
    /// `a − b` (broadcasting).
    Sub(Tensor<T>, Tensor<T>),
    /// `a ⊙ b` (broadcasting).
    Mul(Tensor<T>, Tensor<T>),
    /// `a ⊘ b` (broadcasting).
    Div(Tensor<T>, Tensor<T>),
    /// `−x`.
    Neg(Tensor<T>),
    /// `x + c`.
    AddScalar(Tensor<T>),
    /// `c·x`.
    MulScalar(Tensor<T>, T),
    /// `x^p`.
    PowScalar(Tensor<T>, T),
    /// `e^x` (backward reads the output).
    Exp(Tensor<T>),
    /// `ln x`.
    Log(Tensor<T>),
    /// `√x` (backward reads the output).
    Sqrt(Tensor<T>),
    /// `|x|`.
    Abs(Tensor<T>),
    /// `min(max(x, lo), hi)`.
    Clamp(Tensor<T>, T, T),
    /// `max(x, 0)`.
    Relu(Tensor<T>),
    /// `x` for x > 0, `slope·x` otherwise.
    LeakyRelu(Tensor<T>, T),
    /// `1 / (1 + e^−x)` (backward reads the output).
    Sigmoid(Tensor<T>),
    /// `tanh x` (backward reads the output).
    Tanh(Tensor<T>),
    /// GELU, tanh approximation.
    Gelu(Tensor<T>),
    /// `ln(1 + e^x)`.
    Softplus(Tensor<T>),
    /// `op(a)·op(b)`, 2-D or batched 3-D; `ta`/`tb` read an operand transposed (last two axes).
    Matmul {
        /// Left operand.
        a: Tensor<T>,
        /// Right operand.
        b: Tensor<T>,
        /// Read `a` transposed.
        ta: bool,
        /// Read `b` transposed.
        tb: bool,
    },
    /// Fused `x·w + b` for `x` `[n, in]`, `w` `[in, out]`, `b` `[out]`: one GEMM onto the
    /// broadcast bias, one saved output.
    Linear(Tensor<T>, Tensor<T>, Tensor<T>),
    /// Axis permutation: `out.shape[i] = x.shape[perm[i]]` (a view).
    Permute(Tensor<T>, Vec<usize>),
    /// Same elements, new shape (a view when the input is contiguous).
    Reshape(Tensor<T>),
    /// The same values laid out row-major (a copy of a non-contiguous view).
    Contiguous(Tensor<T>),
    /// Broadcast to a larger shape (a view with stride 0 along the broadcast axes).
    BroadcastTo(Tensor<T>),
    /// `len` elements from `start` along `axis` (a view).
    Narrow {
        /// Input.
        input: Tensor<T>,
        /// Axis.
        axis: usize,
        /// First index kept.
        start: usize,
        /// Number kept.
        len: usize,
    },
    /// Concatenation along an axis.
    Concat(Vec<Tensor<T>>, usize),
    /// Rows (along an axis) chosen by an index list.
    IndexSelect(Tensor<T>, usize, Arc<Vec<usize>>),
    /// Element-wise pick along an axis, by an index per output element.
    Gather(Tensor<T>, usize, Arc<Vec<usize>>),
    /// Sum over sorted axes; `bool` = keepdim.
    Sum(Tensor<T>, Vec<usize>, bool),
    /// Maximum along one axis; `bool` = keepdim. Gradient goes to the first maximum.
    Max(Tensor<T>, usize, bool),
    /// Softmax along an axis (backward reads the output).
    Softmax(Tensor<T>, usize),
    /// Log-softmax along an axis (backward reads the output).
    LogSoftmax(Tensor<T>, usize),
    /// Fused, stable `−Σⱼ tᵢⱼ log softmax(zᵢ)ⱼ` per row of `[n, k]` logits, against a fixed
    /// `[n, k]` target distribution (data: not differentiated, held detached), with the target's
    /// row sums `[n, 1]` when some row's is not exactly 1.
    SoftmaxCrossEntropy(Tensor<T>, Tensor<T>, Option<Tensor<T>>),
    /// `g ⊙ s(x)` for a piecewise-constant `s` (the derivative of relu & co., itself
    /// differentiable: so gradients of gradients work).
    StepMul {
        /// The scaled tensor (an incoming gradient, in backward rules).
        g: Tensor<T>,
        /// The argument of `s`.
        x: Tensor<T>,
        /// Which `s`.
        step: Step,
    },
    /// Zeros with `len` entries along `axis`, plus `g[.., j, ..]` added at `idx[j]` (the
    /// derivative of `index_select` and `narrow`).
    IndexAdd(Tensor<T>, usize, Arc<Vec<usize>>, usize),
    /// Zeros with `len` entries along `axis`, plus each `g` element added at its index (the
    /// derivative of `gather` and `max`).
    ScatterAdd(Tensor<T>, usize, Arc<Vec<usize>>, usize),
    /// A function run without keeping its activations, recomputed during backward.
    Checkpoint(Box<Checkpointed<T>>),
}

impl<T: Float> Op<T> {
    /// This op's kind.
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Add(..) => OpKind::Add,
            Op::Sub(..) => OpKind::Sub,
            Op::Mul(..) => OpKind::Mul,
            Op::Div(..) => OpKind::Div,
            Op::Neg(..) => OpKind::Neg,
            Op::AddScalar(..) => OpKind::AddScalar,
            Op::MulScalar(..) => OpKind::MulScalar,
            Op::PowScalar(..) => OpKind::PowScalar,
            Op::Exp(..) => OpKind::Exp,
            Op::Log(..) => OpKind::Log,
            Op::Sqrt(..) => OpKind::Sqrt,
            Op::Abs(..) => OpKind::Abs,
            Op::Clamp(..) => OpKind::Clamp,
            Op::Relu(..) => OpKind::Relu,
            Op::LeakyRelu(..) => OpKind::LeakyRelu,
            Op::Sigmoid(..) => OpKind::Sigmoid,
            Op::Tanh(..) => OpKind::Tanh,
            Op::Gelu(..) => OpKind::Gelu,
            Op::Softplus(..) => OpKind::Softplus,
            Op::Matmul { .. } => OpKind::Matmul,
            Op::Linear(..) => OpKind::Linear,
            Op::Permute(..) => OpKind::Permute,
            Op::Reshape(..) => OpKind::Reshape,
            Op::Contiguous(..) => OpKind::Contiguous,
            Op::BroadcastTo(..) => OpKind::BroadcastTo,
            Op::Narrow { .. } => OpKind::Narrow,
            Op::Concat(..) => OpKind::Concat,
            Op::IndexSelect(..) => OpKind::IndexSelect,
            Op::Gather(..) => OpKind::Gather,
            Op::Sum(..) => OpKind::Sum,
            Op::Max(..) => OpKind::Max,
            Op::Softmax(..) => OpKind::Softmax,
            Op::LogSoftmax(..) => OpKind::LogSoftmax,
            Op::SoftmaxCrossEntropy(..) => OpKind::SoftmaxCrossEntropy,
            Op::StepMul { .. } => OpKind::StepMul,
            Op::IndexAdd(..) => OpKind::IndexAdd,
            Op::ScatterAdd(..) => OpKind::ScatterAdd,
            Op::Checkpoint(..) => OpKind::Checkpoint,
        }
    }

    /// The tensor inputs, in the order backward returns their gradients.
    pub fn inputs(&self) -> Vec<&Tensor<T>> {
        match self {
            Op::Add(a, b) | Op::Sub(a, b) | Op::Mul(a, b) | Op::Div(a, b) => vec![a, b],
            Op::Matmul { a, b, .. } => vec![a, b],
            Op::Linear(x, w, b) => vec![x, w, b],
            Op::Concat(xs, _) => xs.iter().collect(),
            Op::StepMul { g, x, .. } => vec![g, x],
            Op::Checkpoint(c) => c.inputs.iter().collect(),
            Op::Neg(x)
            | Op::AddScalar(x)
            | Op::MulScalar(x, _)
            | Op::PowScalar(x, _)
            | Op::Exp(x)
            | Op::Log(x)
            | Op::Sqrt(x)
            | Op::Abs(x)
            | Op::Clamp(x, ..)
            | Op::Relu(x)
            | Op::LeakyRelu(x, _)
            | Op::Sigmoid(x)
            | Op::Tanh(x)
            | Op::Gelu(x)
            | Op::Softplus(x)
            | Op::Permute(x, _)
            | Op::Reshape(x)
            | Op::Contiguous(x)
            | Op::BroadcastTo(x)
            | Op::Narrow { input: x, .. }
            | Op::IndexSelect(x, ..)
            | Op::Gather(x, ..)
            | Op::Sum(x, ..)
            | Op::Max(x, ..)
            | Op::Softmax(x, _)
            | Op::LogSoftmax(x, _)
            | Op::SoftmaxCrossEntropy(x, ..)
            | Op::IndexAdd(x, ..)
            | Op::ScatterAdd(x, ..) => vec![x],
        }
    }

    /// Moves the inputs out (used to drop long graphs without recursion): the returned handles
    /// are then the op's only references to its inputs.
    pub(crate) fn into_inputs(self) -> Vec<Tensor<T>> {
        let inputs: Vec<Tensor<T>> = self.inputs().into_iter().cloned().collect();
        drop(self);
        inputs
    }
}

//! Reverse-mode automatic differentiation.
//!
//! Operations record an [`Op`] in their output only when an input requires a gradient and
//! recording is enabled (see [`no_grad`]). [`Tensor::backward`](crate::Tensor::backward) walks
//! the recorded graph from a scalar loss back to the leaves, iteratively, applying the chain
//! rule of each op (all rules are in one file, `backward.rs`), and returns a [`GradStore`].
//!
//! Each recorded op also remembers the [version](crate::Tensor::version) of every input's
//! storage (and of its output's). An in-place write bumps the version, so backward can refuse
//! to use a value that changed after the forward pass instead of computing a wrong gradient.

pub mod anomaly;
mod backward;
mod checkpoint;
mod functional;
mod graph;
mod hooked;
mod inspect;
mod op;

pub use anomaly::{detect_anomaly, Anomaly};
pub use checkpoint::{checkpoint, is_replaying, replayable_seed};
pub use functional::{grad, hessian, hvp, jacobian, jvp, GradOptions};
pub use graph::{GradStore, GraphStats};
pub use hooked::BackwardHook;
pub use inspect::{
    BackwardStep, GraphReport, GraphTotals, Inspection, NodeReport, SentGrad, TensorSummary,
};
pub use op::{CheckpointFn, Checkpointed, Op, OpKind, Step};

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::sync::Arc;

use crate::tensor::{Float, GraphNode, Layout, Tensor};

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
    static SCOPE: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
}

/// Runs `f` with the operations it records labelled `name` (a module's name, `loss`): the
/// graph inspector groups ops by it. Nested scopes replace the outer name while they run.
///
/// ```
/// use nabla::{autograd::scope, Tensor};
/// let w = Tensor::<f32>::ones(&[2]).unwrap().requires_grad();
/// let y = scope("layer 1", || w.mul_scalar(2.0)).unwrap();
/// assert_eq!(y.scope().as_deref(), Some("layer 1"));
/// ```
pub fn scope<R>(name: &str, f: impl FnOnce() -> R) -> R {
    scope_arc(Arc::from(name), f)
}

/// [`scope`] with a name already shared (no allocation per call).
pub(crate) fn scope_arc<R>(name: Arc<str>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Arc<str>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            SCOPE.with(|s| *s.borrow_mut() = previous);
        }
    }
    let _restore = Restore(SCOPE.with(|s| s.borrow_mut().replace(name)));
    f()
}

/// The name set by the innermost [`scope`] running on this thread.
pub(crate) fn current_scope() -> Option<Arc<str>> {
    SCOPE.with(|s| s.borrow().clone())
}

/// Whether operations on this thread currently record the graph.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// While alive, operations on this thread record nothing (inference, optimizer updates).
/// Restores the previous state when dropped.
pub struct NoGradGuard {
    previous: bool,
}

impl NoGradGuard {
    /// Disables recording until the guard is dropped.
    pub fn new() -> Self {
        let previous = GRAD_ENABLED.with(|g| g.replace(false));
        NoGradGuard { previous }
    }
}

impl Default for NoGradGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

/// Sets whether this thread records (on or off) until dropped, then restores the previous
/// state: the reverse pass runs its rules recorded for `create_graph`, under `no_grad`
/// otherwise.
pub(crate) struct GradMode {
    previous: bool,
}

impl GradMode {
    pub(crate) fn set(enabled: bool) -> Self {
        let previous = GRAD_ENABLED.with(|g| g.replace(enabled));
        GradMode { previous }
    }
}

impl Drop for GradMode {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

/// Runs `f` with graph recording disabled on this thread.
///
/// ```
/// use nabla::{no_grad, Tensor};
/// let w = Tensor::<f32>::ones(&[2]).unwrap().requires_grad();
/// let y = no_grad(|| w.mul_scalar(3.0)).unwrap();
/// assert!(y.is_leaf() && !y.requires_grad_flag());
/// ```
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = NoGradGuard::new();
    f()
}

/// The storage versions of an op's inputs when it ran: inline for up to three inputs (every op
/// but `concat`), so recording allocates nothing extra.
pub(crate) struct Versions {
    first: [u64; 3],
    rest: Vec<u64>,
}

impl Versions {
    fn of<T: Float>(inputs: &[&Tensor<T>]) -> Self {
        let mut v = Versions {
            first: [0; 3],
            rest: Vec::new(),
        };
        for (i, t) in inputs.iter().enumerate() {
            match v.first.get_mut(i) {
                Some(slot) => *slot = t.version(),
                None => v.rest.push(t.version()),
            }
        }
        v
    }

    /// The version of input `i`.
    pub(crate) fn get(&self, i: usize) -> u64 {
        match self.first.get(i) {
            Some(&v) => v,
            None => self.rest[i - self.first.len()],
        }
    }
}

/// What a tensor made by a recorded operation holds: the op and the storage versions of its
/// inputs and output when it ran.
pub(crate) struct Recorded<T: Float> {
    pub(crate) op: Op<T>,
    pub(crate) input_versions: Versions,
    pub(crate) output_version: u64,
    /// The [`scope`] it was recorded in.
    pub(crate) scope: Option<Arc<str>>,
}

impl<T: Float> GraphNode<T> for Recorded<T> {
    fn inputs(&self) -> Vec<&Tensor<T>> {
        self.op.inputs()
    }
    fn into_inputs(self: Box<Self>) -> Vec<Tensor<T>> {
        self.op.into_inputs()
    }
    fn name(&self) -> &'static str {
        self.op.kind().name()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl<T: Float> Tensor<T> {
    /// The operation that made this tensor, if it was recorded.
    pub fn op(&self) -> Option<&Op<T>> {
        self.recorded().map(|r| &r.op)
    }

    /// The [`scope`] the operation that made this tensor was recorded in.
    pub fn scope(&self) -> Option<Arc<str>> {
        self.recorded().and_then(|r| r.scope.clone())
    }

    pub(crate) fn recorded(&self) -> Option<&Recorded<T>> {
        self.node()?.as_any().downcast_ref::<Recorded<T>>()
    }
}

pub(crate) fn should_record<T: Float>(inputs: &[&Tensor<T>]) -> bool {
    if is_grad_enabled() {
        inputs.iter().any(|t| t.requires_grad_flag())
    } else {
        checkpoint::note_inputs(inputs);
        false
    }
}

/// `inputs` are the op's inputs in `op.inputs()` order (every caller passes them so).
fn node<T: Float>(op: Op<T>, inputs: &[&Tensor<T>], output_version: u64) -> Box<dyn GraphNode<T>> {
    debug_assert!(
        op.inputs()
            .iter()
            .map(|t| t.id())
            .eq(inputs.iter().map(|t| t.id())),
        "internal: {} recorded with its inputs in another order",
        op.kind().name()
    );
    let input_versions = Versions::of(inputs);
    Box::new(Recorded {
        op,
        input_versions,
        output_version,
        scope: current_scope(),
    })
}

/// Builds an operation's result with `build`, recording `make_op()` only when gradients are
/// enabled and an input requires one; under anomaly detection, checks the result.
fn finish<T: Float>(
    inputs: &[&Tensor<T>],
    make_op: impl FnOnce() -> Op<T>,
    output_version: u64,
    build: impl FnOnce(Option<Box<dyn GraphNode<T>>>) -> Tensor<T>,
) -> Tensor<T> {
    let record = should_record(inputs);
    let profiling = crate::profile::is_active();
    if !anomaly::is_detecting() && !profiling {
        return build(record.then(|| node(make_op(), inputs, output_version)));
    }
    let op = make_op();
    if profiling {
        crate::profile::forward_op(op.kind().name(), inputs);
        if !anomaly::is_detecting() {
            return build(record.then(|| node(op, inputs, output_version)));
        }
    }
    if record {
        let t = build(Some(node(op, inputs, output_version)));
        if let Some(op) = t.op() {
            anomaly::check_output(op, &t);
        }
        t
    } else {
        let t = build(None);
        anomaly::check_output(&op, &t);
        t
    }
}

/// The result of an operation, in a fresh storage holding `data` (row-major, `shape`).
pub(crate) fn record<T: Float>(
    data: Vec<T>,
    shape: Vec<usize>,
    inputs: &[&Tensor<T>],
    make_op: impl FnOnce() -> Op<T>,
) -> Tensor<T> {
    finish(inputs, make_op, 0, |node| {
        Tensor::from_parts(data, shape, node)
    })
}

/// The result of an operation whose `data` is row-major in `memory_shape`, seen through the
/// axis permutation `perm` (the result's shape is `memory_shape` permuted): an op that writes
/// its output in the order its consumer reads it.
pub(crate) fn record_permuted<T: Float>(
    data: Vec<T>,
    memory_shape: Vec<usize>,
    perm: &[usize],
    inputs: &[&Tensor<T>],
    make_op: impl FnOnce() -> Op<T>,
) -> Tensor<T> {
    finish(inputs, make_op, 0, |node| {
        let base = Tensor::from_parts(data, memory_shape, None);
        let layout = base.layout().permute(perm);
        base.view_parts(layout, node)
    })
}

/// The result of a view operation: `x`'s storage read through `layout`.
pub(crate) fn record_view<T: Float>(
    x: &Tensor<T>,
    layout: Layout,
    make_op: impl FnOnce() -> Op<T>,
) -> Tensor<T> {
    finish(&[x], make_op, x.version(), |node| {
        x.view_parts(layout, node)
    })
}

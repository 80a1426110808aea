//! The graph walk: topological order by an explicit stack (no recursion, so a 10,000-op chain
//! is fine), gradient accumulation, the gradient store, and the memory report.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::backward::{backward_op, saved};
use super::{GradMode, OpKind, Recorded};
use crate::error::{Error, Result};
use crate::tensor::shape::fmt_shape;
use crate::tensor::{Float, Tensor, TensorId};

/// Gradients of a loss, keyed by tensor, kept outside the tensors. Holds one entry per leaf
/// that requires a gradient and that the loss depends on.
#[derive(Debug, Clone, Default)]
pub struct GradStore<T: Float = f32> {
    grads: HashMap<TensorId, Tensor<T>>,
}

impl<T: Float> GradStore<T> {
    /// An empty store.
    pub fn new() -> Self {
        GradStore {
            grads: HashMap::new(),
        }
    }

    /// A store holding `grads`.
    pub(crate) fn from_map(grads: HashMap<TensorId, Tensor<T>>) -> Self {
        GradStore { grads }
    }

    /// The gradient of `t`, if the loss depends on it.
    pub fn get(&self, t: &Tensor<T>) -> Option<&Tensor<T>> {
        self.grads.get(&t.id())
    }

    /// The gradient stored under an id.
    pub fn get_id(&self, id: TensorId) -> Option<&Tensor<T>> {
        self.grads.get(&id)
    }

    /// Stores (or replaces) the gradient of `t`.
    pub fn insert(&mut self, t: &Tensor<T>, grad: Tensor<T>) -> Option<Tensor<T>> {
        self.grads.insert(t.id(), grad)
    }

    /// Removes and returns the gradient of `t`.
    pub fn remove(&mut self, t: &Tensor<T>) -> Option<Tensor<T>> {
        self.grads.remove(&t.id())
    }

    /// Number of gradients held.
    pub fn len(&self) -> usize {
        self.grads.len()
    }

    /// True when no gradient is held.
    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }

    /// All (id, gradient) pairs, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&TensorId, &Tensor<T>)> {
        self.grads.iter()
    }
}

/// What a recorded graph holds in memory: the cost of backpropagation made visible.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GraphStats {
    /// Recorded operations reachable from the root (the root included).
    pub ops: usize,
    /// How many of each kind.
    pub op_counts: BTreeMap<OpKind, usize>,
    /// Bytes of the storage of tensors made by operations and kept alive by the graph (the
    /// forward activations backward needs, and what ops keep beside them, such as GELU's
    /// slope), counting a storage shared by views once. Includes the root. A view of a leaf
    /// (a transposed weight) adds nothing.
    pub saved_bytes: usize,
    /// Bytes of the storage of leaf tensors the graph references (parameters and input data);
    /// they exist without the graph too.
    pub leaf_bytes: usize,
}

/// Nodes reachable from `roots` through recorded ops, inputs before the ops that use them.
/// With `grad_only`, the walk does not enter tensors that do not require a gradient; it does
/// not go past tensors in `stop` (they count as leaves).
pub(crate) fn topo_order<T: Float>(
    roots: &[&Tensor<T>],
    grad_only: bool,
    stop: &HashSet<TensorId>,
) -> Vec<Tensor<T>> {
    let mut order = Vec::new();
    let mut visited = HashSet::new();
    let mut stack: Vec<(Tensor<T>, bool)> =
        roots.iter().rev().map(|&r| (r.clone(), false)).collect();
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(t);
            continue;
        }
        if !visited.insert(t.id()) {
            continue;
        }
        let inputs: Vec<Tensor<T>> = match t.node() {
            Some(n) if stop.is_empty() || !stop.contains(&t.id()) => {
                n.inputs().into_iter().cloned().collect()
            }
            _ => Vec::new(),
        };
        stack.push((t, true));
        for input in inputs {
            if (!grad_only || input.requires_grad_flag()) && !visited.contains(&input.id()) {
                stack.push((input, false));
            }
        }
    }
    order
}

/// Watches a reverse pass one op at a time (the backprop inspector); `()` watches nothing.
pub(crate) trait Observer<T: Float> {
    /// `node`'s rule is about to run with the gradient `g` it received.
    fn op(&mut self, _node: &Tensor<T>, _g: &Tensor<T>) {}
    /// The rule sent `grad` to `input`.
    fn sent(&mut self, _input: &Tensor<T>, _grad: &Tensor<T>) {}
}

impl<T: Float> Observer<T> for () {}

/// The reverse pass as a state machine: the nodes in topological order, walked from the end,
/// and the gradients accumulated so far. [`ReversePass::step`] runs the next op's rule;
/// `reverse_pass` runs them all, so the inspector steps through exactly the engine's order.
pub(crate) struct ReversePass<T: Float> {
    order: Vec<Tensor<T>>,
    /// Nodes not yet visited: `order[..next]`.
    next: usize,
    grads: HashMap<TensorId, Tensor<T>>,
    create_graph: bool,
    stop: HashSet<TensorId>,
    keep: HashSet<TensorId>,
}

impl<T: Float> ReversePass<T> {
    /// A pass from `roots` (each with its output gradient) back to the leaves, or to the
    /// tensors in `stop`, which are treated as leaves. The gradients of the tensors in `keep`
    /// are kept even when they have a recorded op. With `create_graph` the rules run recorded
    /// (the gradients carry a graph), otherwise under `no_grad`.
    pub(crate) fn new(
        roots: &[(Tensor<T>, Tensor<T>)],
        create_graph: bool,
        stop: HashSet<TensorId>,
        keep: HashSet<TensorId>,
    ) -> Result<Self> {
        let root_refs: Vec<&Tensor<T>> = roots.iter().map(|(r, _)| r).collect();
        let order = topo_order(&root_refs, true, &stop);
        let mut grads: HashMap<TensorId, Tensor<T>> = HashMap::new();
        {
            let _mode = GradMode::set(create_graph);
            for (root, seed) in roots {
                let seed = if create_graph {
                    seed.clone()
                } else {
                    seed.detach()
                };
                accumulate(&mut grads, root.id(), seed)?;
            }
        }
        Ok(ReversePass {
            next: order.len(),
            order,
            grads,
            create_graph,
            stop,
            keep,
        })
    }

    /// The nodes of the pass in topological order (inputs before the ops that use them).
    pub(crate) fn order(&self) -> &[Tensor<T>] {
        &self.order
    }

    /// Runs the next op whose rule has a gradient to propagate, telling `observer`; `false`
    /// when the pass is complete.
    pub(crate) fn step(&mut self, observer: &mut dyn Observer<T>) -> Result<bool> {
        let _mode = GradMode::set(self.create_graph);
        while self.next > 0 {
            self.next -= 1;
            let node = self.order[self.next].clone();
            if !self.stop.is_empty() && self.stop.contains(&node.id()) {
                continue;
            }
            let Some(rec) = node.recorded() else { continue };
            let g = if !self.keep.is_empty() && self.keep.contains(&node.id()) {
                self.grads.get(&node.id()).cloned()
            } else {
                self.grads.remove(&node.id())
            };
            let Some(g) = g else { continue };
            observer.op(&node, &g);
            self.apply(rec, &node, &g, observer)?;
            return Ok(true);
        }
        Ok(false)
    }

    fn apply(
        &mut self,
        rec: &Recorded<T>,
        node: &Tensor<T>,
        g: &Tensor<T>,
        observer: &mut dyn Observer<T>,
    ) -> Result<()> {
        let op = &rec.op;
        let inputs = op.inputs();
        let need: Vec<bool> = inputs.iter().map(|t| t.requires_grad_flag()).collect();
        check_versions(rec, node, &inputs, &need)?;
        let input_grads = crate::profile::measure(
            "backward",
            op.kind().name(),
            || crate::profile::shapes_of(&inputs),
            || backward_op(op, node, g, &need),
        )?;
        for ((input, grad), needed) in inputs.iter().zip(input_grads).zip(&need) {
            let (Some(grad), true) = (grad, *needed) else {
                continue;
            };
            if grad.shape() != input.shape() {
                return Err(Error::autograd(
                    "backward",
                    format!(
                        "internal: {} produced a gradient of shape {} for an input of shape {}",
                        op.kind().name(),
                        fmt_shape(grad.shape()),
                        fmt_shape(input.shape())
                    ),
                ));
            }
            observer.sent(input, &grad);
            accumulate(&mut self.grads, input.id(), grad)?;
        }
        Ok(())
    }

    /// Whether a later [`ReversePass::step`] has a rule to run: an op not yet visited holds a
    /// gradient. (An op that receives one later is downstream of such an op.)
    pub(crate) fn has_pending(&self) -> bool {
        self.order[..self.next].iter().any(|t| {
            t.recorded().is_some()
                && self.grads.contains_key(&t.id())
                && (self.stop.is_empty() || !self.stop.contains(&t.id()))
        })
    }

    /// How many nodes of [`ReversePass::order`] are not yet visited (`order[..position]`).
    pub(crate) fn position(&self) -> usize {
        self.next
    }

    /// The gradient accumulated so far for `id`.
    pub(crate) fn grad(&self, id: TensorId) -> Option<&Tensor<T>> {
        self.grads.get(&id)
    }

    /// The gradients of the leaves (and of the tensors in `keep`).
    pub(crate) fn into_grads(self) -> HashMap<TensorId, Tensor<T>> {
        self.grads
    }
}

/// One reverse pass (see [`ReversePass::new`]) run to the end: the gradients of the leaves and
/// of the tensors in `keep`.
pub(crate) fn reverse_pass<T: Float>(
    roots: &[(Tensor<T>, Tensor<T>)],
    create_graph: bool,
    stop: &HashSet<TensorId>,
    keep: &HashSet<TensorId>,
) -> Result<HashMap<TensorId, Tensor<T>>> {
    let mut pass = ReversePass::new(roots, create_graph, stop.clone(), keep.clone())?;
    while pass.step(&mut ())? {}
    Ok(pass.into_grads())
}

impl<T: Float> Tensor<T> {
    /// Backpropagation from a scalar (one-element) loss: the gradient of this tensor with
    /// respect to every leaf that requires a gradient. The graph is not consumed: calling
    /// `backward` again gives the same result.
    pub fn backward(&self) -> Result<GradStore<T>> {
        if self.numel() != 1 {
            return Err(Error::autograd(
                "backward",
                format!(
                    "the loss must have one element, got shape {} (reduce it, or use backward_with)",
                    fmt_shape(self.shape())
                ),
            ));
        }
        self.backward_with(&Tensor::ones(self.shape())?)
    }

    /// Backpropagation with an explicit output gradient `seed` (the shape of `self`): computes
    /// the vector–Jacobian product `seedᵀ · ∂self/∂leaf` for every leaf.
    pub fn backward_with(&self, seed: &Tensor<T>) -> Result<GradStore<T>> {
        if seed.shape() != self.shape() {
            return Err(Error::shape(
                "backward",
                format!(
                    "seed gradient {} does not match output {}",
                    fmt_shape(seed.shape()),
                    fmt_shape(self.shape())
                ),
            ));
        }
        self.check_requires_grad("backward")?;
        let none = HashSet::new();
        let grads = reverse_pass(&[(self.clone(), seed.clone())], false, &none, &none)?;
        Ok(GradStore { grads })
    }

    /// An error naming `op` unless a reverse pass can start from this tensor.
    pub(crate) fn check_requires_grad(&self, op: &'static str) -> Result<()> {
        if self.requires_grad_flag() {
            return Ok(());
        }
        Err(Error::autograd(
            op,
            "this tensor does not require a gradient: no input had requires_grad, \
             or it was computed under no_grad",
        ))
    }

    /// The size of the recorded graph behind this tensor and the bytes it keeps alive.
    pub fn graph_stats(&self) -> GraphStats {
        let mut stats = GraphStats::default();
        let mut seen_storage = HashSet::new();
        for node in topo_order(&[self], false, &HashSet::new()) {
            let fresh = seen_storage.insert(node.storage_key());
            match node.op() {
                Some(op) => {
                    stats.ops += 1;
                    *stats.op_counts.entry(op.kind()).or_default() += 1;
                    if fresh {
                        stats.saved_bytes += node.storage_bytes();
                    }
                    for k in op.kept() {
                        if seen_storage.insert(k.storage_key()) {
                            stats.saved_bytes += k.storage_bytes();
                        }
                    }
                }
                None if fresh => stats.leaf_bytes += node.storage_bytes(),
                None => {}
            }
        }
        stats
    }
}

/// Refuses to run `rec`'s rule if a value it reads was modified in place after the forward
/// pass: the rule would compute the gradient of a function that was never evaluated.
fn check_versions<T: Float>(
    rec: &Recorded<T>,
    out: &Tensor<T>,
    all: &[&Tensor<T>],
    need: &[bool],
) -> Result<()> {
    let reads = saved(&rec.op, need);
    let stale = |what: String, shape: &[usize], then: u64, now: u64| {
        Error::autograd(
            "backward",
            format!(
                "{} needs {what} (shape {}) as it was in the forward pass (version {then}), but \
                 it has been modified in place since (version {now}); recompute the forward \
                 pass after editing tensors in place (update_data, an optimizer step, a \
                 checkpoint load)",
                rec.op.kind().name(),
                fmt_shape(shape),
            ),
        )
    };
    for (i, &t) in all.iter().enumerate() {
        let read = reads.all_inputs || (i < 8 && reads.inputs & (1 << i) != 0);
        if !read {
            continue;
        }
        let then = rec.input_versions.get(i);
        if t.version() != then {
            return Err(stale(
                format!("its input {i}"),
                t.shape(),
                then,
                t.version(),
            ));
        }
    }
    if reads.output && out.version() != rec.output_version {
        let now = out.version();
        return Err(stale(
            "its output".into(),
            out.shape(),
            rec.output_version,
            now,
        ));
    }
    Ok(())
}

fn accumulate<T: Float>(
    grads: &mut HashMap<TensorId, Tensor<T>>,
    id: TensorId,
    grad: Tensor<T>,
) -> Result<()> {
    let sum = match grads.remove(&id) {
        None => grad,
        // Summed into whichever of the two nothing else holds (usually both are fresh).
        Some(prev) => {
            let shape = crate::profile::is_active().then(|| fmt_shape(prev.shape()));
            crate::profile::measure(
                "gradient sum",
                "add",
                || shape.unwrap_or_default(),
                || prev.add_owned(grad),
            )?
        }
    };
    grads.insert(id, sum);
    Ok(())
}

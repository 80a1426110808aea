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
    /// forward activations backward needs), counting a storage shared by views once. Includes
    /// the root. A view of a leaf (a transposed weight) adds nothing.
    pub saved_bytes: usize,
    /// Bytes of the storage of leaf tensors the graph references (parameters and input data);
    /// they exist without the graph too.
    pub leaf_bytes: usize,
}

/// Nodes reachable from `roots` through recorded ops, inputs before the ops that use them.
/// With `grad_only`, the walk does not enter tensors that do not require a gradient; it does
/// not go past tensors in `stop` (they count as leaves).
fn topo_order<T: Float>(
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

/// One reverse pass: the chain rule from `roots` (each with its output gradient) back to the
/// leaves, or to the tensors in `stop`, which are treated as leaves. Returns the gradients of
/// the leaves and of the tensors in `keep` (whose gradients are kept even when they have a
/// recorded op). With `create_graph` the rules run recorded (the gradients carry a graph),
/// otherwise under `no_grad`.
pub(crate) fn reverse_pass<T: Float>(
    roots: &[(Tensor<T>, Tensor<T>)],
    create_graph: bool,
    stop: &HashSet<TensorId>,
    keep: &HashSet<TensorId>,
) -> Result<HashMap<TensorId, Tensor<T>>> {
    let _mode = GradMode::set(create_graph);
    let root_refs: Vec<&Tensor<T>> = roots.iter().map(|(r, _)| r).collect();
    let order = topo_order(&root_refs, true, stop);
    let mut grads: HashMap<TensorId, Tensor<T>> = HashMap::new();
    for (root, seed) in roots {
        let seed = if create_graph {
            seed.clone()
        } else {
            seed.detach()
        };
        accumulate(&mut grads, root.id(), seed)?;
    }
    for node in order.iter().rev() {
        if !stop.is_empty() && stop.contains(&node.id()) {
            continue;
        }
        let Some(rec) = node.recorded() else { continue };
        let op = &rec.op;
        let g = if !keep.is_empty() && keep.contains(&node.id()) {
            grads.get(&node.id()).cloned()
        } else {
            grads.remove(&node.id())
        };
        let Some(g) = g else { continue };
        let inputs = op.inputs();
        let need: Vec<bool> = inputs.iter().map(|t| t.requires_grad_flag()).collect();
        check_versions(rec, node, &inputs, &need)?;
        let input_grads = backward_op(op, node, &g, &need)?;
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
            accumulate(&mut grads, input.id(), grad)?;
        }
    }
    Ok(grads)
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
        if !self.requires_grad_flag() {
            return Err(Error::autograd(
                "backward",
                "this tensor does not require a gradient: no input had requires_grad, \
                 or it was computed under no_grad",
            ));
        }
        let none = HashSet::new();
        let grads = reverse_pass(&[(self.clone(), seed.clone())], false, &none, &none)?;
        Ok(GradStore { grads })
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
        Some(prev) => prev.add(&grad)?,
    };
    grads.insert(id, sum);
    Ok(())
}

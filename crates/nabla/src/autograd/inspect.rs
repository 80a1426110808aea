//! The backprop inspector: the recorded graph behind a loss as data (every op, its output
//! shape, the bytes it keeps alive for backward, statistics of its value and of its gradient),
//! and the reverse pass run one op at a time in the engine's own order.
//!
//! ```
//! use nabla::autograd::{scope, Inspection};
//! use nabla::Tensor;
//!
//! let x = Tensor::<f64>::from_vec(vec![1.0, -2.0, 3.0, 0.5], &[2, 2])?;
//! let w = Tensor::<f64>::from_vec(vec![0.5, -1.0, 2.0, 1.0], &[2, 2])?.requires_grad();
//! let loss = scope("layer", || x.matmul(&w)?.relu()?.sum_all())?;
//! let mut inspection = Inspection::new(&loss, &[("input".into(), x), ("w".into(), w)])?;
//! let order = inspection.report().backward_order.clone(); // sum, relu, matmul
//! let mut ran = Vec::new();
//! while let Some(step) = inspection.step()? {
//!     ran.push(step.node);
//! }
//! assert_eq!(ran, order);
//! assert!(inspection.report().totals.saved_bytes > 0);
//! # Ok::<(), nabla::Error>(())
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use serde::Serialize;

use super::graph::{topo_order, Observer, ReversePass};
use crate::error::{Error, Result};
use crate::tensor::{Float, Tensor, TensorId};

/// Summary statistics of a tensor's values (over every element).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TensorSummary {
    /// Mean.
    pub mean: f64,
    /// Standard deviation (population).
    pub std: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Euclidean norm.
    pub l2: f64,
}

impl TensorSummary {
    /// The statistics of `t` (NaN when `t` is empty).
    pub fn of<T: Float>(t: &Tensor<T>) -> Result<Self> {
        let v = t.to_vec()?;
        let n = v.len() as f64;
        let (mut sum, mut sq, mut min, mut max) = (0.0, 0.0, f64::INFINITY, f64::NEG_INFINITY);
        for x in &v {
            let x = x.to_f64();
            sum += x;
            sq += x * x;
            min = min.min(x);
            max = max.max(x);
        }
        if v.is_empty() {
            return Ok(TensorSummary {
                mean: f64::NAN,
                std: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
                l2: 0.0,
            });
        }
        let mean = sum / n;
        Ok(TensorSummary {
            mean,
            std: (sq / n - mean * mean).max(0.0).sqrt(),
            min,
            max,
            l2: sq.sqrt(),
        })
    }
}

/// One tensor of the graph: an op's output, or a leaf (a parameter, the input).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeReport {
    /// Position in topological order (inputs before the ops that use them).
    pub id: usize,
    /// The op that made it (`None` for a leaf).
    pub op: Option<&'static str>,
    /// A leaf's name (`layers.0.weight`, `input`); empty for an op.
    pub label: String,
    /// The [scope](super::scope) an op was recorded in (`layers.0`, `loss`), or a leaf's
    /// module (its name up to the last dot).
    pub group: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// True for a leaf.
    pub leaf: bool,
    /// Whether it requires a gradient.
    pub requires_grad: bool,
    /// The ids of its inputs, in the op's order.
    pub inputs: Vec<usize>,
    /// Bytes of storage the graph keeps alive for it until backward has run (0 for leaves and
    /// for views of a storage already counted).
    pub saved_bytes: usize,
    /// Its forward value.
    pub value: TensorSummary,
    /// Its gradient, once the reverse pass has reached it.
    pub grad: Option<TensorSummary>,
}

/// The graph's memory in one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GraphTotals {
    /// Recorded operations.
    pub ops: usize,
    /// Bytes kept alive for backward: the sum of the ops' `saved_bytes`.
    pub saved_bytes: usize,
    /// Bytes of the leaves (parameters, input), which exist without the graph too.
    pub leaf_bytes: usize,
    /// What a forward pass under `no_grad` holds at once for a chain of ops: the largest
    /// output of one op together with its inputs made by other ops.
    pub no_grad_peak_bytes: usize,
}

/// The recorded graph behind a tensor (see [`Inspection`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GraphReport {
    /// Every tensor, in topological order (`nodes[i].id == i`).
    pub nodes: Vec<NodeReport>,
    /// The id of the root (the loss).
    pub root: usize,
    /// The ops in the order the reverse pass runs their rules.
    pub backward_order: Vec<usize>,
    /// Totals.
    pub totals: GraphTotals,
}

/// One op's rule, run by [`Inspection::step`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackwardStep {
    /// How many rules ran before this one.
    pub index: usize,
    /// The op's node id.
    pub node: usize,
    /// The op's name.
    pub op: &'static str,
    /// The gradient it received (the sum over every use of its output).
    pub grad_in: TensorSummary,
    /// The gradients it sent to its inputs that require one.
    pub sent: Vec<SentGrad>,
    /// Rules still to run.
    pub remaining: usize,
    /// True when this was the last.
    pub done: bool,
}

/// A gradient sent by a rule to one input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SentGrad {
    /// The input's node id.
    pub to: usize,
    /// The gradient sent (before it is added to others for the same input).
    pub grad: TensorSummary,
}

/// The graph behind a scalar loss and its reverse pass, run one op at a time by the same
/// state machine as [`Tensor::backward`].
pub struct Inspection<T: Float = f32> {
    report: GraphReport,
    pass: ReversePass<T>,
    index: HashMap<TensorId, usize>,
    steps: usize,
    failed: bool,
}

impl<T: Float> Inspection<T> {
    /// Records the graph behind `loss` (one element, requiring a gradient). `names` label
    /// leaves: parameters by their names, the input batch as `input`.
    pub fn new(loss: &Tensor<T>, names: &[(String, Tensor<T>)]) -> Result<Self> {
        if loss.numel() != 1 || !loss.requires_grad_flag() {
            return Err(Error::autograd(
                "inspect",
                format!(
                    "the root must be a one-element tensor that requires a gradient, got shape \
                     {:?} (requires_grad {})",
                    loss.shape(),
                    loss.requires_grad_flag()
                ),
            ));
        }
        let order = topo_order(&[loss], false, &HashSet::new());
        let index: HashMap<TensorId, usize> =
            order.iter().enumerate().map(|(i, t)| (t.id(), i)).collect();
        let named: HashMap<TensorId, &str> =
            names.iter().map(|(n, t)| (t.id(), n.as_str())).collect();
        let nodes = order
            .iter()
            .enumerate()
            .map(|(i, t)| node_report(i, t, &index, &named))
            .collect::<Result<Vec<_>>>()?;
        let nodes = count_saved(nodes, &order);
        let seed = Tensor::ones(loss.shape())?;
        let pass = ReversePass::new(
            &[(loss.clone(), seed)],
            false,
            HashSet::new(),
            HashSet::new(),
        )?;
        let backward_order: Vec<usize> = pass
            .order()
            .iter()
            .rev()
            .filter(|t| t.recorded().is_some())
            .map(|t| index[&t.id()])
            .collect();
        let totals = totals(&nodes, std::mem::size_of::<T>());
        Ok(Inspection {
            report: GraphReport {
                root: index[&loss.id()],
                nodes,
                backward_order,
                totals,
            },
            pass,
            index,
            steps: 0,
            failed: false,
        })
    }

    /// The graph, with the gradients the pass has reached so far.
    pub fn report(&self) -> &GraphReport {
        &self.report
    }

    /// Runs the next op's rule; `None` once the pass is complete. After an error (a value
    /// modified in place since the forward pass) every later call is an error too: the pass
    /// cannot be completed.
    pub fn step(&mut self) -> Result<Option<BackwardStep>> {
        if self.failed {
            return Err(Error::autograd(
                "inspect",
                "an earlier step of this backward pass failed; record the graph again",
            ));
        }
        let mut seen = Seen::default();
        let ran = self.pass.step(&mut seen);
        self.failed = ran.is_err();
        if !ran? {
            return Ok(None);
        }
        let Some((node, g)) = seen.op else {
            return Err(Error::autograd("inspect", "internal: a step ran no rule"));
        };
        let node = self.index[&node];
        let grad_in = TensorSummary::of(&g)?;
        self.report.nodes[node].grad = Some(grad_in);
        let mut sent = Vec::with_capacity(seen.sent.len());
        for (id, grad) in &seen.sent {
            let to = self.index[id];
            sent.push(SentGrad {
                to,
                grad: TensorSummary::of(grad)?,
            });
            if self.report.nodes[to].leaf {
                if let Some(total) = self.pass.grad(*id) {
                    self.report.nodes[to].grad = Some(TensorSummary::of(total)?);
                }
            }
        }
        let index = self.steps;
        self.steps += 1;
        let done = !self.pass.has_pending();
        let remaining = if done {
            0
        } else {
            self.report.backward_order.len().saturating_sub(self.steps)
        };
        Ok(Some(BackwardStep {
            index,
            node,
            op: self.report.nodes[node].op.unwrap_or("?"),
            grad_in,
            sent,
            remaining,
            done,
        }))
    }

    /// Runs the rest of the pass.
    pub fn run(&mut self) -> Result<()> {
        while self.step()?.is_some() {}
        Ok(())
    }

    /// Rules run so far.
    pub fn steps(&self) -> usize {
        self.steps
    }
}

/// What one step of the pass did.
#[derive(Default)]
struct Seen<T: Float> {
    op: Option<(TensorId, Tensor<T>)>,
    sent: Vec<(TensorId, Tensor<T>)>,
}

impl<T: Float> Observer<T> for Seen<T> {
    fn op(&mut self, node: &Tensor<T>, g: &Tensor<T>) {
        self.op = Some((node.id(), g.clone()));
    }
    fn sent(&mut self, input: &Tensor<T>, grad: &Tensor<T>) {
        self.sent.push((input.id(), grad.clone()));
    }
}

fn node_report<T: Float>(
    id: usize,
    t: &Tensor<T>,
    index: &HashMap<TensorId, usize>,
    named: &HashMap<TensorId, &str>,
) -> Result<NodeReport> {
    let op = t.op();
    let (label, group) = match (op, named.get(&t.id())) {
        (Some(_), _) => (
            String::new(),
            t.scope().as_deref().unwrap_or("").to_string(),
        ),
        (None, Some(name)) => (
            name.to_string(),
            name.rsplit_once('.').map_or(*name, |(m, _)| m).to_string(),
        ),
        (None, None) if t.requires_grad_flag() => ("leaf".into(), "leaves".into()),
        (None, None) => ("constant".into(), "constants".into()),
    };
    Ok(NodeReport {
        id,
        op: op.map(|o| o.kind().name()),
        label,
        group,
        shape: t.shape().to_vec(),
        leaf: op.is_none(),
        requires_grad: t.requires_grad_flag(),
        inputs: op.map_or_else(Vec::new, |o| {
            o.inputs().iter().map(|i| index[&i.id()]).collect()
        }),
        saved_bytes: 0,
        value: TensorSummary::of(t)?,
        grad: None,
    })
}

/// Fills in `saved_bytes`: an op's storage, counted once when views share it, and what the op
/// keeps beside its inputs (GELU's slope).
fn count_saved<T: Float>(mut nodes: Vec<NodeReport>, order: &[Tensor<T>]) -> Vec<NodeReport> {
    let mut seen = HashSet::new();
    for (n, t) in nodes.iter_mut().zip(order) {
        if seen.insert(t.storage_key()) && !n.leaf {
            n.saved_bytes = t.storage_bytes();
        }
        for k in t.op().map_or_else(Vec::new, |op| op.kept()) {
            if seen.insert(k.storage_key()) {
                n.saved_bytes += k.storage_bytes();
            }
        }
    }
    nodes
}

fn totals(nodes: &[NodeReport], elem_bytes: usize) -> GraphTotals {
    let bytes = |n: &NodeReport| n.shape.iter().product::<usize>() * elem_bytes;
    let mut t = GraphTotals {
        ops: 0,
        saved_bytes: 0,
        leaf_bytes: 0,
        no_grad_peak_bytes: 0,
    };
    for n in nodes {
        if n.leaf {
            t.leaf_bytes += bytes(n);
            continue;
        }
        t.ops += 1;
        t.saved_bytes += n.saved_bytes;
        let held: usize = bytes(n)
            + n.inputs
                .iter()
                .filter(|&&i| !nodes[i].leaf)
                .map(|&i| bytes(&nodes[i]))
                .sum::<usize>();
        t.no_grad_peak_bytes = t.no_grad_peak_bytes.max(held);
    }
    t
}

impl GraphReport {
    /// The graph in Graphviz DOT (`dot -Tsvg`): one box per op, grouped in a cluster per
    /// scope, leaves as ellipses, edges from inputs to the ops that use them.
    pub fn to_dot(&self) -> String {
        let mut s = String::from(
            "digraph nabla {\n  rankdir=TB;\n  node [fontname=\"monospace\", fontsize=10];\n",
        );
        let mut groups: Vec<&str> = Vec::new();
        for n in &self.nodes {
            if !groups.contains(&n.group.as_str()) {
                groups.push(&n.group);
            }
        }
        for (k, g) in groups.iter().enumerate() {
            let _ = writeln!(s, "  subgraph cluster_{k} {{\n    label=\"{}\";", escape(g));
            for n in self.nodes.iter().filter(|n| n.group == *g) {
                let _ = writeln!(s, "    {}", dot_node(n));
            }
            s.push_str("  }\n");
        }
        for n in &self.nodes {
            for i in &n.inputs {
                let _ = writeln!(s, "  n{i} -> n{};", n.id);
            }
        }
        let t = &self.totals;
        let _ = writeln!(
            s,
            "  label=\"{} ops; kept for backward: {} bytes; leaves: {} bytes; no_grad forward \
             peak: {} bytes\";\n}}",
            t.ops, t.saved_bytes, t.leaf_bytes, t.no_grad_peak_bytes
        );
        s
    }
}

fn dot_node(n: &NodeReport) -> String {
    let shape: Vec<String> = n.shape.iter().map(|d| d.to_string()).collect();
    let shape = shape.join("×");
    match n.op {
        Some(op) => format!(
            "n{} [shape=box, label=\"#{} {op}\\n{shape}\\nsaved {} B\"];",
            n.id, n.id, n.saved_bytes
        ),
        None => format!(
            "n{} [shape=ellipse, label=\"{}\\n{shape}\"];",
            n.id,
            escape(&n.label)
        ),
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

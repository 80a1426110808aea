//! Gradient checkpointing: run a function without keeping its activations, and recompute it
//! (recording) when backward reaches it. Memory for O(√L) segments instead of O(L) layers, for
//! the price of one more forward pass.
//!
//! Two pieces of thread-local bookkeeping make recomputation exact:
//! - **captures**: while the function first runs (under `no_grad`), every tensor made before
//!   that run that one of its ops reads is noted. They become inputs of the checkpoint op, so
//!   weights the closure captured receive their gradients, and every captured value (with or
//!   without a gradient) is version-checked before the recomputation, like any op's inputs;
//! - **random draws**: random layers ask [`replayable_seed`] for their seed; the first run
//!   records the seeds, the recomputation replays them, so dropout draws the same mask.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::sync::Arc;

use super::graph::reverse_pass;
use super::{is_grad_enabled, node, CheckpointFn, Checkpointed, GradMode, Op};
use crate::error::{Error, Result};
use crate::tensor::shape::fmt_shape;
use crate::tensor::{Float, Tensor, TensorId};

/// A tensor of any element type, as a capture list holds it.
trait Captured {
    fn clone_box(&self) -> Box<dyn Captured>;
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

impl<T: Float> Captured for Tensor<T> {
    fn clone_box(&self) -> Box<dyn Captured> {
        Box::new(self.clone())
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

enum Frame {
    /// A checkpointed function's first run.
    Forward {
        /// Tensors with an id below this one existed before the run: they are captures.
        start: TensorId,
        captured: Vec<(TensorId, Box<dyn Captured>)>,
        seen: HashSet<TensorId>,
        seeds: Vec<u64>,
    },
    /// A recomputation, replaying the seeds of the first run.
    Replay { seeds: Arc<Vec<u64>>, next: usize },
}

thread_local! {
    static FRAMES: RefCell<Vec<Frame>> = const { RefCell::new(Vec::new()) };
    static FORWARD_FRAMES: Cell<usize> = const { Cell::new(0) };
}

/// Pops the frame it pushed when dropped (also on an error or a panic in the function).
struct FrameGuard;

impl FrameGuard {
    fn push(frame: Frame) -> Self {
        if matches!(frame, Frame::Forward { .. }) {
            FORWARD_FRAMES.with(|n| n.set(n.get() + 1));
        }
        FRAMES.with(|f| f.borrow_mut().push(frame));
        FrameGuard
    }

    /// Pops the frame, handing a forward frame's captures to the enclosing forward frame
    /// (a nested checkpoint's captures are the outer function's captures too).
    fn pop(self) -> Option<Frame> {
        std::mem::forget(self);
        let frame = FRAMES.with(|f| f.borrow_mut().pop());
        if let Some(Frame::Forward { captured, .. }) = &frame {
            FORWARD_FRAMES.with(|n| n.set(n.get() - 1));
            FRAMES.with(|f| {
                if let Some(Frame::Forward {
                    start,
                    captured: outer,
                    seen,
                    ..
                }) = f.borrow_mut().last_mut()
                {
                    for (id, t) in captured {
                        if *id < *start && seen.insert(*id) {
                            outer.push((*id, t.clone_box()));
                        }
                    }
                }
            });
        }
        frame
    }
}

impl Drop for FrameGuard {
    fn drop(&mut self) {
        let popped = FRAMES.with(|f| f.borrow_mut().pop());
        if matches!(popped, Some(Frame::Forward { .. })) {
            FORWARD_FRAMES.with(|n| n.set(n.get() - 1));
        }
    }
}

/// Called by every op that does not record: inside a checkpointed function's first run, notes
/// the inputs made before that run.
pub(crate) fn note_inputs<T: Float>(inputs: &[&Tensor<T>]) {
    if FORWARD_FRAMES.with(|n| n.get()) == 0 {
        return;
    }
    FRAMES.with(|f| {
        let mut frames = f.borrow_mut();
        let Some(Frame::Forward {
            start,
            captured,
            seen,
            ..
        }) = frames
            .iter_mut()
            .rev()
            .find(|fr| matches!(fr, Frame::Forward { .. }))
        else {
            return;
        };
        for t in inputs {
            if t.id() < *start && seen.insert(t.id()) {
                captured.push((t.id(), Box::new((*t).clone())));
            }
        }
    });
}

/// Whether a checkpointed function is being recomputed on this thread: layers with side
/// effects (batch normalisation's running statistics) skip them then, so that they happen once
/// per forward pass.
pub fn is_replaying() -> bool {
    FRAMES.with(|f| {
        f.borrow()
            .iter()
            .any(|fr| matches!(fr, Frame::Replay { .. }))
    })
}

/// A seed for a random layer: `draw()` normally; inside a checkpoint's recomputation, the seed
/// the first run drew at the same point. Random layers (dropout) take their randomness from
/// here so that a checkpointed segment recomputes exactly what it computed.
pub fn replayable_seed(draw: impl FnOnce() -> u64) -> Result<u64> {
    // The frames are not borrowed while `draw` runs (it may use tensors, or ask for a seed).
    let replayed = FRAMES.with(|f| {
        let mut frames = f.borrow_mut();
        let i = frames
            .iter()
            .rposition(|fr| matches!(fr, Frame::Replay { .. }))?;
        let Frame::Replay { seeds, next } = &mut frames[i] else {
            unreachable!("internal: rposition found a replay frame")
        };
        let seed = seeds.get(*next).copied().ok_or_else(|| {
            Error::autograd(
                "checkpoint",
                format!(
                    "the recomputed function drew more random seeds than its first run ({}); a \
                     checkpointed function must be deterministic",
                    seeds.len()
                ),
            )
        });
        *next += 1;
        Some(seed.map(|s| (s, i + 1)))
    });
    let (seed, from) = match replayed {
        Some(r) => r?,
        None => (draw(), 0),
    };
    FRAMES.with(|f| {
        for fr in f.borrow_mut().iter_mut().skip(from) {
            if let Frame::Forward { seeds, .. } = fr {
                seeds.push(seed);
            }
        }
    });
    Ok(seed)
}

/// Runs `f(inputs)` without keeping its intermediate tensors; backward recomputes `f` (with
/// recording) when it reaches the result, and continues from there. Values and gradients are
/// the same as without checkpointing; memory holds only the inputs of each checkpointed segment,
/// and backward costs one more forward pass of `f`.
///
/// `f` must be deterministic and own what it captures (clone tensors into it: a clone is an
/// `Arc`). Tensors requiring a gradient that `f` reads — explicit inputs or captured weights —
/// receive their gradients; every tensor `f` reads is version-checked, so editing one in place
/// before backward is an error, as without checkpointing. Random layers inside `f` (dropout)
/// replay the same draws. (A tensor made by another thread while `f` first runs and read by
/// `f` is not recognised as a capture.)
///
/// ```
/// use nabla::{autograd::checkpoint, Tensor};
/// let w = Tensor::<f64>::from_vec(vec![0.5, -1.0], &[2]).unwrap().requires_grad();
/// let x = Tensor::from_vec(vec![1.0, 2.0], &[2]).unwrap().requires_grad();
/// let w2 = w.clone();
/// let y = checkpoint(move |xs| xs[0].mul(&w2)?.tanh()?.sum_all(), &[x.clone()]).unwrap();
/// let plain = x.mul(&w).unwrap().tanh().unwrap().sum_all().unwrap();
/// let (g, h) = (y.backward().unwrap(), plain.backward().unwrap());
/// assert_eq!(g.get(&w).unwrap().to_vec().unwrap(), h.get(&w).unwrap().to_vec().unwrap());
/// assert_eq!(g.get(&x).unwrap().to_vec().unwrap(), h.get(&x).unwrap().to_vec().unwrap());
/// ```
pub fn checkpoint<T, F>(f: F, inputs: &[Tensor<T>]) -> Result<Tensor<T>>
where
    T: Float,
    F: Fn(&[Tensor<T>]) -> Result<Tensor<T>> + Send + Sync + 'static,
{
    checkpoint_fn(Arc::new(f), inputs)
}

/// [`checkpoint`] with the function already shared.
pub(crate) fn checkpoint_fn<T: Float>(
    f: CheckpointFn<T>,
    inputs: &[Tensor<T>],
) -> Result<Tensor<T>> {
    if !is_grad_enabled() {
        return f(inputs);
    }
    let guard = FrameGuard::push(Frame::Forward {
        start: TensorId::next(),
        captured: Vec::new(),
        seen: HashSet::new(),
        seeds: Vec::new(),
    });
    let out = {
        let _off = GradMode::set(false);
        f(inputs)
    };
    if let Ok(out) = &out {
        // `f` may return a captured tensor as it is (no op read it).
        note_inputs(&[out]);
    }
    let Some(Frame::Forward {
        captured, seeds, ..
    }) = guard.pop()
    else {
        unreachable!("internal: checkpoint frames are popped in order")
    };
    let out = out?;
    let mut all = inputs.to_vec();
    // Tensors of another element type cannot be this op's inputs; no gradient crosses a
    // `cast` anyway (it is not recorded).
    for t in captured
        .into_iter()
        .filter_map(|(_, t)| t.into_any().downcast::<Tensor<T>>().ok())
    {
        if !all.iter().any(|a| a.id() == t.id()) {
            all.push(*t);
        }
    }
    if !all.iter().any(|t| t.requires_grad_flag()) {
        return Ok(out);
    }
    let refs: Vec<&Tensor<T>> = all.iter().collect();
    let op = Op::Checkpoint(Box::new(Checkpointed {
        inputs: all.clone(),
        explicit: inputs.len(),
        f,
        seeds: Arc::new(seeds),
    }));
    let layout = out.layout().clone();
    Ok(out.view_parts(layout, Some(node(op, &refs, out.version()))))
}

/// The checkpoint op's rule: recompute `f` recording, then run the chain rule through that
/// graph, stopping at the op's inputs. Under `create_graph` (recording on when called) the
/// gradients carry a graph too.
pub(crate) fn backward<T: Float>(
    c: &Checkpointed<T>,
    y: &Tensor<T>,
    g: &Tensor<T>,
    need: &[bool],
) -> Result<Vec<Option<Tensor<T>>>> {
    let create_graph = is_grad_enabled();
    let replay = FrameGuard::push(Frame::Replay {
        seeds: c.seeds.clone(),
        next: 0,
    });
    let out = {
        let _on = GradMode::set(true);
        (c.f)(&c.inputs[..c.explicit])?
    };
    let Some(Frame::Replay { seeds, next }) = replay.pop() else {
        unreachable!("internal: checkpoint frames are popped in order")
    };
    if next != seeds.len() || out.shape() != y.shape() {
        return Err(Error::autograd(
            "checkpoint",
            format!(
                "the recomputed function differs from its first run ({} of {} random seeds \
                 drawn, output {} vs {}); a checkpointed function must be deterministic",
                next,
                seeds.len(),
                fmt_shape(out.shape()),
                fmt_shape(y.shape())
            ),
        ));
    }
    if !out.requires_grad_flag() {
        return Ok(vec![None; c.inputs.len()]);
    }
    let ids: HashSet<TensorId> = c.inputs.iter().map(|t| t.id()).collect();
    let grads = reverse_pass(&[(out, g.clone())], create_graph, &ids, &ids)?;
    // The pass gives each tensor's total gradient: hand it out once per tensor, not once per
    // position (`checkpoint(f, &[x, x])` must not count x's gradient twice).
    let mut given = HashSet::new();
    Ok(c.inputs
        .iter()
        .zip(need)
        .map(|(t, &n)| {
            if n && given.insert(t.id()) {
                grads.get(&t.id()).cloned()
            } else {
                None
            }
        })
        .collect())
}

//! Reverse-mode automatic differentiation.
//!
//! Operations record an [`Op`] in their output only when an input requires a gradient and
//! recording is enabled (see [`no_grad`]). [`Tensor::backward`](crate::Tensor::backward) walks
//! the recorded graph from a scalar loss back to the leaves, iteratively, applying the chain
//! rule of each op (all rules are in one file, `backward.rs`), and returns a [`GradStore`].

pub mod anomaly;
mod backward;
mod graph;
mod op;

pub use anomaly::{detect_anomaly, Anomaly};
pub use graph::{GradStore, GraphStats};
pub use op::{Op, OpKind};

use std::cell::Cell;

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
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

/// Runs `f` with graph recording disabled on this thread.
///
/// ```
/// use nabla::{no_grad, Tensor};
/// let w = Tensor::<f32>::ones(&[2]).requires_grad();
/// let y = no_grad(|| w.mul_scalar(3.0));
/// assert!(y.is_leaf() && !y.requires_grad_flag());
/// ```
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = NoGradGuard::new();
    f()
}

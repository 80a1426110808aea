//! Forward kernels over contiguous slices. Pure functions: no autograd, no allocation beyond
//! their output. Loops are written so the compiler can vectorise them; threads (rayon) are used
//! only above [`PAR_THRESHOLD`] elements, because tiny tensors are faster on one thread.

pub mod attention;
mod attention_x86;
pub mod conv;
mod conv_direct;
pub mod counter;
pub mod elementwise;
pub mod layout;
pub mod matmul;
pub mod norm;
mod operand;
pub mod pool;
pub mod reduce;
pub mod rows;
pub mod sgemm;
pub mod tiered_gemm;

use crate::tensor::shape::numel;
use std::cell::Cell;

thread_local! {
    /// Threads a product on this thread may use; 0: all of rayon's.
    static BUDGET: Cell<usize> = const { Cell::new(0) };
}

/// The threads a matrix product started on this thread may split into: rayon's count, or
/// less inside [`with_threads`].
pub fn threads() -> usize {
    match BUDGET.with(|b| b.get()) {
        0 => rayon::current_num_threads(),
        n => n,
    }
}

/// Runs `f` with the products it starts on this thread limited to `n` threads (at least 1);
/// the previous limit is restored afterwards. Results do not depend on it: every product is
/// bit-identical for any thread count.
pub fn with_threads<R>(n: usize, f: impl FnOnce() -> R) -> R {
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            BUDGET.with(|b| b.set(self.0));
        }
    }
    let _restore = Restore(BUDGET.with(|b| b.replace(n.max(1))));
    f()
}

/// Element count above which kernels split work across threads (reductions, pooling, norm
/// statistics, [`for_each_run`]).
pub const PAR_THRESHOLD: usize = 1 << 18;

/// Element count above which element-wise maps (`elementwise.rs`, in-place gradient sums)
/// split work across threads: lower than [`PAR_THRESHOLD`], since the threads are warm during
/// a training step and a map of 2¹⁶–2¹⁸ values is worth a hand-off (the GPT's residual adds
/// and gradient sums of 98,304 values, 0.7 → 0.55 ms per step; `bench/README.md`).
pub const ELEMENTWISE_THRESHOLD: usize = 1 << 16;

/// Runs `f(i, part)` for the `i`-th run of `per` values of `out` (the last may be shorter),
/// in parallel when `out` holds at least [`PAR_THRESHOLD`] values, several runs per task so
/// that a task is worth sending to another thread. Each run is handed to `f` exactly once, so
/// results do not depend on the thread count.
pub(crate) fn for_each_run<T: Send>(out: &mut [T], per: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    for_each_run_above(out, per, PAR_THRESHOLD, f)
}

/// [`for_each_run`] split among threads from `threshold` values on: for kernels whose work
/// per value is heavier than an element-wise op's (a softmax's `exp`, a norm's two passes).
pub(crate) fn for_each_run_above<T: Send>(
    out: &mut [T],
    per: usize,
    threshold: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    use rayon::prelude::*;
    if per == 0 {
        return;
    }
    if out.len() < threshold || threads() < 2 {
        out.chunks_mut(per).enumerate().for_each(|(i, o)| f(i, o));
    } else {
        let k = (threshold / 16 / per).max(1);
        out.par_chunks_mut(per * k).enumerate().for_each(|(t, os)| {
            for (i, o) in os.chunks_mut(per).enumerate() {
                f(t * k + i, o);
            }
        });
    }
}

/// Views `shape` around `axis` as `[outer, dim, inner]`.
pub fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = numel(&shape[..axis]);
    let inner = numel(&shape[axis + 1..]);
    (outer, shape[axis], inner)
}

//! Forward kernels over contiguous slices. Pure functions: no autograd, no allocation beyond
//! their output. Loops are written so the compiler can vectorise them; threads (rayon) are used
//! only above [`PAR_THRESHOLD`] elements, because tiny tensors are faster on one thread.

pub mod elementwise;
pub mod layout;
pub mod matmul;
pub mod reduce;
pub mod sgemm;

use crate::tensor::shape::numel;

/// Element count above which element-wise kernels split work across threads.
pub const PAR_THRESHOLD: usize = 1 << 18;

/// Views `shape` around `axis` as `[outer, dim, inner]`.
pub fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = numel(&shape[..axis]);
    let inner = numel(&shape[axis + 1..]);
    (outer, shape[axis], inner)
}

//! The one entry point to the GEMM crate. Transposed operands are passed as swapped strides,
//! never copied.

use crate::tensor::Float;

/// One stored row-major matrix operand: its data, stored rows and columns, and whether the
/// product should read it transposed.
#[derive(Clone, Copy)]
pub struct MatRef<'a, T> {
    /// Row-major elements.
    pub data: &'a [T],
    /// Stored rows.
    pub rows: usize,
    /// Stored columns.
    pub cols: usize,
    /// Read as its transpose.
    pub trans: bool,
}

impl<T> MatRef<'_, T> {
    /// Rows and columns as the product sees them.
    pub fn dims(&self) -> (usize, usize) {
        if self.trans {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        }
    }
    fn strides(&self) -> (isize, isize) {
        let (r, c) = (self.cols as isize, 1);
        if self.trans {
            (c, r)
        } else {
            (r, c)
        }
    }
}

/// `out = op(a)·op(b) + beta·out` where `out` is row-major m×n. Shapes must agree (checked by
/// the caller; asserted here because a mismatch would be memory-unsafe).
pub fn gemm_into<T: Float>(a: MatRef<'_, T>, b: MatRef<'_, T>, beta: T, out: &mut [T]) {
    let (m, k) = a.dims();
    let (k2, n) = b.dims();
    assert!(
        k == k2
            && a.data.len() >= a.rows * a.cols
            && b.data.len() >= b.rows * b.cols
            && out.len() >= m * n,
        "internal: gemm operand sizes disagree"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for o in out[..m * n].iter_mut() {
            *o = if beta == T::ZERO { T::ZERO } else { *o * beta };
        }
        return;
    }
    let (rsa, csa) = a.strides();
    let (rsb, csb) = b.strides();
    // SAFETY: sizes were asserted above; strides describe the stored row-major matrices.
    unsafe {
        T::gemm(
            m,
            k,
            n,
            a.data.as_ptr(),
            rsa,
            csa,
            b.data.as_ptr(),
            rsb,
            csb,
            beta,
            out.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// `op(a)·op(b)` into a new row-major m×n buffer.
pub fn gemm<T: Float>(a: MatRef<'_, T>, b: MatRef<'_, T>) -> Vec<T> {
    let (m, _) = a.dims();
    let (_, n) = b.dims();
    let mut out = vec![T::ZERO; m * n];
    gemm_into(a, b, T::ZERO, &mut out);
    out
}

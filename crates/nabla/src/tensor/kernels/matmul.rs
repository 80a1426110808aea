//! The one entry point to the GEMM kernels: our own (`sgemm`: small and thin f32 products on
//! CPUs with AVX-512F) and the `gemm` crate's (everything else). Operands are strided matrices
//! inside a storage slice: transposes and other views are passed as strides, never copied.

use crate::tensor::Float;

/// One matrix operand as the product reads it: `m[i][j] = data[offset + i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a, T> {
    /// The storage the matrix lives in.
    pub data: &'a [T],
    /// Index of element (0, 0).
    pub offset: usize,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

impl<T> MatRef<'_, T> {
    /// The transpose (strides swapped).
    pub fn t(self) -> Self {
        MatRef {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// The same matrix over `data` (the same storage seen as another type).
    fn with_data<'b, U>(&self, data: &'b [U]) -> MatRef<'b, U> {
        let MatRef {
            offset,
            rows,
            cols,
            rs,
            cs,
            ..
        } = *self;
        MatRef {
            data,
            offset,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// True when every element lies inside `data` (the condition for the unsafe call).
    pub(crate) fn in_bounds(&self) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        (self.rows - 1)
            .checked_mul(self.rs)
            .zip((self.cols - 1).checked_mul(self.cs))
            .and_then(|(r, c)| r.checked_add(c)?.checked_add(self.offset))
            .is_some_and(|last| last < self.data.len() && last <= isize::MAX as usize)
    }
}

/// `out = a·b + beta·out` where `out` is row-major m×n. Shapes must agree (checked by the
/// caller; asserted here, with every operand's bounds, because a mismatch would be
/// memory-unsafe).
pub fn gemm_into<T: Float>(a: MatRef<'_, T>, b: MatRef<'_, T>, beta: T, out: &mut [T]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(
        k == b.rows
            && a.in_bounds()
            && b.in_bounds()
            && m.checked_mul(n).is_some_and(|mn| out.len() >= mn),
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
    if let (Some(ad), Some(bd), Some(o)) =
        (T::as_f32(a.data), T::as_f32(b.data), T::as_f32_mut(out))
    {
        if super::sgemm::suits(m, k, n, b.cs == 1 || n == 1) {
            let (a, b) = (a.with_data(ad), b.with_data(bd));
            super::sgemm::sgemm(a, b, beta.to_f64() as f32, o, super::threads());
            return;
        }
    }
    // A stride along an axis of length 1 is never multiplied by a non-zero index; make it 0 so
    // that the cast below cannot wrap.
    let rsa = if m > 1 { a.rs as isize } else { 0 };
    let csa = if k > 1 { a.cs as isize } else { 0 };
    let rsb = if k > 1 { b.rs as isize } else { 0 };
    let csb = if n > 1 { b.cs as isize } else { 0 };
    // SAFETY: every element of a and b lies inside its slice (in_bounds), `out` holds m·n
    // elements, and every stride used fits in isize because
    // it indexes into a slice.
    unsafe {
        T::gemm(
            m,
            k,
            n,
            a.data.as_ptr().add(a.offset),
            rsa,
            csa,
            b.data.as_ptr().add(b.offset),
            rsb,
            csb,
            beta,
            out.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

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
    let threads = super::threads();
    let parts = column_parts(m, k, n, threads);
    if parts <= 1 {
        // SAFETY: every element of a and b lies inside its slice (in_bounds), `out` holds m·n
        // elements, and every stride used fits in isize because it indexes into a slice.
        unsafe {
            T::gemm(
                m,
                k,
                n,
                a.data[a.offset..].as_ptr(),
                rsa,
                csa,
                b.data[b.offset..].as_ptr(),
                rsb,
                csb,
                beta,
                out.as_mut_ptr(),
                n as isize,
                1,
                threads,
            );
        }
        return;
    }
    let out = SendPtr(out.as_mut_ptr());
    rayon::scope(|s| {
        for p in 0..parts {
            let (lo, hi) = (part_start(n, p, parts), part_start(n, p + 1, parts));
            let out = &out;
            s.spawn(move |_| {
                // SAFETY: as above, for the columns lo..hi (lo < hi <= n) of B (column lo lies
                // in its slice) and of the output; the parts' columns are disjoint, so no
                // element is written twice.
                unsafe {
                    T::gemm(
                        m,
                        k,
                        hi - lo,
                        a.data[a.offset..].as_ptr(),
                        rsa,
                        csa,
                        b.data[b.offset + lo * b.cs..].as_ptr(),
                        rsb,
                        csb,
                        beta,
                        out.0.add(lo),
                        n as isize,
                        1,
                        1,
                    );
                }
            });
        }
    });
}

/// The output pointer, handed to the threads that each write their own columns of it.
struct SendPtr<T>(*mut T);
// SAFETY: the threads `gemm_into` starts write disjoint columns of the output (see there).
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

/// Into how many column ranges a product is cut, each one single-threaded `gemm` call on its
/// own thread: `threads` where the product is large (≥ 2²⁰ multiply-adds) and each range keeps
/// at least 64 columns; otherwise 1 (the `gemm` crate then splits the work itself, over rayon's
/// threads). Cutting the columns this way, each thread packs only its own part of B: the m =
/// 128 products of the fashion MLP ran 0.93–1.45× as fast as with `gemm`'s own split, the wide
/// ones about even (`examples/gemm_split.rs`, `bench/README.md`). Results do not depend on it: each output element is the same k sum,
/// in the same order, whichever call computes it (tested on 1, 2 and 3 threads).
fn column_parts(m: usize, k: usize, n: usize, threads: usize) -> usize {
    if threads < 2 || m.saturating_mul(k).saturating_mul(n) < 1 << 20 {
        1
    } else {
        threads.min(n / 64)
    }
}

/// The first column of part `p` of `parts` (`n` for `p == parts`), on a multiple of 16.
fn part_start(n: usize, p: usize, parts: usize) -> usize {
    if p >= parts {
        n
    } else {
        n * p / parts / 16 * 16
    }
}

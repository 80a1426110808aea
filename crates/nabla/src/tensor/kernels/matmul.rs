//! The one entry point to the GEMM kernels: our own (`sgemm`: small and thin f32 products on
//! CPUs with AVX-512F) and the `gemm` crate's (everything else). Operands are strided matrices
//! inside a storage slice: transposes and other views are passed as strides, never copied.

use crate::tensor::Float;
use std::mem::MaybeUninit;

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
    check(&a, &b, out.len());
    // SAFETY: `check` passed and `out` is initialised, m·n elements or more.
    unsafe { gemm_ptr(a, b, beta, out.as_mut_ptr()) }
}

/// `out = a·b` into a buffer whose old contents are never read (it may be uninitialised):
/// every one of the m·n elements is written. This saves the zero-fill of a fresh output
/// (3% of a Fashion-MNIST epoch, all of it on one thread; `bench/README.md`).
pub fn gemm_uninit<T: Float>(a: MatRef<'_, T>, b: MatRef<'_, T>, out: &mut [MaybeUninit<T>]) {
    check(&a, &b, out.len());
    // SAFETY: `check` passed; with beta = 0 no kernel reads the output (ours store without
    // loading; the `gemm` crate is called with `read_dst = false`, and only writes through raw
    // pointers then), and every element is written (the tiles, column parts or `gemm` blocks
    // cover the m×n output; k = 0 writes zeros).
    unsafe { gemm_ptr(a, b, T::ZERO, out.as_mut_ptr().cast::<T>()) }
}

/// The shapes agree and every operand lies inside its slice; the output holds `len ≥ m·n`.
fn check<T>(a: &MatRef<'_, T>, b: &MatRef<'_, T>, len: usize) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(
        k == b.rows
            && a.in_bounds()
            && b.in_bounds()
            && m.checked_mul(n).is_some_and(|mn| len >= mn),
        "internal: gemm operand sizes disagree"
    );
}

/// `out = a·b + beta·out` through a pointer; with beta = 0 nothing is read from `out`.
///
/// # Safety
/// `check(a, b, len)` passed for the `len` elements at `out`, which are valid for writes (and
/// initialised where beta ≠ 0).
unsafe fn gemm_ptr<T: Float>(a: MatRef<'_, T>, b: MatRef<'_, T>, beta: T, out: *mut T) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for i in 0..m * n {
            // SAFETY: i < m·n ≤ len; read only where beta ≠ 0 (then initialised).
            unsafe {
                let o = out.add(i);
                o.write(if beta == T::ZERO { T::ZERO } else { *o * beta });
            }
        }
        return;
    }
    if let (Some(ad), Some(bd)) = (T::as_f32(a.data), T::as_f32(b.data)) {
        if T::DTYPE == "f32" && super::sgemm::suits(m, k, n, b.cs == 1 || n == 1) {
            let (a, b) = (a.with_data(ad), b.with_data(bd));
            let threads = super::threads();
            // SAFETY: T is f32 (the trait is sealed: f32 and f64 only), so `out` points to
            // f32s; the rest is this function's contract.
            unsafe { super::sgemm::sgemm(a, b, beta.to_f64() as f32, out.cast::<f32>(), threads) };
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
                out,
                n as isize,
                1,
                threads,
            );
        }
        return;
    }
    let out = SendPtr(out);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Distinct values in [-0.5, 0.5).
    fn values<T: Float>(n: usize, seed: u32) -> Vec<T> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                T::from_f64((s >> 8) as f64 / (1u32 << 24) as f64 - 0.5)
            })
            .collect()
    }

    /// Every path (our small-product kernel, the `gemm` crate on one thread and split into
    /// column parts, k = 0, a transposed B) writes all of a `gemm_uninit` output and reads none
    /// of it: an output full of NaN beforehand gives the same bits as a zeroed one.
    fn never_reads_the_output<T: Float>() {
        for &(m, k, n, tb) in &[
            (5, 3, 7, false),
            (33, 64, 3, false),
            (64, 300, 10, true),
            (128, 784, 512, false),
            (128, 256, 512, true),
            (70, 130, 300, true),
            (4, 0, 5, false),
        ] {
            let (ad, bd) = (values::<T>(m * k, 1), values::<T>(k * n, 2));
            let a = MatRef {
                data: &ad,
                offset: 0,
                rows: m,
                cols: k,
                rs: k,
                cs: 1,
            };
            let (rs, cs) = if tb { (1, k) } else { (n, 1) };
            let b = MatRef {
                data: &bd,
                offset: 0,
                rows: k,
                cols: n,
                rs,
                cs,
            };
            for threads in [1, 2] {
                let mut want = vec![T::ZERO; m * n];
                super::super::with_threads(threads, || gemm_into(a, b, T::ZERO, &mut want));
                let mut got = vec![MaybeUninit::new(T::from_f64(f64::NAN)); m * n];
                super::super::with_threads(threads, || gemm_uninit(a, b, &mut got));
                // SAFETY: every element was initialised (with NaN) before the call.
                let got: Vec<T> = got.iter().map(|v| unsafe { v.assume_init() }).collect();
                assert!(
                    got.iter()
                        .zip(&want)
                        .all(|(g, w)| g.to_f64().to_bits() == w.to_f64().to_bits()),
                    "{} ({m},{k},{n}) Bᵀ {tb}, {threads} threads: the old output leaked in",
                    T::DTYPE
                );
            }
        }
    }

    #[test]
    fn a_fresh_product_output_is_written_whole_and_never_read() {
        never_reads_the_output::<f32>();
        never_reads_the_output::<f64>();
    }
}

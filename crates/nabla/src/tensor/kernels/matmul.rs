//! The one entry point to the GEMM kernels: our own (`sgemm`: small and thin f32 products on
//! CPUs with AVX-512F) and the `gemm` crate's (everything else). Operands are strided matrices
//! inside a storage slice: transposes and other views are passed as strides, not copied — except
//! a transposed f32 B of a large product (up to 2 MB), which is copied row-major per part
//! because `gemm` packs that layout slowly (`copy_pays`).

pub use super::operand::MatRef;
use super::operand::{block_fits, scale_block, with_rows_of};
use crate::tensor::Float;
use std::mem::MaybeUninit;

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
    // pointers then), and every element is written (the tiles, row or column parts or `gemm` blocks
    // cover the m×n output; k = 0 writes zeros).
    unsafe { gemm_ptr(a, b, T::ZERO, out.as_mut_ptr().cast::<T>()) }
}

/// `out[i·ld + j] = (a·b)[i][j] + beta·out[i·ld + j]`: an m×n product written into a block of
/// a larger row-major matrix whose rows are `ld ≥ n` long, on this thread (the convolution
/// kernels share out samples among threads instead). With beta = 0 the block's old values are
/// never read. Shapes and bounds are asserted (a mismatch would be memory-unsafe).
pub fn gemm_block<T: Float>(a: MatRef<'_, T>, b: MatRef<'_, T>, beta: T, out: &mut [T], ld: usize) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(
        k == b.rows && a.in_bounds() && b.in_bounds() && block_fits(m, n, ld, out.len()),
        "internal: gemm_block operand sizes disagree"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        scale_block(out, (m, n, ld), beta);
        return;
    }
    let rsa = if m > 1 { a.rs as isize } else { 0 };
    let csa = if k > 1 { a.cs as isize } else { 0 };
    let rsb = if k > 1 { b.rs as isize } else { 0 };
    let csb = if n > 1 { b.cs as isize } else { 0 };
    // SAFETY: both operands lie inside their slices (in_bounds, so every stride used fits in
    // isize), and the block's m rows of n values at row stride ld lie inside `out` (asserted).
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
            ld as isize,
            1,
            1,
        )
    }
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
        if let Some(kernel) = super::sgemm::suits(m, k, n, b.cs == 1 || n == 1) {
            let (a, b) = (a.with_data(ad), b.with_data(bd));
            let threads = super::threads();
            // SAFETY: T is f32 (`as_f32` answered), so `out` points to f32s; `kernel` came
            // from the active tier, which the CPU runs; the rest is this function's contract.
            unsafe {
                super::sgemm::sgemm(
                    kernel,
                    a,
                    b,
                    beta.to_f64() as f32,
                    out.cast::<f32>(),
                    threads,
                )
            };
            return;
        }
    }
    let threads = super::threads();
    let parts = parts(m, k, n, threads);
    let copy_b = copy_pays(m, k, n, &b);
    if parts <= 1 {
        // SAFETY: this function's contract, for all n columns.
        unsafe { gemm_columns(&a, &b, (0, n), beta, out, n, threads, copy_b) };
        return;
    }
    let out = SendPtr(out);
    let by_rows = m >= n;
    let len = if by_rows { m } else { n };
    // Spawned last part first: a calling thread that is one of the pool's (as
    // `threads::init_pool` makes the training thread) takes its own queue's newest job, so it
    // runs part 0 (the first rows) while another thread steals the rest — as rayon's parallel
    // iterators split an element-wise op's rows, so each thread then reads the rows of a
    // product's output it wrote itself (in its own core's cache) instead of the other core's.
    rayon::scope(|s| {
        for p in (0..parts).rev() {
            let (lo, hi) = (part_start(len, p, parts), part_start(len, p + 1, parts));
            let (a, b, out) = (&a, &b, &out);
            s.spawn(move |_| {
                if by_rows {
                    // Rows lo..hi of A give rows lo..hi of the output.
                    let a = MatRef {
                        offset: a.offset + lo * a.rs,
                        rows: hi - lo,
                        ..*a
                    };
                    // SAFETY: this function's contract, for the rows lo..hi (lo < hi <= m) of
                    // the output, which start at element lo·n; the parts' rows are disjoint.
                    unsafe { gemm_columns(&a, b, (0, n), beta, out.0.add(lo * n), n, 1, copy_b) };
                } else {
                    // SAFETY: this function's contract, for the columns lo..hi (lo < hi <= n);
                    // the parts' columns are disjoint, so no element is written twice.
                    unsafe { gemm_columns(a, b, (lo, hi), beta, out.0.add(lo), n, 1, copy_b) };
                }
            });
        }
    });
}

/// Whether B's columns are copied row-major before `gemm` reads them: B is a transposed
/// row-major matrix (columns contiguous, as `x·wᵀ` in backward reads `w`), f32, and the product
/// is large enough. `gemm` packs such a B across rows, slowly: the (128, 256, 512) product of
/// the Fashion-MNIST MLP's backward ran at ~0.55× the speed of the same product with B
/// row-major (`examples/gemm_split.rs`). The copy is made per part, on the thread that
/// runs it, with an 8×8 AVX transpose: that product then ran 1.24–1.42× as fast (89–115 vs
/// 72–81 GFLOP/s median, 2 threads). Decided from the product's shape only, so that every
/// thread count takes the same path.
fn copy_pays<T: Float>(m: usize, k: usize, n: usize, b: &MatRef<'_, T>) -> bool {
    T::DTYPE == "f32"
        && b.rs == 1
        && b.cs != 1
        && k > 1
        && n > 1
        && m >= 32
        && m.saturating_mul(k).saturating_mul(n) >= 1 << 20
        && k.saturating_mul(n) <= B_COPY_MAX
}

/// The largest B (in values) that `copy_pays` copies: 2 MB of f32, so that a thread's part of
/// the copy stays in its L2 cache. Larger ones went slower copied: the wide MLP's (512, 2048,
/// 2048) product with B transposed ran at 141–172 GFLOP/s copied vs 158–196 through `gemm`'s
/// own packing (`examples/gemm_split.rs`, 2 threads, median).
const B_COPY_MAX: usize = 1 << 19;

/// `out[.., lo..hi] = a·b[.., lo..hi] + beta·out[.., lo..hi]`: one `gemm` call on up to
/// `threads` threads, B's columns first copied row-major when `copy_b`.
///
/// # Safety
/// `gemm_ptr`'s contract holds; `lo < hi <= n`; `out` points to column `lo` of row 0 of the
/// output, whose row stride is `ld`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_columns<T: Float>(
    a: &MatRef<'_, T>,
    b: &MatRef<'_, T>,
    (lo, hi): (usize, usize),
    beta: T,
    out: *mut T,
    ld: usize,
    threads: usize,
    copy_b: bool,
) {
    let (m, k, w) = (a.rows, a.cols, hi - lo);
    // A stride along an axis of length 1 is never multiplied by a non-zero index; make it 0 so
    // that the cast below cannot wrap.
    let rsa = if m > 1 { a.rs as isize } else { 0 };
    let csa = if k > 1 { a.cs as isize } else { 0 };
    // SAFETY (of each call): every element of a and of the B given lies inside its slice
    // (in_bounds; the copy holds k·w values), every stride used fits in isize because it
    // indexes into a slice, and `out` covers m rows of w columns at row stride `ld`.
    let run = |bp: *const T, rsb: isize, csb: isize| unsafe {
        T::gemm(
            m,
            k,
            w,
            a.data[a.offset..].as_ptr(),
            rsa,
            csa,
            bp,
            rsb,
            csb,
            beta,
            out,
            ld as isize,
            1,
            threads,
        )
    };
    if let (true, Some(bd)) = (copy_b, T::as_f32(b.data)) {
        // T is f32 here (`as_f32` answered), so the copy's pointer has T's type.
        with_rows_of(&b.with_data(bd), lo, w, |rows| {
            run(rows.as_ptr().cast::<T>(), w as isize, 1)
        });
        return;
    }
    let rsb = if k > 1 { b.rs as isize } else { 0 };
    let csb = if w > 1 { b.cs as isize } else { 0 };
    run(b.data[b.offset + lo * b.cs..].as_ptr(), rsb, csb);
}

/// The output pointer, handed to the threads that each write their own rows or columns of it.
struct SendPtr<T>(*mut T);
// SAFETY: the threads `gemm_into` starts write disjoint rows or columns of the output (see
// there).
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

/// Into how many parts a product is cut, each one single-threaded `gemm` call on its own
/// thread: `threads` where the product is large (≥ 2²⁰ multiply-adds) and long enough to cut;
/// otherwise 1 (the `gemm` crate then splits the work itself, over rayon's threads). The longer
/// side of the output is cut (rows where m ≥ n, else columns), so that each thread packs only
/// its share of the larger operand and all of the smaller one: the m = 128 products of the
/// fashion MLP ran 0.93–1.45× as fast cut into columns as with `gemm`'s own split; its weight
/// gradient (784, 128ᵀ, 512) 1.05–1.12× as fast cut into rows as into columns, the wide MLP's
/// (2048, 512ᵀ, 2048) 1.04–1.08× (`bench/README.md`).
///
/// Results do not depend on the cut: each output element is the same k sum, in the same
/// order, whichever call computes it — provided no part is a product whose output is 64 or
/// fewer rows *and* columns unless the whole one is: `gemm` sums such small products in blocks
/// of 512 along k, larger ones in blocks of its own choosing (gemm-common 0.19, `gemm.rs`), so
/// for k > 512 the bits would change with the thread count. Where the short side is > 64 no
/// part is that small; where it is not, each part keeps more than 64 of the long side (parts
/// start on multiples of 16, so a part is at least `long / parts − 17` long: ≥ 79 with
/// `long / 96` parts). Likewise `gemm` sums an output of ≤ 256 elements with one operand
/// contiguous along k in SIMD lanes, in blocks of 1,024: a short side of 1 or 2 is therefore
/// never cut (a part of ≥ 79 × 3 is larger). Tested on 1–4 threads (`tests/ops.rs`).
fn parts(m: usize, k: usize, n: usize, threads: usize) -> usize {
    let (long, short) = (m.max(n), m.min(n));
    if threads < 2 || short <= 2 || m.saturating_mul(k).saturating_mul(n) < 1 << 20 {
        return 1;
    }
    threads.min(if short > 64 { long / 64 } else { long / 96 })
}

/// The first row or column of part `p` of `parts` (`n` for `p == parts`), on a multiple of 16.
fn part_start(n: usize, p: usize, parts: usize) -> usize {
    if p >= parts {
        n
    } else {
        n * p / parts / 16 * 16
    }
}

#[cfg(test)]
mod tests {
    use super::super::operand::rows_of_columns;
    use super::*;

    /// A matrix at the start of `data` with the given strides.
    fn mat<T>(data: &[T], rows: usize, cols: usize, rs: usize, cs: usize) -> MatRef<'_, T> {
        MatRef {
            data,
            offset: 0,
            rows,
            cols,
            rs,
            cs,
        }
    }

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
    /// column or row parts, its row and column vector paths, k = 0 and 1, a transposed B)
    /// writes all of a `gemm_uninit` output and reads none of it: an output full of NaN
    /// beforehand gives the same bits as a zeroed one.
    fn never_reads_the_output<T: Float>() {
        for &(m, k, n, tb) in &[
            (5, 3, 7, false),
            (33, 64, 3, false),
            (64, 300, 10, true),
            (128, 784, 512, false),
            (128, 256, 512, true),
            (70, 130, 300, true),
            (300, 130, 70, false),
            (512, 200, 256, true),
            (4, 0, 5, false),
            (1, 50, 70, false),
            (60, 40, 1, false),
            (9, 1, 11, false),
            (300, 2, 200, true),
        ] {
            let (ad, bd) = (values::<T>(m * k, 1), values::<T>(k * n, 2));
            let a = mat(&ad, m, k, k, 1);
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

    #[test]
    fn columns_are_copied_into_rows_exactly() {
        for &(k, w, off, pad) in &[
            (1, 1, 0, 0),
            (7, 9, 3, 2),
            (8, 8, 0, 0),
            (16, 24, 5, 1),
            (130, 156, 1, 7),
            (13, 8, 0, 3),
        ] {
            let cs = k + pad;
            let src: Vec<f32> = values(off + w * cs, 7);
            let mut dst = vec![f32::NAN; 3];
            rows_of_columns(&src, off, cs, k, w, &mut dst);
            for p in 0..k {
                for j in 0..w {
                    assert_eq!(
                        dst[p * w + j].to_bits(),
                        src[off + j * cs + p].to_bits(),
                        "({k},{w}) at ({p},{j})"
                    );
                }
            }
        }
    }

    /// A transposed B (copied row-major first: `copy_pays`) gives the bits that the same B
    /// stored row-major gives, on 1–3 threads.
    #[test]
    fn a_transposed_b_gives_the_bits_of_a_row_major_one() {
        for &(m, k, n) in &[
            (70, 130, 300),
            (128, 256, 512),
            (40, 1030, 70),
            (300, 200, 100),
        ] {
            let (ad, wd) = (values::<f32>(m * k, 1), values::<f32>(n * k, 2));
            let rows: Vec<f32> = (0..k * n).map(|i| wd[(i % n) * k + i / n]).collect();
            let a = mat(&ad, m, k, k, 1);
            let bt = mat(&wd, k, n, 1, k);
            let b = mat(&rows, k, n, n, 1);
            assert!(copy_pays(m, k, n, &bt) && !copy_pays(m, k, n, &b));
            for threads in [1, 2, 3] {
                let (mut x, mut y) = (vec![0f32; m * n], vec![0f32; m * n]);
                super::super::with_threads(threads, || {
                    gemm_into(a, bt, 0.0, &mut x);
                    gemm_into(a, b, 0.0, &mut y);
                });
                assert!(
                    x.iter().zip(&y).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "({m},{k},{n}) on {threads} threads"
                );
            }
        }
    }
}

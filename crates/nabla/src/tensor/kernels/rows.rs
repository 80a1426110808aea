//! Kernels that work row by row over contiguous `[rows, d]` data: layer normalisation (forward
//! and its fused gradient) and the softmax of attention scores (scaled, optionally causal).
//! Each row is computed by one thread in one fixed order, and sums over rows (the layer-norm
//! weight and bias gradients) run over fixed blocks of rows, each block in row order, the
//! blocks then added in block order: the same bits on any thread count. Rows are shared among threads above [`PAR_THRESHOLD`](super::PAR_THRESHOLD) values.

use super::for_each_run_above;

/// Values from which a row kernel shares its rows among threads: their work per value (an
/// `exp`, two passes, f64 sums) pays for the hand-off sooner than an element-wise op's.
const ROWS_PARALLEL: usize = 1 << 15;

fn for_each_run<T: Send>(out: &mut [T], per: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    for_each_run_above(out, per, ROWS_PARALLEL, f)
}

/// Whether `len` values of row work are shared among threads.
fn parallel(len: usize) -> bool {
    len >= ROWS_PARALLEL && super::threads() >= 2
}

/// A fresh vector of `len` values whose runs of `per ≥ 1` values `f(r, run)` fills, the runs
/// shared among threads as [`for_each_run`] shares them. Each run is zeroed just before `f`
/// gets it, while it is in cache (instead of a zero-filled allocation: one pass over the
/// memory, on one thread, before the work starts).
fn fresh_rows<T: Float>(len: usize, per: usize, f: impl Fn(usize, &mut [T]) + Sync) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(len);
    for_each_run(&mut v.spare_capacity_mut()[..len], per.max(1), |r, out| {
        f(r, init_with(out, T::ZERO))
    });
    // SAFETY: `for_each_run` hands each run of the first `len` values to the closure exactly
    // once (the runs cover them), and `init_with` writes every value of its run.
    unsafe { v.set_len(len) };
    v
}
use crate::tensor::storage::init_with;
use crate::tensor::Float;
use rayon::prelude::*;

/// Per-row statistics a recorded layer normalisation keeps for its gradient: the mean and
/// `1/√(var + eps)` of each row, in f64.
#[derive(Debug, Clone, PartialEq)]
pub struct RowStats {
    /// Per-row mean.
    pub mean: Vec<f64>,
    /// Per-row `1/√(var + eps)`.
    pub invstd: Vec<f64>,
}

/// Rows per block of the layer-norm kernels: a block's rows run in order on one thread, in
/// one pass (statistics and output; or `dx` and the block's share of `dw`, `db`), and the
/// blocks' column sums are added in block order — the same bits on any thread count.
const BLOCK_ROWS: usize = 16;

/// Blocks of `d`-long rows per task when blocks are shared among threads: at least
/// `ROWS_PARALLEL / 16` values of work each (narrow rows make small blocks).
fn blocks_per_task(d: usize) -> usize {
    (ROWS_PARALLEL / 16 / (BLOCK_ROWS * d.max(1))).max(1)
}

/// A fresh buffer of `len` values in blocks of [`BLOCK_ROWS`] rows of `d`: `f(first_row,
/// rows)` fills each block (zeroed just before, while in cache) and returns its side result,
/// collected in block order. Blocks are shared among threads above `ROWS_PARALLEL` values.
fn fresh_blocks<T: Float, S: Send>(
    len: usize,
    d: usize,
    f: impl Fn(usize, &mut [T]) -> S + Sync,
) -> (Vec<T>, Vec<S>) {
    let per = BLOCK_ROWS * d.max(1);
    let mut v: Vec<T> = Vec::with_capacity(len);
    let side: Vec<S> = {
        let spare = &mut v.spare_capacity_mut()[..len];
        let run = |(i, out): (usize, &mut [std::mem::MaybeUninit<T>])| {
            f(i * BLOCK_ROWS, init_with(out, T::ZERO))
        };
        if parallel(len) {
            spare
                .par_chunks_mut(per)
                .enumerate()
                .with_min_len(blocks_per_task(d))
                .map(run)
                .collect()
        } else {
            spare.chunks_mut(per).enumerate().map(run).collect()
        }
    };
    // SAFETY: the chunks cover the first `len` values and `init_with` wrote each of them.
    unsafe { v.set_len(len) };
    (v, side)
}

/// Layer normalisation of each `d`-long row of `x`: `(x − mean)·invstd·w + b` (`w`, `b` of
/// length `d` when given), mean and biased variance summed by `part_sum`; each row's
/// statistics and output in one pass over it. Returns the output and the statistics.
pub fn layer_norm<T: Float>(
    x: &[T],
    d: usize,
    w: Option<&[T]>,
    b: Option<&[T]>,
    eps: f64,
) -> (Vec<T>, RowStats) {
    let d = d.max(1);
    let (y, blocks) = fresh_blocks(x.len(), d, |r0, out: &mut [T]| {
        let mut st = Vec::with_capacity(BLOCK_ROWS);
        for (i, out) in out.chunks_exact_mut(d).enumerate() {
            let row = &x[(r0 + i) * d..][..d];
            // One loop per case, compiled for the vector tier (a loop that looked at the
            // options per value ran one value at a time: 60% of the op).
            st.push(crate::isa::vectorized(
                #[inline(always)]
                || {
                    let mean = part_sum(row, |v| v) / d as f64;
                    let mt = T::from_f64(mean);
                    let var = part_sum(row, |v| (v - mt) * (v - mt)) / d as f64;
                    let invstd = 1.0 / (var + eps).sqrt();
                    let s = T::from_f64(invstd);
                    match (w, b) {
                        (Some(w), Some(b)) => {
                            for (((o, &v), &wv), &bv) in out.iter_mut().zip(row).zip(w).zip(b) {
                                *o = (v - mt) * s * wv + bv;
                            }
                        }
                        (Some(w), None) => {
                            for ((o, &v), &wv) in out.iter_mut().zip(row).zip(w) {
                                *o = (v - mt) * s * wv;
                            }
                        }
                        (None, Some(b)) => {
                            for ((o, &v), &bv) in out.iter_mut().zip(row).zip(b) {
                                *o = (v - mt) * s + bv;
                            }
                        }
                        (None, None) => {
                            for (o, &v) in out.iter_mut().zip(row) {
                                *o = (v - mt) * s;
                            }
                        }
                    }
                    (mean, invstd)
                },
            ));
        }
        st
    });
    let pairs = || blocks.iter().flatten();
    let stats = RowStats {
        mean: pairs().map(|p| p.0).collect(),
        invstd: pairs().map(|p| p.1).collect(),
    };
    (y, stats)
}

/// The gradients of [`layer_norm`] for the output gradient `g`: with `x̂ = (x − mean)·invstd`
/// and `gw = g·w`, `dx = invstd·(gw − mean(gw) − x̂·mean(gw·x̂))` (when `need_dx`), and the
/// column sums `dw = Σ g·x̂`, `db = Σ g` (in f64: each block's rows in order, then the blocks
/// in order; each row's `dx` sums by `part_sums2` and its per-element pass in `T`), in one
/// pass over each block of rows. Returns `(dx, dw, db)`.
pub fn layer_norm_grads<T: Float>(
    g: &[T],
    x: &[T],
    d: usize,
    w: Option<&[T]>,
    st: &RowStats,
    need_dx: bool,
) -> (Option<Vec<T>>, Vec<f64>, Vec<f64>) {
    let d = d.max(1);
    // Rows r0.. of the block: their `dx` into `out` (when given) and the block's column sums.
    let block = |r0: usize, out: Option<&mut [T]>| -> (Vec<f64>, Vec<f64>) {
        let (mut dw, mut db) = (vec![0.0; d], vec![0.0; d]);
        let rows = (x.len() / d - r0).min(BLOCK_ROWS);
        let mut out = out;
        for i in 0..rows {
            let r = r0 + i;
            let (gr, xr) = (&g[r * d..][..d], &x[r * d..][..d]);
            let (m, s) = (st.mean[r], st.invstd[r]);
            let out = out.as_deref_mut().map(|o| &mut o[i * d..][..d]);
            crate::isa::vectorized(
                #[inline(always)]
                || {
                    for (((dw, db), gv), xv) in dw.iter_mut().zip(db.iter_mut()).zip(gr).zip(xr) {
                        let gv = gv.to_f64();
                        *dw += gv * (xv.to_f64() - m) * s;
                        *db += gv;
                    }
                    let Some(out) = out else { return };
                    let mt = T::from_f64(m);
                    // gw = g·w, written into `out` first (every value of it is then replaced).
                    match w {
                        Some(w) => {
                            for ((o, &gv), &wv) in out.iter_mut().zip(gr).zip(w) {
                                *o = gv * wv;
                            }
                        }
                        None => out.copy_from_slice(gr),
                    }
                    let (sum_g, sum_gx) = part_sums2(out, xr, |gw, xv| (gw, gw * (xv - mt)));
                    let (mg, mgx) = (sum_g / d as f64, sum_gx * s / d as f64);
                    let (p, a, q) = (T::from_f64(s), T::from_f64(mg), T::from_f64(s * s * mgx));
                    for (o, &xv) in out.iter_mut().zip(xr) {
                        *o = p * (*o - a) - q * (xv - mt);
                    }
                },
            )
        }
        (dw, db)
    };
    let (dx, parts) = if need_dx {
        let (dx, parts) = fresh_blocks(x.len(), d, |r0, out: &mut [T]| block(r0, Some(out)));
        (Some(dx), parts)
    } else {
        let blocks = (x.len() / d).div_ceil(BLOCK_ROWS);
        let parts = if parallel(x.len()) {
            (0..blocks)
                .into_par_iter()
                .with_min_len(blocks_per_task(d))
                .map(|b| block(b * BLOCK_ROWS, None))
                .collect()
        } else {
            (0..blocks).map(|b| block(b * BLOCK_ROWS, None)).collect()
        };
        (None, parts)
    };
    let (mut dw, mut db) = (vec![0.0; d], vec![0.0; d]);
    for (pw, pb) in &parts {
        for (((dw, db), pw), pb) in dw.iter_mut().zip(db.iter_mut()).zip(pw).zip(pb) {
            *dw += pw;
            *db += pb;
        }
    }
    (dx, dw, db)
}

/// Interleaved partial sums of [`part_sum`] and [`part_sums2`]: two AVX-512 or four AVX2
/// vectors of f32, so that the additions into them are independent enough to run at the
/// load rate, and the same order on every tier.
const PARTS: usize = 32;

/// The [`PARTS`] partial sums added in f64, pairwise in a fixed order.
#[inline(always)]
fn tree<T: Float>(acc: [T; PARTS]) -> f64 {
    let mut a = acc.map(|v| v.to_f64());
    let mut w = PARTS / 2;
    while w > 0 {
        for i in 0..w {
            a[i] += a[i + w];
        }
        w /= 2;
    }
    a[0]
}

/// `Σ f(xs[i])`, each term and the [`PARTS`] interleaved partial sums in `T` (for a row of
/// up to a few thousand values the partial sums hold a few dozen terms each: f32 keeps their
/// error near 1e-6 relative, as PyTorch's f32 reductions do), the partial sums and the tail
/// added in f64. A fixed order: the same bits on any thread count and tier. For f32 it runs at
/// about 16 values per cycle where an f64 sum of converted values ran at 2.
#[inline(always)]
pub(crate) fn part_sum<T: Float>(xs: &[T], f: impl Fn(T) -> T) -> f64 {
    let mut acc = [T::ZERO; PARTS];
    let mut chunks = xs.chunks_exact(PARTS);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(0.0, |s, &v| s + f(v).to_f64());
    tree(acc) + tail
}

/// `(Σ f(a[i], b[i]).0, Σ f(a[i], b[i]).1)` over two rows of equal length, summed as
/// [`part_sum`] sums: two sums from one pass.
#[inline(always)]
pub(crate) fn part_sums2<T: Float>(a: &[T], b: &[T], f: impl Fn(T, T) -> (T, T)) -> (f64, f64) {
    let (mut p, mut q) = ([T::ZERO; PARTS], [T::ZERO; PARTS]);
    let (mut ca, mut cb) = (a.chunks_exact(PARTS), b.chunks_exact(PARTS));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..PARTS {
            let (u, v) = f(x[l], y[l]);
            p[l] += u;
            q[l] += v;
        }
    }
    let (mut tp, mut tq) = (0.0, 0.0);
    for (&x, &y) in ca.remainder().iter().zip(cb.remainder()) {
        let (u, v) = f(x, y);
        tp += u.to_f64();
        tq += v.to_f64();
    }
    (tree(p) + tp, tree(q) + tq)
}

/// Softmax of `scale·x` along the last axis of `[.., t, s]` score blocks. With `causal`, the
/// entries `j > i + (s − t)` of row `i` (keys after the query's own position, the queries being
/// the last `t` of `s` positions) are left out: their probability is exactly 0, and no mask
/// tensor is made. A row whose entries are all `−∞` gives NaN, as in PyTorch.
pub fn attention_softmax<T: Float>(x: &[T], t: usize, s: usize, scale: T, causal: bool) -> Vec<T> {
    fresh_rows(x.len(), s, |r, out| {
        let row = &x[r * s..(r + 1) * s];
        let visible = if causal {
            (r % t.max(1) + 1 + (s - t)).min(s)
        } else {
            s
        };
        crate::isa::vectorized(
            #[inline(always)]
            || softmax_row(row, out, visible, scale),
        )
    })
}

/// Lanes of [`softmax_row`]'s blocks: one AVX-512 or two AVX2 vectors of f32.
const SOFTMAX_LANES: usize = 16;

/// `out[..visible]` = softmax of `scale·row[..visible]`, `out[visible..]` = 0, in blocks of
/// [`SOFTMAX_LANES`] values whose entries at or past `visible` are masked (so that a causal row
/// of any length runs in whole vectors, where a loop over `visible` values ran its remainder
/// one value at a time); the values past the last whole block one at a time. The lanes' maxima
/// and sums are combined in a fixed order: the same bits on every tier.
#[inline(always)]
fn softmax_row<T: Float>(row: &[T], out: &mut [T], visible: usize, scale: T) {
    const L: usize = SOFTMAX_LANES;
    let blocks = visible.div_ceil(L).min(row.len() / L);
    let tail = blocks * L..visible.max(blocks * L);
    let mut acc = [T::NEG_INFINITY; L];
    for (b, c) in row.chunks_exact(L).take(blocks).enumerate() {
        for l in 0..L {
            let v = if b * L + l < visible {
                c[l] * scale
            } else {
                T::NEG_INFINITY
            };
            acc[l] = acc[l].max(v);
        }
    }
    let mut m = fold_lanes(acc, T::max);
    for &v in &row[tail.clone()] {
        m = m.max(v * scale);
    }
    let mut acc = [T::ZERO; L];
    for (b, (c, o)) in row
        .chunks_exact(L)
        .zip(out.chunks_exact_mut(L))
        .take(blocks)
        .enumerate()
    {
        for l in 0..L {
            let e = (c[l] * scale - m).exp_fast();
            o[l] = if b * L + l < visible { e } else { T::ZERO };
            acc[l] += o[l];
        }
    }
    let mut sum = fold_lanes(acc, |a, b| a + b);
    for (o, &v) in out[tail.clone()].iter_mut().zip(&row[tail.clone()]) {
        *o = (v * scale - m).exp_fast();
        sum += *o;
    }
    let inv = T::ONE / sum;
    for (j, o) in out[..tail.end].iter_mut().enumerate() {
        // A masked entry stays exactly 0 even where `inv` is NaN (a row of −∞ only).
        *o = if j < visible { *o * inv } else { T::ZERO };
    }
}

/// The lanes of a block combined pairwise in a fixed order.
#[inline(always)]
pub(super) fn fold_lanes<T: Float, const L: usize>(mut acc: [T; L], f: impl Fn(T, T) -> T) -> T {
    let mut w = L / 2;
    while w > 0 {
        for i in 0..w {
            acc[i] = f(acc[i], acc[i + w]);
        }
        w /= 2;
    }
    acc[0]
}

/// `c·y ⊙ (g − Σ g⊙y)` over each `s`-long row: a softmax's backward in one pass (the row sum
/// in one fixed order).
pub fn softmax_backward<T: Float>(g: &[T], y: &[T], s: usize, c: T) -> Vec<T> {
    fresh_rows(g.len(), s, |r, out| {
        let (gr, yr) = (&g[r * s..(r + 1) * s], &y[r * s..(r + 1) * s]);
        let mut acc = [T::ZERO; 8];
        let (mut gc, mut yc) = (gr.chunks_exact(8), yr.chunks_exact(8));
        for (a, b) in (&mut gc).zip(&mut yc) {
            for l in 0..8 {
                acc[l] += a[l] * b[l];
            }
        }
        let mut dot =
            ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
        for (a, b) in gc.remainder().iter().zip(yc.remainder()) {
            dot += *a * *b;
        }
        for ((o, &gv), &yv) in out.iter_mut().zip(gr).zip(yr) {
            *o = c * yv * (gv - dot);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_rows_see_their_past_only() {
        // t = 2 queries, the last two of s = 3 positions: row 0 sees 2 keys, row 1 all 3.
        let y = attention_softmax(&[0.0f64; 6], 2, 3, 1.0, true);
        assert_eq!(y, [0.5, 0.5, 0.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0]);
    }

    #[test]
    fn layer_norm_rows_have_zero_mean_unit_variance() {
        let (y, st) = layer_norm(&[1.0f64, 3.0, 2.0, 6.0], 2, None, None, 0.0);
        assert_eq!(y, [-1.0, 1.0, -1.0, 1.0]);
        assert_eq!(st.mean, [2.0, 4.0]);
    }
}

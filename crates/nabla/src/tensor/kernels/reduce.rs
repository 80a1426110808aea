//! Reductions along an axis (sum, max with arg-max) and the softmax family, always in a fixed
//! order so results do not depend on the thread count.

use super::split_at_axis;
use crate::tensor::Float;

/// Sum of a slice with eight independent accumulators (vectorisable, fixed order).
pub fn sum_slice<T: Float>(xs: &[T]) -> T {
    let mut acc = [T::ZERO; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for &v in rest {
        s += v;
    }
    s
}

/// Sums `x` (of `shape`) along one axis; the result has that axis removed (row-major).
pub fn sum_axis<T: Float>(x: &[T], shape: &[usize], axis: usize) -> Vec<T> {
    let (outer, dim, inner) = split_at_axis(shape, axis);
    if outer.saturating_mul(inner) == 0 {
        return Vec::new();
    }
    let mut out = vec![T::ZERO; outer * inner];
    if dim == 0 {
        return out;
    }
    if inner == 1 {
        // Each output is one row's `sum_slice`, whichever thread computes it: the rows can go
        // to different threads (a convolution's bias gradient sums 12.8 MB this way, which
        // ran on one thread while the other waited).
        let row = |(o, r): (&mut T, &[T])| *o = sum_slice(r);
        if x.len() >= super::PAR_THRESHOLD && super::threads() >= 2 {
            use rayon::prelude::*;
            let k = (super::PAR_THRESHOLD / 16 / dim).max(1);
            out.par_chunks_mut(k)
                .zip(x.par_chunks(k * dim))
                .for_each(|(os, xs)| os.iter_mut().zip(xs.chunks_exact(dim)).for_each(row));
        } else {
            out.iter_mut().zip(x.chunks_exact(dim)).for_each(row);
        }
        return out;
    }
    for (o_block, x_block) in out.chunks_exact_mut(inner).zip(x.chunks_exact(dim * inner)) {
        for row in x_block.chunks_exact(inner) {
            for (o, &v) in o_block.iter_mut().zip(row) {
                *o += v;
            }
        }
    }
    out
}

/// Sums over several axes (sorted, distinct); the result keeps them as size 1.
pub fn sum_axes<T: Float>(x: &[T], shape: &[usize], axes: &[usize]) -> Vec<T> {
    let Some((&last, rest)) = axes.split_last() else {
        return x.to_vec();
    };
    // The first reduction reads `x` in place (no copy of the input).
    let mut cur = shape.to_vec();
    let mut data = sum_axis(x, &cur, last);
    cur[last] = 1;
    for &a in rest.iter().rev() {
        data = sum_axis(&data, &cur, a);
        cur[a] = 1;
    }
    data
}

/// Maximum along one axis: values and the index (along the axis) of the first maximum.
/// NaN compares as larger than everything, so a NaN is reported rather than hidden.
pub fn max_axis<T: Float>(x: &[T], shape: &[usize], axis: usize) -> (Vec<T>, Vec<usize>) {
    let (outer, dim, inner) = split_at_axis(shape, axis);
    if outer.saturating_mul(inner) == 0 {
        return (Vec::new(), Vec::new());
    }
    let mut vals = vec![T::NEG_INFINITY; outer * inner];
    let mut idx = vec![0usize; outer * inner];
    for o in 0..outer {
        for j in 0..dim {
            let row = &x[(o * dim + j) * inner..(o * dim + j + 1) * inner];
            let vs = &mut vals[o * inner..(o + 1) * inner];
            let is = &mut idx[o * inner..(o + 1) * inner];
            for ((v, i), &x) in vs.iter_mut().zip(is.iter_mut()).zip(row) {
                let bigger = x > *v || (x.is_nan() && !v.is_nan());
                if bigger || j == 0 {
                    *v = x;
                    *i = j;
                }
            }
        }
    }
    (vals, idx)
}

/// Softmax (`log == false`) or log-softmax along `axis`, with the maximum subtracted so that
/// no `exp` overflows. A slice that is entirely `-∞` gives NaN (0/0), as in PyTorch.
pub fn softmax_axis<T: Float>(x: &[T], shape: &[usize], axis: usize, log: bool) -> Vec<T> {
    if x.is_empty() {
        return Vec::new();
    }
    let (outer, dim, inner) = split_at_axis(shape, axis);
    let mut out = vec![T::ZERO; x.len()];
    if inner == 1 && dim > 0 {
        // Contiguous rows: shared among threads above ROWS_PARALLEL values (each row in one
        // fixed order: the same bits on any thread count).
        let row = |(xr, or): (&[T], &mut [T])| {
            crate::isa::vectorized(
                #[inline(always)]
                || softmax_row(xr, or, log),
            )
        };
        if x.len() >= ROWS_PARALLEL && super::threads() >= 2 {
            use rayon::prelude::*;
            let per = (ROWS_PARALLEL / 16 / dim).max(1);
            x.par_chunks_exact(dim)
                .zip(out.par_chunks_exact_mut(dim))
                .with_min_len(per)
                .for_each(row);
        } else {
            x.chunks_exact(dim)
                .zip(out.chunks_exact_mut(dim))
                .for_each(row);
        }
        return out;
    }
    let (mut buf, mut res) = (vec![T::ZERO; dim], vec![T::ZERO; dim]);
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * dim + j) * inner + i;
            for (j, b) in buf.iter_mut().enumerate() {
                *b = x[at(j)];
            }
            crate::isa::vectorized(
                #[inline(always)]
                || softmax_row(&buf, &mut res, log),
            );
            for (j, &r) in res.iter().enumerate() {
                out[at(j)] = r;
            }
        }
    }
    out
}

/// The (log-)softmax of the row `x` into `out` (as long): the maximum subtracted, the
/// exponentials ([`Float::exp_fast`]) summed by [`max_sum_exp`]; each `exp` computed once (the
/// softmax keeps them in `out` and scales them by `1/Σ`).
#[inline(always)]
fn softmax_row<T: Float>(x: &[T], out: &mut [T], log: bool) {
    if log {
        let (m, s) = max_sum_exp(x, None);
        // With m = +inf every shifted entry is NaN or -inf; keep PyTorch's NaN.
        let ls = s.ln();
        for (o, &v) in out.iter_mut().zip(x) {
            *o = (v - m) - ls;
        }
    } else {
        let (_, s) = max_sum_exp(x, Some(&mut *out));
        let inv = T::ONE / s;
        for o in out.iter_mut() {
            *o *= inv;
        }
    }
}

/// Lanes of [`max_sum_exp`]'s partial maxima and sums: one AVX-512 or two AVX2 vectors of f32.
const LANES: usize = 16;

/// The row's maximum `m` and `Σ e^(x − m)` (the exponentials also written to `exps` when
/// given): [`LANES`] interleaved partial maxima and sums combined pairwise in a fixed order,
/// then the values past the last whole block in order — the same bits on every tier and
/// thread count, in whole vectors (one running sum was a chain of dependent additions, and
/// `exp` one value at a time). Tried and slower: the rest as one more block, padded or
/// overlapping the last one (store-forwarding stalls, 1.3–2× the time on 84-wide rows).
#[inline(always)]
fn max_sum_exp<T: Float>(x: &[T], mut exps: Option<&mut [T]>) -> (T, T) {
    const L: usize = LANES;
    let whole = x.len() / L * L;
    let mut acc = [T::NEG_INFINITY; L];
    for c in x[..whole].chunks_exact(L) {
        for l in 0..L {
            acc[l] = acc[l].max(c[l]);
        }
    }
    let mut m = super::rows::fold_lanes(acc, T::max);
    for &v in &x[whole..] {
        m = m.max(v);
    }
    let mut acc = [T::ZERO; L];
    match exps.as_deref_mut() {
        Some(out) => {
            for (c, o) in x[..whole].chunks_exact(L).zip(out.chunks_exact_mut(L)) {
                for l in 0..L {
                    o[l] = (c[l] - m).exp_fast();
                    acc[l] += o[l];
                }
            }
        }
        None => {
            for c in x[..whole].chunks_exact(L) {
                for l in 0..L {
                    acc[l] += (c[l] - m).exp_fast();
                }
            }
        }
    }
    let mut s = super::rows::fold_lanes(acc, |a, b| a + b);
    for (j, &v) in x.iter().enumerate().skip(whole) {
        let e = (v - m).exp_fast();
        if let Some(out) = exps.as_deref_mut() {
            out[j] = e;
        }
        s += e;
    }
    (m, s)
}

/// Values from which a row-wise softmax or cross-entropy shares its rows among threads (an
/// `exp` per value pays for the hand-off sooner than an element-wise op's work).
const ROWS_PARALLEL: usize = 1 << 15;

/// Per-row cross-entropy of `[n, k]` logits `z` against target rows `t`:
/// `lseᵢ − Σⱼ tᵢⱼ zᵢⱼ` scaled by `Σⱼ tᵢⱼ`, written as `Σⱼ tᵢⱼ (lseᵢ − zᵢⱼ)` with zero targets
/// skipped, so a `−∞` logit with target 0 contributes 0, not NaN.
pub fn softmax_cross_entropy<T: Float>(z: &[T], t: &[T], k: usize) -> Vec<T> {
    let row = |(zr, tr): (&[T], &[T])| {
        crate::isa::vectorized(
            #[inline(always)]
            || {
                let lse = log_sum_exp(zr);
                // Zero targets skipped (a select, so the loop runs in whole vectors).
                let term = |z: T, t: T| if t != T::ZERO { t * (lse - z) } else { T::ZERO };
                let whole = zr.len() / LANES * LANES;
                let mut acc = [T::ZERO; LANES];
                for (zc, tc) in zr[..whole].chunks_exact(LANES).zip(tr.chunks_exact(LANES)) {
                    for l in 0..LANES {
                        acc[l] += term(zc[l], tc[l]);
                    }
                }
                let mut loss = super::rows::fold_lanes(acc, |a, b| a + b);
                for (&zj, &tj) in zr[whole..].iter().zip(&tr[whole..]) {
                    loss += term(zj, tj);
                }
                loss
            },
        )
    };
    let k = k.max(1);
    if z.len() >= ROWS_PARALLEL && super::threads() >= 2 {
        use rayon::prelude::*;
        let per = (ROWS_PARALLEL / 16 / k).max(1);
        return z
            .par_chunks_exact(k)
            .zip(t.par_chunks_exact(k))
            .with_min_len(per)
            .map(row)
            .collect();
    }
    z.chunks_exact(k).zip(t.chunks_exact(k)).map(row).collect()
}

/// The gradient of [`softmax_cross_entropy`] for the per-row output gradients `g`:
/// `(softmax(zᵢ)·massᵢ − tᵢ)·gᵢ` (no mass factor where `mass` is `None`), in one pass per row —
/// each row's softmax as [`softmax_axis`] computes it and then the product, difference and
/// product in that order: the bits of those ops run one after the other.
pub fn softmax_cross_entropy_grad<T: Float>(
    z: &[T],
    t: &[T],
    mass: Option<&[T]>,
    g: &[T],
    k: usize,
) -> Vec<T> {
    let k = k.max(1);
    let mut out = vec![T::ZERO; z.len()];
    let row = |(i, o): (usize, &mut [T])| {
        let (zr, tr) = (&z[i * k..][..k], &t[i * k..][..k]);
        let (m, gi) = (mass.map(|m| m[i]), g[i]);
        crate::isa::vectorized(
            #[inline(always)]
            || {
                softmax_row(zr, o, false);
                for (o, &tj) in o.iter_mut().zip(tr) {
                    let p = match m {
                        Some(m) => *o * m,
                        None => *o,
                    };
                    *o = (p - tj) * gi;
                }
            },
        )
    };
    if z.len() >= ROWS_PARALLEL && super::threads() >= 2 {
        use rayon::prelude::*;
        let per = (ROWS_PARALLEL / 16 / k).max(1);
        out.par_chunks_exact_mut(k)
            .enumerate()
            .with_min_len(per)
            .for_each(row);
    } else {
        out.chunks_exact_mut(k).enumerate().for_each(row);
    }
    out
}

/// `ln Σ e^x` with the maximum subtracted ([`max_sum_exp`]); a non-finite maximum is
/// returned as it is.
#[inline(always)]
fn log_sum_exp<T: Float>(xs: &[T]) -> T {
    let (m, s) = max_sum_exp(xs, None);
    if !m.is_finite() {
        return m;
    }
    m + s.ln()
}

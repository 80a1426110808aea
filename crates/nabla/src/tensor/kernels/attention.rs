//! Scaled dot-product attention, `softmax(c·q·kᵀ)·v` per head, and its three gradients, each
//! head in one pass on one thread, sixteen queries at a time: a tile's scores are computed
//! transposed (`k·qᵀ`, one row per key, one lane per query) into a few kilobytes of scratch,
//! so that the softmax runs down the columns in whole vectors — each query's maximum and sum
//! in its own lane, no horizontal reduction, whatever the number of keys (rows of 64 keys made
//! a row-wise softmax cost more than the products). No `[.., t, s]` score tensor is written
//! or read back. The products run on `sgemm`'s register tiles (f32 on the AVX-512 and AVX2
//! tiers; the `gemm` crate otherwise). With `causal`, the keys after a tile's last query are
//! neither multiplied nor exponentiated: about half the work of the full square at `t = s`.
//!
//! The backward recomputes each tile's probabilities exactly as the forward did — nothing is
//! saved between the passes but the inputs — and adds each tile's share of the key and value
//! gradients in tile order. Every head is computed the same way whichever thread runs it, and
//! every query's values the same way whatever tile holds it (its lane's sums run over the keys
//! in order; keys it does not see enter the products with probability exactly 0, adding
//! nothing for finite values): results do not depend on the thread count, and a query alone
//! (a key/value-cached step) gets the bits it gets among all the queries of its window. Heads
//! are the unit of parallelism: a single head runs on one thread.

#[cfg(target_arch = "x86_64")]
use super::attention_x86 as x86;
use super::counter::Keep;
use super::operand::{rows_of_columns_into, MatRef};
use super::sgemm::{self, Kernel};
use crate::tensor::storage::init_with;
use crate::tensor::Float;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Queries per tile: the lanes of the column-wise softmax.
const LANES: usize = 16;

/// Multiply-adds from which the heads are shared among threads.
const PARALLEL_WORK: usize = 1 << 16;

/// The sizes of one attention: `t` queries, `s` keys, `d` query/key width, `dv` value width.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    /// Queries per head.
    pub t: usize,
    /// Keys (and values) per head.
    pub s: usize,
    /// Width of a query and a key.
    pub d: usize,
    /// Width of a value.
    pub dv: usize,
}

impl Dims {
    /// Keys query `i` sees: with `causal` (the queries being the last `t` of the `s`
    /// positions) those up to its own position.
    fn visible(&self, i: usize, causal: bool) -> usize {
        if causal {
            (i + 1 + self.s - self.t).min(self.s)
        } else {
            self.s
        }
    }

    /// Each lane's visible keys for the tile of `n` queries from `i0` (0 for lanes past `n`).
    /// As 32-bit lanes (one vector); `forward` refuses more than `u32::MAX` keys.
    fn lanes(&self, i0: usize, n: usize, causal: bool) -> [u32; LANES] {
        std::array::from_fn(|l| {
            if l < n {
                self.visible(i0 + l, causal) as u32
            } else {
                0
            }
        })
    }

    fn work(&self, heads: usize) -> usize {
        heads
            .saturating_mul(self.t)
            .saturating_mul(self.s)
            .saturating_mul(self.d + self.dv)
    }
}

/// Whether the fused kernel runs attention of `s` keys in `T`: f32 where the tier has
/// `sgemm`'s tiles (AVX-512 or AVX2; elsewhere the composed ops run on the `gemm` crate's
/// kernels, faster than this file's generic loops), and f64 (the exact path: gradient checks
/// go through it). At most 2³¹ − 1 keys (32-bit lanes).
pub fn fuses<T: Float>(s: usize) -> bool {
    s < 1 << 31 && (T::DTYPE == "f64" || (T::DTYPE == "f32" && sgemm::active_kernel().is_some()))
}

/// `out = a·b + beta·out` (beta 0 or 1) into rows `ld` apart, on this thread: `sgemm`'s tiles
/// where `kernel` is given, the operands are f32 and B's rows are contiguous; the `gemm` crate
/// otherwise.
fn product<T: Float>(
    kernel: Option<Kernel>,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    beta: T,
    out: &mut [T],
    ld: usize,
) {
    if let (Some(kn), Some(ad), Some(bd), true) = (
        kernel,
        T::as_f32(a.data),
        T::as_f32(b.data),
        b.cs == 1 || b.cols == 1,
    ) {
        let out = T::as_f32_mut(out).expect("internal: f32 operands, f32 output");
        sgemm::block(
            kn,
            a.with_data(ad),
            b.with_data(bd),
            beta.to_f64() as f32,
            out,
            ld,
        );
        return;
    }
    super::matmul::gemm_block(a, b, beta, out, ld);
}

/// `dst[c·n + j] = m[j][c]`: the transpose of the `n × w` matrix `m`, row-major (f32 rows in
/// 8 × 8 register blocks).
fn transpose_into<T: Float>(m: &MatRef<'_, T>, dst: &mut Vec<T>) {
    let (n, w) = (m.rows, m.cols);
    dst.clear();
    dst.resize(n * w, T::ZERO);
    if let (Some(src), Some(out), true) = (T::as_f32(m.data), T::as_f32_mut(dst), m.cs == 1) {
        // Column j of the transpose is row j of m, contiguous.
        rows_of_columns_into(src, m.offset, m.rs, w, n, out);
        return;
    }
    for (c, row) in dst.chunks_mut(n.max(1)).enumerate().take(w) {
        for (j, o) in row.iter_mut().enumerate() {
            *o = m.data[m.offset + j * m.rs + c * m.cs];
        }
    }
}

/// `m` itself where its rows are contiguous (what `sgemm` reads B as), else a row-major copy
/// in `buf`.
fn rows_of<'a, T: Float>(m: MatRef<'a, T>, buf: &'a mut Vec<T>) -> MatRef<'a, T> {
    if m.cs == 1 || m.cols <= 1 {
        return m;
    }
    buf.clear();
    for i in 0..m.rows {
        buf.extend((0..m.cols).map(|j| m.data[m.offset + i * m.rs + j * m.cs]));
    }
    MatRef::row_major(buf, 0, m.rows, m.cols, m.cols)
}

/// One thread's scratch, reused from head to head: transposed queries and output gradients,
/// a tile's transposed scores, probabilities and their gradients, row-major copies.
#[derive(Default)]
struct Scratch<T> {
    qt: Vec<T>,
    gt: Vec<T>,
    pt: Vec<T>,
    dpt: Vec<T>,
    mt: Vec<T>,
    rows: [Vec<T>; 3],
}

/// Runs `f(task, outputs)` for every task (a group of heads), each task's runs of `per[i]`
/// values of every output `i` together, shared among threads when the work is large, and
/// returns the outputs: `outs`, whose room (reserved by the caller, fallibly; asserted here)
/// is filled, each run zeroed just before `f` gets it.
fn for_each_task<T: Float, const N: usize>(
    count: usize,
    work: usize,
    (per, mut outs): ([usize; N], [Vec<T>; N]),
    f: impl Fn(usize, &mut Scratch<T>, [&mut [T]; N]) + Sync,
) -> [Vec<T>; N] {
    for (o, p) in outs.iter_mut().zip(per) {
        o.clear();
        let fits = count.checked_mul(p).is_some_and(|n| n <= o.capacity());
        assert!(fits, "internal: attention output without its room");
    }
    {
        let spares: Vec<&mut [MaybeUninit<T>]> = outs
            .iter_mut()
            .zip(per)
            .map(|(o, p)| &mut o.spare_capacity_mut()[..count * p])
            .collect();
        let mut tasks: Vec<Vec<&mut [MaybeUninit<T>]>> = (0..count).map(|_| Vec::new()).collect();
        for (spare, p) in spares.into_iter().zip(per) {
            if p == 0 {
                tasks.iter_mut().for_each(|t| t.push(&mut []));
                continue;
            }
            for (task, run) in tasks.iter_mut().zip(spare.chunks_mut(p)) {
                task.push(run);
            }
        }
        let run = |scratch: &mut Scratch<T>, (i, task): (usize, Vec<&mut [MaybeUninit<T>]>)| {
            let mut it = task.into_iter().map(|o| init_with(o, T::ZERO));
            let outs: [&mut [T]; N] =
                std::array::from_fn(|_| it.next().expect("internal: one run per output"));
            crate::isa::vectorized(
                #[inline(always)]
                || f(i, scratch, outs),
            )
        };
        if count >= 2 && work >= PARALLEL_WORK && super::threads() >= 2 {
            tasks
                .into_par_iter()
                .enumerate()
                .for_each_init(Scratch::default, run);
        } else {
            let mut scratch = Scratch::default();
            tasks
                .into_iter()
                .enumerate()
                .for_each(|task| run(&mut scratch, task));
        }
    }
    for (o, p) in outs.iter_mut().zip(per) {
        // SAFETY: every task's run of every output was handed to `init_with`, which wrote it;
        // the runs cover the first count·p values (within the capacity, asserted above).
        unsafe { o.set_len(count * p) };
    }
    outs
}

/// The [`LANES`] values at `at`.
#[inline(always)]
fn lanes_at<T>(b: &[T], at: usize) -> &[T; LANES] {
    b[at..at + LANES]
        .try_into()
        .expect("internal: a whole vector")
}

/// The [`LANES`] values at `at`, writable.
#[inline(always)]
fn lanes_at_mut<T>(b: &mut [T], at: usize) -> &mut [T; LANES] {
    (&mut b[at..at + LANES])
        .try_into()
        .expect("internal: a whole vector")
}

/// A tile's probabilities, in place, from its transposed scores: key `j`'s [`LANES`] queries
/// at `buf[j·ld + off..]`, `cols` keys. For each lane, the softmax of `scale·scores` over its
/// `vis[l]` visible keys (0 after them), the maximum and the sum running down the keys in
/// order.
#[inline(always)]
fn softmax_columns<T: Float>(
    buf: &mut [T],
    (ld, off, cols): (usize, usize, usize),
    vis: &[u32; LANES],
    scale: T,
) {
    let mut m = [T::NEG_INFINITY; LANES];
    for j in 0..cols {
        let (c, jj) = (lanes_at(buf, j * ld + off), j as u32);
        for l in 0..LANES {
            let v = if jj < vis[l] {
                c[l] * scale
            } else {
                T::NEG_INFINITY
            };
            m[l] = m[l].max(v);
        }
    }
    let mut sum = [T::ZERO; LANES];
    for j in 0..cols {
        let (c, jj) = (lanes_at_mut(buf, j * ld + off), j as u32);
        for l in 0..LANES {
            let e = (c[l] * scale - m[l]).exp_fast();
            let e = if jj < vis[l] { e } else { T::ZERO };
            c[l] = e;
            sum[l] += e;
        }
    }
    let inv: [T; LANES] = std::array::from_fn(|l| T::ONE / sum[l]);
    for j in 0..cols {
        let (c, jj) = (lanes_at_mut(buf, j * ld + off), j as u32);
        for l in 0..LANES {
            // A hidden key stays exactly 0 even where `inv` is NaN (a row of −∞ only).
            c[l] = if jj < vis[l] { c[l] * inv[l] } else { T::ZERO };
        }
    }
}

/// A tile's score gradients, in place over the probabilities' gradients `dp` (laid out as
/// [`softmax_columns`]'s buffer, as are the probabilities `p`): `scale·p·(dp − Σ p·dp)` over
/// each lane's visible keys (the sum down the keys in order), 0 after them.
#[inline(always)]
fn score_gradients<T: Float>(
    p: &[T],
    dp: &mut [T],
    (ld, off, cols): (usize, usize, usize),
    vis: &[u32; LANES],
    scale: T,
) {
    let mut dot = [T::ZERO; LANES];
    for j in 0..cols {
        let (pj, dj, jj) = (
            lanes_at(p, j * ld + off),
            lanes_at(dp, j * ld + off),
            j as u32,
        );
        for l in 0..LANES {
            dot[l] += if jj < vis[l] { pj[l] * dj[l] } else { T::ZERO };
        }
    }
    for j in 0..cols {
        let (pj, dj, jj) = (
            lanes_at(p, j * ld + off),
            lanes_at_mut(dp, j * ld + off),
            j as u32,
        );
        for l in 0..LANES {
            let v = scale * pj[l] * (dj[l] - dot[l]);
            dj[l] = if jj < vis[l] { v } else { T::ZERO };
        }
    }
}

/// [`softmax_columns`] on the tier's vectors: f32 with `kernel`'s instructions, else the
/// generic loops compiled for the tier.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn softmax_tile<T: Float>(
    kernel: Option<Kernel>,
    buf: &mut [T],
    at: (usize, usize, usize),
    vis: &[u32; LANES],
    scale: T,
) {
    #[cfg(target_arch = "x86_64")]
    if let (Some(kn), Some(b)) = (kernel, T::as_f32_mut(buf)) {
        let c = scale.to_f64() as f32;
        // SAFETY: a `Kernel` exists only where the CPU runs its instructions.
        unsafe {
            match kn {
                Kernel::Avx512 => x86::softmax_avx512(b, at, vis, c),
                Kernel::Avx2 => x86::softmax_avx2(b, at, vis, c),
            }
        }
        return;
    }
    crate::isa::vectorized(
        #[inline(always)]
        || softmax_columns(buf, at, vis, scale),
    )
}

/// [`score_gradients`] on the tier's vectors, as [`softmax_tile`].
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn score_gradients_tile<T: Float>(
    kernel: Option<Kernel>,
    p: &[T],
    dp: &mut [T],
    at: (usize, usize, usize),
    vis: &[u32; LANES],
    scale: T,
) {
    #[cfg(target_arch = "x86_64")]
    if let (Some(kn), Some(p), Some(dp)) = (kernel, T::as_f32(p), T::as_f32_mut(dp)) {
        let c = scale.to_f64() as f32;
        // SAFETY: a `Kernel` exists only where the CPU runs its instructions.
        unsafe {
            match kn {
                Kernel::Avx512 => x86::score_gradients_avx512(p, dp, at, vis, c),
                Kernel::Avx2 => x86::score_gradients_avx2(p, dp, at, vis, c),
            }
        }
        return;
    }
    crate::isa::vectorized(
        #[inline(always)]
        || score_gradients(p, dp, at, vis, scale),
    )
}

/// The dropout mask's tile for head `h`'s `n` queries from `i0` and the first `cols` keys,
/// laid out as a transposed score tile ([`LANES`] lanes per key) in `m`: the values at those
/// positions of a `[heads, t, s]` probability tensor's mask, so the composed attention with
/// the same mask drops the same probabilities. (Lanes past `n`, whose probabilities are 0,
/// repeat the first query's row: no index past the tensor's.)
fn mask_tile<T: Float>(
    keep: &Keep,
    (h, i0, n, cols): (usize, usize, usize, usize),
    dims: Dims,
    m: &mut Vec<T>,
) {
    if m.len() < cols * LANES {
        m.resize(cols * LANES, T::ZERO);
    }
    let first = (h as u64).wrapping_mul(dims.t as u64);
    let rows: [u64; LANES] = std::array::from_fn(|l| {
        let i = if l < n { i0 + l } else { i0 };
        first.wrapping_add(i as u64).wrapping_mul(dims.s as u64)
    });
    crate::isa::vectorized(
        #[inline(always)]
        || keep.tile(&rows, cols, m),
    )
}

/// `buf ⊙= m` over a transposed tile (`cols` keys of [`LANES`] lanes at `buf[j·ld + off..]`;
/// `m` as [`mask_tile`] lays it out).
fn mul_tile<T: Float>(buf: &mut [T], (ld, off, cols): (usize, usize, usize), m: &[T]) {
    crate::isa::vectorized(
        #[inline(always)]
        || {
            for j in 0..cols {
                let (b, mj) = (lanes_at_mut(buf, j * ld + off), lanes_at(m, j * LANES));
                for l in 0..LANES {
                    b[l] *= mj[l];
                }
            }
        },
    )
}

/// The transposed scores of the tile of `n` queries from `i0` against the first `cols` keys
/// (`k·qᵀ`) into `buf` at `off` (rows `ld` apart), then their softmax in place.
#[allow(clippy::too_many_arguments)]
fn tile_probs<T: Float>(
    kernel: Option<Kernel>,
    k: &MatRef<'_, T>,
    qt: &[T],
    dims: Dims,
    (i0, n, cols): (usize, usize, usize),
    vis: &[u32; LANES],
    scale: T,
    (buf, ld, off): (&mut [T], usize, usize),
) {
    let ka = MatRef { rows: cols, ..*k };
    let qb = MatRef::row_major(qt, i0, dims.d, n, dims.t);
    product(kernel, ka, qb, T::ZERO, &mut buf[off..], ld);
    softmax_tile(kernel, buf, (ld, off, cols), vis, scale)
}

/// Where the outputs of attention go, as `[.., rows, width]` per head: heads one after the
/// other (`[b, h, rows, width]`), or interleaved by row (`[b, rows, h, width]`, as the
/// `[b, h, rows, width]` view of `[b, rows, h·width]` data that a multi-head layer reads its
/// heads through: the layer's permute and reshape then copy nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// Each head's rows together.
    Heads,
    /// Each row's heads together: the heads of one batch element share a task.
    Interleaved,
}

impl Place {
    /// Offset and row stride of head `hh` of a task's `group` heads of `rows × width`.
    fn at(self, hh: usize, group: usize, rows: usize, width: usize) -> (usize, usize) {
        match self {
            Place::Heads => (hh * rows * width, width),
            Place::Interleaved => (hh * width, group * width),
        }
    }
}

/// Attention's forward pass: for each head `h`, `softmax(scale·q[h]·k[h]ᵀ)·v[h]` (causal: each
/// query sees the keys up to its own position), written as `[heads, t, dv]` placed by
/// `place`; heads are shared among threads in tasks of `group` (which divides their count;
/// `h` heads per batch element when `place` interleaves them). With `keep`, the probabilities
/// are dropped by its mask (over `[heads, t, s]`) before they weigh the values.
#[allow(clippy::too_many_arguments)]
pub fn forward<T: Float>(
    q: &[MatRef<'_, T>],
    k: &[MatRef<'_, T>],
    v: &[MatRef<'_, T>],
    dims: Dims,
    (scale, causal, keep): (T, bool, Option<Keep>),
    (group, place): (usize, Place),
    out: Vec<T>,
) -> Vec<T> {
    let Dims { t, s, dv, .. } = dims;
    let kernel = sgemm::active_kernel();
    let tasks = q.len().checked_div(group).unwrap_or(0);
    let work = dims.work(q.len());
    let [out] = for_each_task(tasks, work, ([group * t * dv], [out]), |task, sc, [out]| {
        if s == 0 {
            return; // no keys: a sum of nothing (the zeros handed over)
        }
        for hh in 0..group {
            let h = task * group + hh;
            let (off, ld) = place.at(hh, group, t, dv);
            let Scratch {
                qt, pt, mt, rows, ..
            } = &mut *sc;
            transpose_into(&q[h], qt);
            if pt.len() < s * LANES {
                pt.resize(s * LANES, T::ZERO);
            }
            let [vbuf, ..] = rows;
            let vh = rows_of(v[h], vbuf);
            for i0 in (0..t).step_by(LANES) {
                let n = LANES.min(t - i0);
                let (vis, cols) = (dims.lanes(i0, n, causal), dims.visible(i0 + n - 1, causal));
                let tile = (i0, n, cols);
                tile_probs(kernel, &k[h], qt, dims, tile, &vis, scale, (pt, LANES, 0));
                if let Some(keep) = &keep {
                    mask_tile(keep, (h, i0, n, cols), dims, mt);
                    mul_tile(pt, (LANES, 0, cols), mt);
                }
                // The tile's outputs P·v, P read through the transpose's strides.
                let pa = MatRef {
                    data: &pt[..],
                    offset: 0,
                    rows: n,
                    cols,
                    rs: 1,
                    cs: LANES,
                };
                let vb = MatRef { rows: cols, ..vh };
                product(kernel, pa, vb, T::ZERO, &mut out[off + i0 * ld..], ld);
            }
        }
    });
    out
}

/// Key rows per block of the key and value gradients: the AVX-512 register tile's rows.
const KEY_ROWS: usize = 12;

/// Attention's gradients for the output gradient `g` (`[heads, t, dv]` as matrices, any
/// strides): `[dq, dk, dv]`, each in its operand's shape placed by `places` (tasks of
/// `group` heads, as in [`forward`]), written into `outs` (room reserved by the caller). `want`
/// says which are computed (the others are returned empty).
#[allow(clippy::too_many_arguments)]
pub fn backward<T: Float>(
    q: &[MatRef<'_, T>],
    k: &[MatRef<'_, T>],
    v: &[MatRef<'_, T>],
    g: &[MatRef<'_, T>],
    dims: Dims,
    (scale, causal): (T, bool),
    want: [bool; 3],
    (group, places): (usize, [Place; 3]),
    outs: [Vec<T>; 3],
) -> [Vec<T>; 3] {
    let Dims { t, s, d, dv } = dims;
    let kernel = sgemm::active_kernel();
    let per = [
        if want[0] { group * t * d } else { 0 },
        if want[1] { group * s * d } else { 0 },
        if want[2] { group * s * dv } else { 0 },
    ];
    let tasks = q.len().checked_div(group).unwrap_or(0);
    let work = dims.work(q.len()).saturating_mul(2);
    for_each_task(tasks, work, (per, outs), |task, sc, [dq, dk, dvo]| {
        for hh in 0..group {
            let h = task * group + hh;
            let at = [
                places[0].at(hh, group, t, d),
                places[1].at(hh, group, s, d),
                places[2].at(hh, group, s, dv),
            ];
            let mut write = |which: usize, row: usize, a: MatRef<'_, T>, b: MatRef<'_, T>| {
                let out = match which {
                    0 => &mut *dq,
                    1 => &mut *dk,
                    _ => &mut *dvo,
                };
                let (off, ld) = at[which];
                product(kernel, a, b, T::ZERO, &mut out[off + row * ld..], ld);
            };
            let head = [&q[h], &k[h], &v[h], &g[h]];
            let how = (scale, causal, None);
            head_backward(kernel, head, dims, how, want, sc, &mut write);
        }
    })
}

/// Attention's gradient for packed projections ([`forward`] run on the query, key and value
/// columns of `[b, t, 3c]` data, `heads` heads per batch element): `d(qkv)` as `[b, t, 3c]`,
/// each head's three gradients written into its columns (no scatter into zeros, no sums).
/// With `keep`, of the forward that dropped the probabilities by its mask.
pub fn backward_packed<T: Float>(
    qkv: [&[MatRef<'_, T>]; 3],
    g: &[MatRef<'_, T>],
    dims: Dims,
    (scale, causal, keep): (T, bool, Option<Keep>),
    heads: usize,
    out: Vec<T>,
) -> Vec<T> {
    let Dims { t, d, .. } = dims;
    let kernel = sgemm::active_kernel();
    let c = heads * d;
    let tasks = g.len().checked_div(heads).unwrap_or(0);
    let work = dims.work(g.len()).saturating_mul(2);
    let [out] = for_each_task(tasks, work, ([t * 3 * c], [out]), |task, sc, [out]| {
        for hh in 0..heads {
            let h = task * heads + hh;
            let mut write = |which: usize, row: usize, a: MatRef<'_, T>, b: MatRef<'_, T>| {
                let off = which * c + hh * d + row * 3 * c;
                product(kernel, a, b, T::ZERO, &mut out[off..], 3 * c);
            };
            let head = [&qkv[0][h], &qkv[1][h], &qkv[2][h], &g[h]];
            let how = (scale, causal, keep.map(|kp| (kp, h)));
            head_backward(kernel, head, dims, how, [true; 3], sc, &mut write);
        }
    });
    out
}

/// Where [`head_backward`] writes a product: `(output, first_row, a, b)`.
type Write<'w, T> = dyn FnMut(usize, usize, MatRef<'_, T>, MatRef<'_, T>) + 'w;

/// One head's gradients (`[q, k, v, g]`): each product of `dq` (0), `dk` (1) and `dv` (2)
/// handed to `write(which, first_row, a, b)`, which writes `a·b` at that output's rows. With a
/// mask and the head's index, of the forward that dropped the probabilities: `dv = (P⊙M)ᵀ·g`,
/// and the score gradients from `P` and `dP = (g·vᵀ)⊙M`.
#[allow(clippy::too_many_arguments)]
fn head_backward<T: Float>(
    kernel: Option<Kernel>,
    [q, k, v, g]: [&MatRef<'_, T>; 4],
    dims: Dims,
    (scale, causal, drop): (T, bool, Option<(Keep, usize)>),
    want: [bool; 3],
    sc: &mut Scratch<T>,
    write: &mut Write<'_, T>,
) {
    let Dims { t, s, dv, .. } = dims;
    if s == 0 || t == 0 {
        return; // nothing flows: the zeros handed over
    }
    // The probabilities and score gradients of every query, key-major (`[s, ld]`, each query
    // tile's lanes at its columns), so that dk and dv are one product each over all queries.
    let ld = t.div_ceil(LANES) * LANES;
    let Scratch {
        qt,
        gt,
        pt,
        dpt,
        mt,
        rows,
    } = sc;
    transpose_into(q, qt);
    transpose_into(g, gt);
    // Zeroed: a key after a tile's last query is never written for that tile.
    for b in [&mut *pt, &mut *dpt] {
        b.clear();
        b.resize(s * ld, T::ZERO);
    }
    let [kbuf, qbuf, gbuf] = rows;
    let (kh, qh, gh) = (rows_of(*k, kbuf), rows_of(*q, qbuf), rows_of(*g, gbuf));
    for i0 in (0..t).step_by(LANES) {
        let n = LANES.min(t - i0);
        let (vis, cols) = (dims.lanes(i0, n, causal), dims.visible(i0 + n - 1, causal));
        let tile = (i0, n, cols);
        tile_probs(kernel, k, qt, dims, tile, &vis, scale, (pt, ld, i0));
        // dPᵀ = v·gᵀ over the tile's keys and queries, then the score gradients dSᵀ.
        let va = MatRef { rows: cols, ..*v };
        let gb = MatRef::row_major(&gt[..], i0, dv, n, t);
        product(kernel, va, gb, T::ZERO, &mut dpt[i0..], ld);
        if let Some((keep, h)) = &drop {
            mask_tile(keep, (*h, i0, n, cols), dims, mt);
            mul_tile(dpt, (ld, i0, cols), mt);
        }
        score_gradients_tile(kernel, pt, dpt, (ld, i0, cols), &vis, scale);
        if drop.is_some() {
            // dv below reads the probabilities as they weighed the values.
            mul_tile(pt, (ld, i0, cols), mt);
        }
        // dq = dS·k for the tile's queries (dS read through the transpose's strides).
        if want[0] {
            let a = MatRef {
                data: &dpt[..],
                offset: i0,
                rows: n,
                cols,
                rs: 1,
                cs: ld,
            };
            write(0, i0, a, MatRef { rows: cols, ..kh });
        }
    }
    // dk = dSᵀ·q and dv = Pᵀ·g, a block of keys at a time: a key is seen only by the
    // queries at or after it (causal), so the earlier queries' zero terms are skipped.
    for j0 in (0..s).step_by(KEY_ROWS) {
        let n = KEY_ROWS.min(s - j0);
        let first = if causal {
            (j0 + t).saturating_sub(s).min(t)
        } else {
            0
        };
        let at = |m| MatRef::row_major(m, j0 * ld + first, n, t - first, ld);
        // dk from the score gradients and the queries, dv from the probabilities and the
        // output gradients: the rows from the first query that sees the block.
        for (which, a, m) in [(1, &dpt[..], qh), (2, &pt[..], gh)] {
            if want[which] {
                let b = MatRef {
                    offset: m.offset + first * m.rs,
                    rows: t - first,
                    ..m
                };
                write(which, j0, at(a), b);
            }
        }
    }
}

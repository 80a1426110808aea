//! Convolution kernels over contiguous NCHW data, lowered to the matrix products of
//! [`matmul`](super::matmul). Receptive fields are copied into a column matrix (`im2col`,
//! `[c/groups · kh · kw, positions]`) whose positions are the whole output planes of a chunk of
//! samples side by side — or, for large planes, tiles of one plane — at most [`COLS_MAX`] wide
//! and [`COL_MAX`] values large, so that every product is wide enough to run near the GEMM's
//! speed and the scratch stays bounded (reused per thread):
//!
//! - the forward pass is `Y = W · col` per chunk and group,
//! - the input gradient is `col = Wᵀ · G`, scattered back into the input (`col2im`),
//! - the weight gradient is `Σ G · colᵀ` over the chunks, each chunk's part computed on its own
//!   and the parts added in chunk order.
//!
//! Chunks are shared among the threads; each product runs on one thread. The chunks depend on
//! the shapes only, so no sum's order depends on the thread count: results are bit-identical
//! for any number of threads. A 1×1 convolution with stride 1 and no padding reads its input
//! as the column matrix directly where a chunk is one sample.

use super::matmul::{gemm_block, MatRef};
use crate::error::{Error, Result};
use crate::tensor::shape::fmt_shape;
use crate::tensor::storage::init_with;
use crate::tensor::Float;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::mem::MaybeUninit;

/// Options of a 2-D convolution, as `torch.nn.functional.conv2d` takes them (height, width).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Conv2dOptions {
    /// Step between output positions.
    pub stride: (usize, usize),
    /// Zeros added on both sides of the input.
    pub padding: (usize, usize),
    /// Spacing between kernel taps.
    pub dilation: (usize, usize),
    /// Input and output channels are split into this many independent groups.
    pub groups: usize,
}

impl Default for Conv2dOptions {
    fn default() -> Self {
        Conv2dOptions {
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
        }
    }
}

/// Window of a 2-D pooling: kernel size, stride and zero/−∞ padding (height, width).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PoolOptions {
    /// Window size.
    pub kernel: (usize, usize),
    /// Step between windows.
    pub stride: (usize, usize),
    /// Padding on both sides.
    pub padding: (usize, usize),
}

/// The most values in one column matrix (4 MB of f32).
pub const COL_MAX: usize = 1 << 20;

/// The most positions (columns) in one column matrix: wide enough for the GEMM to run at
/// speed, narrow enough that a batch gives every thread several chunks.
pub const COLS_MAX: usize = 4096;

/// The checked geometry of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub oh: usize,
    pub ow: usize,
    pub opts: Conv2dOptions,
}

/// Output length along one axis, or `None` when the (dilated) kernel does not fit.
fn out_len(len: usize, k: usize, stride: usize, pad: usize, dil: usize) -> Option<usize> {
    let span = dil.checked_mul(k.checked_sub(1)?)?.checked_add(1)?;
    let padded = len.checked_add(pad.checked_mul(2)?)?;
    padded.checked_sub(span).map(|r| r / stride + 1)
}

impl ConvGeom {
    /// Checks `x` `[n, c, h, w]` against `w` `[o, c/groups, kh, kw]` for `op`.
    pub(crate) fn new(
        op: &'static str,
        x: &[usize],
        wt: &[usize],
        o: Conv2dOptions,
    ) -> Result<Self> {
        let both = || format!("input {} and weight {}", fmt_shape(x), fmt_shape(wt));
        if x.len() != 4 || wt.len() != 4 {
            return Err(Error::shape(
                op,
                format!("{}: expected a 4-D input [n, c, h, w] and a 4-D weight [out, in/groups, kh, kw]", both()),
            ));
        }
        let (s, d, g) = (o.stride, o.dilation, o.groups);
        if s.0 == 0 || s.1 == 0 || d.0 == 0 || d.1 == 0 || g == 0 {
            return Err(Error::arg(
                op,
                format!("stride {s:?}, dilation {d:?} and groups {g} must all be positive"),
            ));
        }
        let (c, out) = (x[1], wt[0]);
        if c % g != 0 || out % g != 0 {
            return Err(Error::shape(
                op,
                format!(
                    "{}: {c} input and {out} output channels are not divisible by groups {g}",
                    both()
                ),
            ));
        }
        if wt[1] * g != c {
            return Err(Error::shape(
                op,
                format!("{}: the weight takes {} channels per group, the input has {c} channels in {g} groups", both(), wt[1]),
            ));
        }
        if wt[2] == 0 || wt[3] == 0 {
            return Err(Error::shape(op, format!("{}: empty kernel", both())));
        }
        let p = o.padding;
        let (Some(oh), Some(ow)) = (
            out_len(x[2], wt[2], s.0, p.0, d.0),
            out_len(x[3], wt[3], s.1, p.1, d.1),
        ) else {
            return Err(Error::shape(
                op,
                format!(
                    "{}: the kernel {}×{} (dilation {d:?}) is larger than the padded input {}×{} (padding {p:?})",
                    both(),
                    wt[2],
                    wt[3],
                    x[2] + 2 * p.0,
                    x[3] + 2 * p.1
                ),
            ));
        };
        Ok(ConvGeom {
            n: x[0],
            c,
            h: x[2],
            w: x[3],
            o: out,
            kh: wt[2],
            kw: wt[3],
            oh,
            ow,
            opts: o,
        })
    }

    /// Input channels per group.
    fn cg(&self) -> usize {
        self.c / self.opts.groups
    }
    /// Output channels per group.
    fn og(&self) -> usize {
        self.o / self.opts.groups
    }
    /// Rows of the column matrix.
    fn ckk(&self) -> usize {
        self.cg() * self.kh * self.kw
    }
    /// Output positions per channel.
    pub(crate) fn l(&self) -> usize {
        self.oh * self.ow
    }
    /// Positions per tile of one plane: the whole plane where it fits in a column matrix.
    fn tile(&self) -> usize {
        let width = (COL_MAX / self.ckk().max(1)).min(COLS_MAX);
        width.clamp(64.min(self.l()), self.l().max(1))
    }
    /// Samples per chunk: as many whole planes as fit in a column matrix (at least one).
    fn per_chunk(&self) -> usize {
        let width = (COL_MAX / self.ckk().max(1)).min(COLS_MAX);
        (width / self.l().max(1)).max(1)
    }
    /// Whether the convolution moves by one and its kernel taps are adjacent.
    fn unit_steps(&self) -> bool {
        self.opts.stride == (1, 1) && self.opts.dilation == (1, 1)
    }
    /// Whether the input is its own column matrix (1×1, stride 1, no padding).
    fn direct(&self) -> bool {
        let o = self.opts;
        self.kh == 1 && self.kw == 1 && o.stride == (1, 1) && o.padding == (0, 0)
    }
    /// The output shape `[n, o, oh, ow]`.
    pub(crate) fn out_shape(&self) -> [usize; 4] {
        [self.n, self.o, self.oh, self.ow]
    }
    /// Scratch values each thread keeps: a column matrix and an output-sized matrix.
    pub(crate) fn scratch(&self) -> usize {
        let cols = self.per_chunk() * self.tile();
        (self.ckk() + self.og()) * cols
    }

    /// For each kernel column `kj`: `base = kj·dw − pw` (output column `ox` reads input column
    /// `ox·sw + base`) and the output columns `first..end` whose input column is inside.
    fn columns(&self) -> Vec<(isize, usize, usize)> {
        let (sw, w) = (self.opts.stride.1 as isize, self.w as isize);
        (0..self.kw)
            .map(|kj| {
                let base = (kj * self.opts.dilation.1) as isize - self.opts.padding.1 as isize;
                let first = if base >= 0 { 0 } else { (-base + sw - 1) / sw };
                let end = if w <= base {
                    0
                } else {
                    (w - base + sw - 1) / sw
                };
                let end = (end as usize).min(self.ow);
                (base, (first as usize).min(end), end)
            })
            .collect()
    }

    /// Visits the column tile of output positions `l0..l0 + lt` for channel `ci` (within the
    /// group) in runs along one output row: `f(at, len, src)` for the `len` values at `at` in the
    /// column matrix (row `r` of the tile starts at `r·ld + off`), read from the input plane at `start`, `start + step`, … where `src` is
    /// `Some((start, step))`, or zeros (padding) where it is `None`.
    fn runs(
        &self,
        cols: &[(isize, usize, usize)],
        (l0, lt): (usize, usize),
        (ld, off): (usize, usize),
        ci: usize,
        mut f: impl FnMut(usize, usize, Option<(usize, usize)>),
    ) {
        let o = self.opts;
        let sw = o.stride.1;
        for ki in 0..self.kh {
            for (kj, &(base, first, end)) in cols.iter().enumerate() {
                let r = (ci * self.kh + ki) * self.kw + kj;
                let (mut l, mut pos) = (l0, 0);
                while pos < lt {
                    let (oy, ox0) = (l / self.ow, l % self.ow);
                    let run = (self.ow - ox0).min(lt - pos);
                    let at = r * ld + off + pos;
                    let iy = (oy * o.stride.0 + ki * o.dilation.0) as isize - o.padding.0 as isize;
                    if iy < 0 || iy as usize >= self.h {
                        f(at, run, None);
                    } else {
                        let (a, b) = (first.clamp(ox0, ox0 + run), end.clamp(ox0, ox0 + run));
                        let b = b.max(a);
                        if a > ox0 {
                            f(at, a - ox0, None);
                        }
                        if b > a {
                            let ix = (a as isize * sw as isize + base) as usize;
                            f(at + (a - ox0), b - a, Some((iy as usize * self.w + ix, sw)));
                        }
                        if ox0 + run > b {
                            f(at + (b - ox0), ox0 + run - b, None);
                        }
                    }
                    pos += run;
                    l += run;
                }
            }
        }
    }
}

/// Copies the column tile of output positions `l0..l0 + lt` of one sample's group (`x`: its
/// `c/groups` planes) into `col` (row `r` at `r·ld + off`).
fn im2col<T: Float>(
    g: &ConvGeom,
    x: &[T],
    tile: (usize, usize),
    at: (usize, usize),
    col: &mut [T],
) {
    if g.unit_steps() && tile == (0, g.l()) {
        return im2col_unit(g, x, at, col);
    }
    let hw = g.h * g.w;
    let cols = g.columns();
    for ci in 0..g.cg() {
        let plane = &x[ci * hw..(ci + 1) * hw];
        g.runs(&cols, tile, at, ci, |at, len, src| {
            let dst = &mut col[at..at + len];
            match src {
                None => dst.fill(T::ZERO),
                Some((start, 1)) => dst.copy_from_slice(&plane[start..start + len]),
                Some((start, step)) => {
                    for (i, d) in dst.iter_mut().enumerate() {
                        *d = plane[start + i * step];
                    }
                }
            }
        });
    }
}

/// Adds the column tile in `col` (row `r` at `r·ld + off`) back into the planes `x` it was
/// copied from (the adjoint of [`im2col`]).
fn col2im<T: Float>(
    g: &ConvGeom,
    col: &[T],
    tile: (usize, usize),
    at: (usize, usize),
    x: &mut [T],
) {
    if g.unit_steps() && tile == (0, g.l()) {
        return col2im_unit(g, col, at, x);
    }
    let hw = g.h * g.w;
    let cols = g.columns();
    for ci in 0..g.cg() {
        let plane = &mut x[ci * hw..(ci + 1) * hw];
        g.runs(&cols, tile, at, ci, |at, len, src| match src {
            None => {}
            Some((start, 1)) => {
                for (d, v) in plane[start..start + len].iter_mut().zip(&col[at..at + len]) {
                    *d += *v;
                }
            }
            Some((start, step)) => {
                for (i, v) in col[at..at + len].iter().enumerate() {
                    plane[start + i * step] += *v;
                }
            }
        });
    }
}

/// For each kernel offset `(ki, kj)` of a stride-1, dilation-1 convolution and each output row
/// `oy`: the input row it reads (`None` in the padding) and, along the row, the output columns
/// `first..end` inside the input and the shift `dx` (input column = output column + `dx`).
#[inline(always)]
fn unit_rows(
    g: &ConvGeom,
    mut f: impl FnMut(usize, usize, usize, Option<usize>, (usize, usize, isize)),
) {
    let (ph, pw) = (g.opts.padding.0 as isize, g.opts.padding.1 as isize);
    for ki in 0..g.kh {
        for kj in 0..g.kw {
            let dx = kj as isize - pw;
            let first = (-dx).clamp(0, g.ow as isize) as usize;
            let end = (g.w as isize - dx).clamp(first as isize, g.ow as isize) as usize;
            for oy in 0..g.oh {
                let iy = oy as isize + ki as isize - ph;
                let row = (iy >= 0 && (iy as usize) < g.h).then_some(iy as usize);
                f(ki, kj, oy, row, (first, end, dx));
            }
        }
    }
}

/// Copies `src` into `dst` (equal lengths) in blocks of 8 values, the last block overlapping
/// the one before it: constant-size moves instead of a `memcpy` call for rows of 14 or 28.
#[inline(always)]
fn copy_short<T: Copy>(dst: &mut [T], src: &[T]) {
    let n = dst.len();
    if n < 8 {
        dst.copy_from_slice(src);
        return;
    }
    let mut i = 0;
    while i < n {
        let j = i.min(n - 8);
        dst[j..j + 8].copy_from_slice(&src[j..j + 8]);
        i += 8;
    }
}

/// [`im2col`] of whole planes for a stride-1, dilation-1 convolution: each column-matrix row
/// is `oh` runs of `ow` values, each a shifted input row with zeros where it leaves the input.
fn im2col_unit<T: Float>(g: &ConvGeom, x: &[T], (ld, off): (usize, usize), col: &mut [T]) {
    let (hw, l, ow) = (g.h * g.w, g.l(), g.ow);
    for ci in 0..g.cg() {
        let plane = &x[ci * hw..(ci + 1) * hw];
        unit_rows(g, |ki, kj, oy, row, (first, end, dx)| {
            let r = (ci * g.kh + ki) * g.kw + kj;
            let dst = &mut col[r * ld + off..][..l][oy * ow..][..ow];
            let Some(iy) = row else {
                dst.fill(T::ZERO);
                return;
            };
            dst[..first].fill(T::ZERO);
            dst[end..].fill(T::ZERO);
            if end > first {
                let s = (iy * g.w) as isize + first as isize + dx;
                copy_short(&mut dst[first..end], &plane[s as usize..][..end - first]);
            }
        });
    }
}

/// [`col2im`] of whole planes for a stride-1, dilation-1 convolution (the adjoint of
/// [`im2col_unit`], adding in the same order as the general loop).
fn col2im_unit<T: Float>(g: &ConvGeom, col: &[T], (ld, off): (usize, usize), x: &mut [T]) {
    let (hw, l, ow) = (g.h * g.w, g.l(), g.ow);
    for ci in 0..g.cg() {
        let plane = &mut x[ci * hw..(ci + 1) * hw];
        unit_rows(g, |ki, kj, oy, row, (first, end, dx)| {
            let (Some(iy), true) = (row, end > first) else {
                return;
            };
            let r = (ci * g.kh + ki) * g.kw + kj;
            let src = &col[r * ld + off..][..l][oy * ow..][first..end];
            let s = (iy * g.w) as isize + first as isize + dx;
            for (d, v) in plane[s as usize..][..end - first].iter_mut().zip(src) {
                *d += *v;
            }
        });
    }
}

/// Runs `f` with this thread's scratch buffer of at least `len` values (taken out of its slot
/// for the call, so that a nested job on this thread allocates its own).
pub(super) fn with_scratch<T: Float, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    let mut buf = T::scratch().with(|c| c.take());
    if buf.len() < len {
        buf.resize(len, T::ZERO);
    }
    let r = f(&mut buf[..len]);
    T::scratch().with(|c| c.set(buf));
    r
}

/// The units of work of a chunk of `ns` samples from `s0`: per group, per tile of the planes
/// (one tile, the whole plane, when `ns > 1`): `(group, l0, width)`.
fn units(g: &ConvGeom) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    let (l, lt) = (g.l(), g.tile());
    (0..g.opts.groups)
        .flat_map(move |gi| (0..l).step_by(lt).map(move |l0| (gi, l0, lt.min(l - l0))))
}

/// `y = conv(x, w) + b`: `x` `[n, c, h, w]`, `w` `[o, c/groups, kh, kw]`, `b` `[o]` (if any),
/// `y` `[n, o, oh, ow]` (every element written: it may start uninitialised).
/// f32 convolutions with stride 1 and dilation 1 run the direct kernels of
/// [`conv_direct`](super::conv_direct) on the AVX-512 and AVX2 tiers; everything else the
/// column-matrix path below.
pub(crate) fn forward<T: Float>(
    g: &ConvGeom,
    x: &[T],
    wt: &[T],
    bias: Option<&[T]>,
    y: &mut [MaybeUninit<T>],
) {
    if let (Some(xf), Some(wf)) = (T::as_f32(x), T::as_f32(wt)) {
        let bf = bias.and_then(T::as_f32);
        if let Some(yf) = T::as_f32_uninit(y) {
            if (bias.is_none() || bf.is_some()) && super::conv_direct::forward(g, xf, wf, bf, yf) {
                return;
            }
        }
    }
    forward_cols(g, x, wt, bias, init_with(y, T::ZERO))
}

/// Whether [`forward_pooled`] can run for `g` on `T` (f32, and the direct kernels take the
/// geometry on the active tier): checked before its outputs are allocated.
pub(crate) fn pooled_applies<T: Float>(g: &ConvGeom) -> bool {
    T::DTYPE == "f32" && super::conv_direct::applies(g)
}

/// [`forward`], then max pooling of its output `y` into `py`/`parg` as
/// [`pool::max_pool`](super::pool::max_pool) would (same values and indices): each sample is
/// pooled by the thread that convolved it, right after, while its output is still in that
/// core's cache, instead of in a second pass that reads the whole output back from memory.
/// `pg` is the pooling's geometry over `y`'s shape. `false`, with nothing written, where the
/// direct f32 kernels do not apply (the caller then runs the two ops apart).
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_pooled<T: Float>(
    g: &ConvGeom,
    x: &[T],
    wt: &[T],
    bias: Option<&[T]>,
    y: &mut [MaybeUninit<T>],
    pg: &super::pool::PoolGeom,
    py: &mut [MaybeUninit<T>],
    parg: &mut [MaybeUninit<usize>],
) -> bool {
    use std::sync::Mutex;
    let per = g.o * pg.oh * pg.ow;
    assert!(
        pg.planes == g.n * g.o && (pg.h, pg.w) == (g.oh, g.ow) && py.len() == parg.len(),
        "internal: the pooling's geometry does not match the convolution's output"
    );
    if per == 0 || py.len() != g.n * per {
        return false;
    }
    let (Some(xf), Some(wf), Some(yf), Some(pyf)) = (
        T::as_f32(x),
        T::as_f32(wt),
        T::as_f32_uninit(y),
        T::as_f32_uninit(py),
    ) else {
        return false;
    };
    let bf = bias.and_then(T::as_f32);
    if bias.is_some() && bf.is_none() {
        return false;
    }
    // Each sample's pooled values and indices, taken by the one thread that pools it.
    let slots: Vec<Mutex<_>> = pyf
        .chunks_mut(per)
        .zip(parg.chunks_mut(per))
        .map(Mutex::new)
        .collect();
    let tier = crate::isa::active();
    super::conv_direct::forward_then(g, xf, wf, bf, yf, &|s, ys| {
        let mut slot = slots[s].lock().unwrap_or_else(|e| e.into_inner());
        let (py, pa) = &mut *slot;
        super::pool::max_pool_planes(pg, ys, py, pa, tier);
    })
}

/// [`forward`] through column matrices.
pub(super) fn forward_cols<T: Float>(
    g: &ConvGeom,
    x: &[T],
    wt: &[T],
    bias: Option<&[T]>,
    y: &mut [T],
) {
    let (l, og, ckk, cg, hw) = (g.l(), g.og(), g.ckk(), g.cg(), g.h * g.w);
    let ns = g.per_chunk();
    let sample = g.o * l;
    y.par_chunks_mut((ns * sample).max(1))
        .enumerate()
        .for_each(|(ch, ys)| {
            let (s0, nsj) = (ch * ns, ys.len() / sample.max(1));
            with_scratch(g.scratch(), |scratch: &mut [T]| {
                let (col, tmp) = scratch.split_at_mut(ckk * ns * g.tile());
                for (gi, l0, w) in units(g) {
                    let a = MatRef::row_major(wt, gi * og * ckk, og, ckk, ckk);
                    let bias_of = |r: usize| bias.map_or(T::ZERO, |b| b[gi * og + r]);
                    if nsj == 1 {
                        // One sample: the product goes straight into y, onto the bias.
                        let out = &mut ys[gi * og * l + l0..];
                        for r in 0..og {
                            out[r * l..r * l + w].fill(bias_of(r));
                        }
                        let xg = &x[(s0 * g.c + gi * cg) * hw..][..cg * hw];
                        let b = if g.direct() {
                            MatRef::row_major(xg, l0, cg, w, hw)
                        } else {
                            im2col(g, xg, (l0, w), (w, 0), col);
                            MatRef::row_major(col, 0, ckk, w, w)
                        };
                        gemm_block(a, b, T::ONE, out, l);
                        continue;
                    }
                    let cols = nsj * w;
                    for j in 0..nsj {
                        let xg = &x[((s0 + j) * g.c + gi * cg) * hw..][..cg * hw];
                        im2col(g, xg, (l0, w), (cols, j * w), col);
                    }
                    gemm_block(
                        a,
                        MatRef::row_major(col, 0, ckk, cols, cols),
                        T::ZERO,
                        tmp,
                        cols,
                    );
                    for j in 0..nsj {
                        for r in 0..og {
                            let (src, b) = (&tmp[r * cols + j * w..][..w], bias_of(r));
                            let dst = &mut ys[j * sample + (gi * og + r) * l + l0..][..w];
                            for (d, v) in dst.iter_mut().zip(src) {
                                *d = *v + b;
                            }
                        }
                    }
                }
            })
        });
}

/// Copies the output gradient of a chunk's samples (`nsj` from `s0`, group `gi`, positions
/// `l0..l0 + w`) side by side into `gt` (`[o/groups, nsj·w]`).
fn gather_grad<T: Float>(
    g: &ConvGeom,
    gy: &[T],
    (s0, nsj): (usize, usize),
    (gi, l0, w): (usize, usize, usize),
    gt: &mut [T],
) {
    let (l, og, cols) = (g.l(), g.og(), nsj * w);
    for j in 0..nsj {
        for r in 0..og {
            let src = &gy[((s0 + j) * g.o + gi * og + r) * l + l0..][..w];
            gt[r * cols + j * w..][..w].copy_from_slice(src);
        }
    }
}

/// `dx = conv_input(gy, w)`: the gradient of `conv` in its input (a transposed convolution),
/// `gy` `[n, o, oh, ow]`, `dx` `[n, c, h, w]` (every element written: it may start
/// uninitialised).
pub(crate) fn input_grad<T: Float>(g: &ConvGeom, gy: &[T], wt: &[T], dx: &mut [MaybeUninit<T>]) {
    if let (Some(gf), Some(wf)) = (T::as_f32(gy), T::as_f32(wt)) {
        if let Some(xf) = T::as_f32_uninit(dx) {
            if super::conv_direct::input_grad(g, gf, wf, xf) {
                return;
            }
        }
    }
    input_grad_cols(g, gy, wt, init_with(dx, T::ZERO))
}

/// [`input_grad`] through column matrices.
pub(super) fn input_grad_cols<T: Float>(g: &ConvGeom, gy: &[T], wt: &[T], dx: &mut [T]) {
    let (l, og, ckk, cg, hw) = (g.l(), g.og(), g.ckk(), g.cg(), g.h * g.w);
    let ns = g.per_chunk();
    let sample = g.c * hw;
    dx.par_chunks_mut((ns * sample).max(1))
        .enumerate()
        .for_each(|(ch, xs)| {
            let (s0, nsj) = (ch * ns, xs.len() / sample.max(1));
            let direct = g.direct() && nsj == 1;
            if !direct {
                xs.fill(T::ZERO);
            }
            with_scratch(g.scratch(), |scratch: &mut [T]| {
                let (col, gt) = scratch.split_at_mut(ckk * ns * g.tile());
                for (gi, l0, w) in units(g) {
                    let at = MatRef::row_major(wt, gi * og * ckk, og, ckk, ckk).t();
                    let cols = nsj * w;
                    let b = if nsj == 1 {
                        MatRef::row_major(gy, (s0 * g.o + gi * og) * l + l0, og, w, l)
                    } else {
                        gather_grad(g, gy, (s0, nsj), (gi, l0, w), gt);
                        MatRef::row_major(gt, 0, og, cols, cols)
                    };
                    if direct {
                        gemm_block(at, b, T::ZERO, &mut xs[gi * cg * hw + l0..], hw);
                        continue;
                    }
                    gemm_block(at, b, T::ZERO, col, cols);
                    for j in 0..nsj {
                        let xg = &mut xs[j * sample + gi * cg * hw..][..cg * hw];
                        col2im(g, col, (l0, w), (cols, j * w), xg);
                    }
                }
            })
        });
}

/// The weight gradient's part from one chunk of samples, added onto `acc` (`[o, ckk]`).
fn weight_part<T: Float>(
    g: &ConvGeom,
    x: &[T],
    gy: &[T],
    (s0, nsj): (usize, usize),
    acc: &mut [T],
) {
    let (l, og, ckk, cg, hw) = (g.l(), g.og(), g.ckk(), g.cg(), g.h * g.w);
    with_scratch(g.scratch(), |scratch: &mut [T]| {
        let (col, gt) = scratch.split_at_mut(ckk * g.per_chunk() * g.tile());
        for (gi, l0, w) in units(g) {
            let cols = nsj * w;
            let out = &mut acc[gi * og * ckk..];
            let a = if nsj == 1 {
                MatRef::row_major(gy, (s0 * g.o + gi * og) * l + l0, og, w, l)
            } else {
                gather_grad(g, gy, (s0, nsj), (gi, l0, w), gt);
                MatRef::row_major(gt, 0, og, cols, cols)
            };
            let xg = |j: usize| &x[((s0 + j) * g.c + gi * cg) * hw..][..cg * hw];
            let b = if g.direct() && nsj == 1 {
                MatRef::row_major(xg(0), l0, cg, w, hw).t()
            } else {
                for j in 0..nsj {
                    im2col(g, xg(j), (l0, w), (cols, j * w), col);
                }
                MatRef::row_major(col, 0, ckk, cols, cols).t()
            };
            gemm_block(a, b, T::ONE, out, ckk);
        }
    });
}

/// `dw = conv_weight(x, gy)`: the gradient of `conv` in its weight, `[o, c/groups, kh, kw]`
/// (every element written). The chunks' parts are computed a wave of one per thread at a time
/// and added in chunk order (memory: one weight-sized part per thread).
pub(crate) fn weight_grad<T: Float>(g: &ConvGeom, x: &[T], gy: &[T], dw: &mut [T]) {
    if let (Some(xf), Some(gf)) = (T::as_f32(x), T::as_f32(gy)) {
        if let Some(wf) = T::as_f32_mut(dw) {
            if super::conv_direct::weight_grad(g, xf, gf, wf, sum_parts) {
                return;
            }
        }
    }
    weight_grad_cols(g, x, gy, dw)
}

/// [`weight_grad`] through column matrices.
pub(super) fn weight_grad_cols<T: Float>(g: &ConvGeom, x: &[T], gy: &[T], dw: &mut [T]) {
    let ns = g.per_chunk();
    let chunk = |c: usize| (c * ns, ns.min(g.n - c * ns));
    sum_parts(
        g.n.div_ceil(ns),
        &|c, part: &mut [T]| weight_part(g, x, gy, chunk(c), part),
        dw,
    );
}

/// `dw = Σ part(c)` over the chunks `c < chunks`, added in chunk order: every chunk's part is
/// summed on its own (zeroed first), a wave of one per thread at a time, so the association
/// is the same on any number of threads (a product accumulated onto `dw` directly would add
/// its k blocks one by one instead). Memory: one `dw`-sized part per thread.
pub(super) fn sum_parts<T: Float>(
    chunks: usize,
    part: &(dyn Fn(usize, &mut [T]) + Sync),
    dw: &mut [T],
) {
    let size = dw.len();
    dw.fill(T::ZERO);
    let wave = super::threads().clamp(1, chunks.max(1));
    let mut parts = vec![T::ZERO; wave * size];
    for first in (0..chunks).step_by(wave) {
        let count = wave.min(chunks - first);
        parts[..count * size]
            .par_chunks_mut(size.max(1))
            .enumerate()
            .for_each(|(i, p)| {
                p.fill(T::ZERO);
                part(first + i, p);
            });
        for p in parts[..count * size].chunks(size.max(1)) {
            for (d, v) in dw.iter_mut().zip(p) {
                *d += *v;
            }
        }
    }
}

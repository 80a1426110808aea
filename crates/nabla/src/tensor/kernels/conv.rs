//! Convolution kernels over contiguous NCHW data, lowered to the matrix products of
//! [`matmul`](super::matmul): a sample's receptive fields are copied into a column matrix
//! (`im2col`, `[c/groups · kh · kw, tile]`) in tiles of output positions small enough to stay in
//! the cache ([`COL_MAX`] values), and
//!
//! - the forward pass is `y_s = W · col` per sample, group and tile,
//! - the input gradient is `col = Wᵀ · g_s`, scattered back into the input (`col2im`),
//! - the weight gradient is `Σ_s g_s · colᵀ`, summed over fixed chunks of [`CHUNK`] samples
//!   and then over the chunks in order.
//!
//! Samples are shared among the threads; each product runs on one thread. No sum's order
//! depends on how the work was split, so results are bit-identical for any thread count. A
//! 1×1 convolution with stride 1 and no padding reads its input as the column matrix directly.

use super::matmul::{gemm_block, MatRef};
use crate::error::{Error, Result};
use crate::tensor::shape::fmt_shape;
use crate::tensor::Float;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

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

/// The largest column tile, in values (512 KB of f32): a tile and its share of the weight stay
/// in a core's L2 cache.
pub const COL_MAX: usize = 1 << 17;

/// Samples per partial sum of the weight gradient: fixed, so that the order of the sum does
/// not depend on the thread count.
pub const CHUNK: usize = 4;

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
    /// Output positions per column tile.
    fn tile(&self) -> usize {
        let l = self.l();
        (COL_MAX / self.ckk().max(1)).clamp(64.min(l), l.max(1))
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
    /// Scratch values one thread allocates (the column tile).
    pub(crate) fn scratch(&self) -> usize {
        if self.direct() {
            0
        } else {
            self.ckk() * self.tile()
        }
    }

    /// For kernel tap `(ki, kj)` and output row `oy`: the input row (if inside), and for output
    /// columns the input column `ox·sw + base` with `base = kj·dw − pw`.
    fn tap(&self, ki: usize, kj: usize, oy: usize) -> (Option<usize>, isize) {
        let o = self.opts;
        let iy = (oy * o.stride.0 + ki * o.dilation.0) as isize - o.padding.0 as isize;
        let row = (iy >= 0 && (iy as usize) < self.h).then_some(iy as usize);
        (row, (kj * o.dilation.1) as isize - o.padding.1 as isize)
    }

    /// The output columns `ox` (within `lo..hi`) whose input column lies inside the input.
    fn inside(&self, base: isize, lo: usize, hi: usize) -> (usize, usize) {
        let sw = self.opts.stride.1 as isize;
        let first = if base >= 0 {
            0
        } else {
            ((-base) + sw - 1) / sw
        };
        let end = if (self.w as isize) <= base {
            0
        } else {
            (self.w as isize - base + sw - 1) / sw
        };
        let a = (first as usize).clamp(lo, hi);
        let b = (end.max(0) as usize).clamp(a, hi);
        (a, b)
    }

    /// Visits the column tile of output positions `l0..l0 + lt` for channel `ci` (within the
    /// group) in runs along one output row: `f(at, len, src)` for the `len` values at `at` in the
    /// tile, read from the input plane at `start`, `start + step`, … where `src` is
    /// `Some((start, step))`, or zeros (padding) where it is `None`.
    fn runs(
        &self,
        ci: usize,
        l0: usize,
        lt: usize,
        mut f: impl FnMut(usize, usize, Option<(usize, usize)>),
    ) {
        let sw = self.opts.stride.1;
        for ki in 0..self.kh {
            for kj in 0..self.kw {
                let r = (ci * self.kh + ki) * self.kw + kj;
                let (mut l, mut pos) = (l0, 0);
                while pos < lt {
                    let (oy, ox0) = (l / self.ow, l % self.ow);
                    let run = (self.ow - ox0).min(lt - pos);
                    let at = r * lt + pos;
                    match self.tap(ki, kj, oy) {
                        (None, _) => f(at, run, None),
                        (Some(iy), base) => {
                            let (a, b) = self.inside(base, ox0, ox0 + run);
                            if a > ox0 {
                                f(at, a - ox0, None);
                            }
                            if b > a {
                                let ix = (a as isize * sw as isize + base) as usize;
                                f(at + (a - ox0), b - a, Some((iy * self.w + ix, sw)));
                            }
                            if ox0 + run > b {
                                f(at + (b - ox0), ox0 + run - b, None);
                            }
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
/// `c/groups` planes) into `col` (`[ckk, lt]`, row-major).
fn im2col<T: Float>(g: &ConvGeom, x: &[T], l0: usize, lt: usize, col: &mut [T]) {
    let hw = g.h * g.w;
    for ci in 0..g.cg() {
        let plane = &x[ci * hw..(ci + 1) * hw];
        g.runs(ci, l0, lt, |at, len, src| {
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

/// Adds the column tile `col` back into the planes `x` it was copied from (the adjoint of
/// [`im2col`]).
fn col2im<T: Float>(g: &ConvGeom, col: &[T], l0: usize, lt: usize, x: &mut [T]) {
    let hw = g.h * g.w;
    for ci in 0..g.cg() {
        let plane = &mut x[ci * hw..(ci + 1) * hw];
        g.runs(ci, l0, lt, |at, len, src| {
            if let Some((start, step)) = src {
                for (i, v) in col[at..at + len].iter().enumerate() {
                    plane[start + i * step] += *v;
                }
            }
        });
    }
}

/// A row-major matrix in `data` at `offset`.
fn mat<T>(data: &[T], offset: usize, rows: usize, cols: usize, rs: usize) -> MatRef<'_, T> {
    MatRef {
        data,
        offset,
        rows,
        cols,
        rs,
        cs: 1,
    }
}

/// Runs `f(sample, scratch)` for every sample, the samples cut into one contiguous run per
/// thread, each run with one scratch buffer of `scratch` values. `out` holds `per` values per
/// sample, handed to `f` as that sample's slice.
fn per_sample<T: Float>(
    n: usize,
    per: usize,
    scratch: usize,
    out: &mut [T],
    f: impl Fn(usize, &mut [T], &mut [T]) + Sync,
) {
    let parts = super::threads().min(n).max(1);
    let chunk = n.div_ceil(parts).max(1);
    out.par_chunks_mut((chunk * per).max(1))
        .enumerate()
        .for_each(|(p, outs)| {
            let mut col = vec![T::ZERO; scratch];
            for (i, o) in outs.chunks_mut(per.max(1)).enumerate() {
                f(p * chunk + i, o, &mut col);
            }
        });
}

/// `y = conv(x, w)` without bias: `x` `[n, c, h, w]`, `w` `[o, c/groups, kh, kw]`, `y`
/// `[n, o, oh, ow]` (every element written).
pub(crate) fn forward<T: Float>(g: &ConvGeom, x: &[T], wt: &[T], y: &mut [T]) {
    let (l, og, ckk, cg, hw) = (g.l(), g.og(), g.ckk(), g.cg(), g.h * g.w);
    let lt = g.tile();
    per_sample(g.n, g.o * l, g.scratch(), y, |s, ys, col| {
        for gi in 0..g.opts.groups {
            let xg = &x[(s * g.c + gi * cg) * hw..][..cg * hw];
            let a = mat(wt, gi * og * ckk, og, ckk, ckk);
            for l0 in (0..l).step_by(lt) {
                let w = lt.min(l - l0);
                let out = &mut ys[gi * og * l + l0..];
                if g.direct() {
                    gemm_block(a, mat(xg, l0, cg, w, hw), T::ZERO, out, l);
                } else {
                    im2col(g, xg, l0, w, &mut col[..ckk * w]);
                    gemm_block(a, mat(col, 0, ckk, w, w), T::ZERO, out, l);
                }
            }
        }
    });
}

/// `dx = conv_input(gy, w)`: the gradient of `conv` in its input (a transposed convolution),
/// `gy` `[n, o, oh, ow]`, `dx` `[n, c, h, w]` (every element written).
pub(crate) fn input_grad<T: Float>(g: &ConvGeom, gy: &[T], wt: &[T], dx: &mut [T]) {
    let (l, og, ckk, cg, hw) = (g.l(), g.og(), g.ckk(), g.cg(), g.h * g.w);
    let lt = g.tile();
    per_sample(g.n, g.c * hw, g.scratch(), dx, |s, xs, col| {
        if !g.direct() {
            xs.fill(T::ZERO);
        }
        for gi in 0..g.opts.groups {
            let at = mat(wt, gi * og * ckk, og, ckk, ckk).t();
            let gys = (s * g.o + gi * og) * l;
            let xg = &mut xs[gi * cg * hw..][..cg * hw];
            for l0 in (0..l).step_by(lt) {
                let w = lt.min(l - l0);
                let b = mat(gy, gys + l0, og, w, l);
                if g.direct() {
                    gemm_block(at, b, T::ZERO, &mut xg[l0..], hw);
                } else {
                    gemm_block(at, b, T::ZERO, &mut col[..ckk * w], w);
                    col2im(g, &col[..ckk * w], l0, w, xg);
                }
            }
        }
    });
}

/// `dw = conv_weight(x, gy)`: the gradient of `conv` in its weight, `[o, c/groups, kh, kw]`
/// (every element written).
pub(crate) fn weight_grad<T: Float>(g: &ConvGeom, x: &[T], gy: &[T], dw: &mut [T]) {
    let (l, og, ckk, cg, hw) = (g.l(), g.og(), g.ckk(), g.cg(), g.h * g.w);
    let lt = g.tile();
    let size = g.o * ckk;
    let chunks = g.n.div_ceil(CHUNK);
    let partial = |ch: usize, acc: &mut [T], col: &mut [T]| {
        for s in ch * CHUNK..((ch + 1) * CHUNK).min(g.n) {
            for gi in 0..g.opts.groups {
                let xg = &x[(s * g.c + gi * cg) * hw..][..cg * hw];
                let gys = (s * g.o + gi * og) * l;
                let out = &mut acc[gi * og * ckk..];
                for l0 in (0..l).step_by(lt) {
                    let w = lt.min(l - l0);
                    let a = mat(gy, gys + l0, og, w, l);
                    if g.direct() {
                        gemm_block(a, mat(xg, l0, cg, w, hw).t(), T::ONE, out, ckk);
                    } else {
                        im2col(g, xg, l0, w, &mut col[..ckk * w]);
                        gemm_block(a, mat(col, 0, ckk, w, w).t(), T::ONE, out, ckk);
                    }
                }
            }
        }
    };
    if chunks <= 1 {
        dw.fill(T::ZERO);
        partial(0, dw, &mut vec![T::ZERO; g.scratch()]);
        return;
    }
    let mut partials = vec![T::ZERO; chunks * size];
    let parts = super::threads().min(chunks).max(1);
    let per = chunks.div_ceil(parts);
    partials
        .par_chunks_mut(per * size)
        .enumerate()
        .for_each(|(p, accs)| {
            let mut col = vec![T::ZERO; g.scratch()];
            for (i, acc) in accs.chunks_mut(size).enumerate() {
                partial(p * per + i, acc, &mut col);
            }
        });
    dw.copy_from_slice(&partials[..size]);
    for p in partials[size..].chunks(size) {
        for (d, v) in dw.iter_mut().zip(p) {
            *d += *v;
        }
    }
}

//! Pooling kernels over contiguous NCHW data, one `h × w` plane at a time (planes shared among
//! threads above [`PAR_THRESHOLD`](super::PAR_THRESHOLD) values; each plane's sums run in one
//! fixed order, so results do not depend on the thread count).

use super::conv::PoolOptions;
use crate::error::{Error, Result};
use crate::tensor::shape::fmt_shape;
use crate::tensor::Float;
use rayon::prelude::*;

/// The checked geometry of one pooling: `planes` planes of `h × w` give `oh × ow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolGeom {
    pub planes: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub opts: PoolOptions,
}

impl PoolGeom {
    /// Checks a 4-D input shape `[n, c, h, w]` against the window for `op`. As in PyTorch, the
    /// padding may be at most half the kernel (so that every window holds an input value).
    pub(crate) fn new(op: &'static str, x: &[usize], o: PoolOptions) -> Result<Self> {
        if x.len() != 4 {
            return Err(Error::shape(
                op,
                format!("expected a 4-D input [n, c, h, w], got {}", fmt_shape(x)),
            ));
        }
        let (k, s, p) = (o.kernel, o.stride, o.padding);
        if k.0 == 0 || k.1 == 0 || s.0 == 0 || s.1 == 0 {
            return Err(Error::arg(
                op,
                format!("kernel {k:?} and stride {s:?} must be positive"),
            ));
        }
        if 2 * p.0 > k.0 || 2 * p.1 > k.1 {
            return Err(Error::arg(
                op,
                format!("padding {p:?} must be at most half the kernel {k:?}"),
            ));
        }
        let (h, w) = (x[2] + 2 * p.0, x[3] + 2 * p.1);
        if k.0 > h || k.1 > w {
            return Err(Error::shape(
                op,
                format!(
                    "input {}: the kernel {}×{} is larger than the padded input {h}×{w} (padding {p:?})",
                    fmt_shape(x),
                    k.0,
                    k.1
                ),
            ));
        }
        Ok(PoolGeom {
            planes: x[0] * x[1],
            h: x[2],
            w: x[3],
            oh: (h - k.0) / s.0 + 1,
            ow: (w - k.1) / s.1 + 1,
            opts: o,
        })
    }

    /// The input rows (or columns) of window `i` along an axis: `start..end`, clipped.
    fn span(i: usize, k: usize, s: usize, p: usize, len: usize) -> (usize, usize) {
        let lo = (i * s) as isize - p as isize;
        let hi = (lo + k as isize).min(len as isize);
        (lo.max(0) as usize, hi.max(0) as usize)
    }

    /// Runs `f(oy, ox, rows, cols)` for every window of a plane.
    fn windows(&self, mut f: impl FnMut(usize, usize, (usize, usize), (usize, usize))) {
        let o = self.opts;
        for oy in 0..self.oh {
            let rows = Self::span(oy, o.kernel.0, o.stride.0, o.padding.0, self.h);
            for ox in 0..self.ow {
                let cols = Self::span(ox, o.kernel.1, o.stride.1, o.padding.1, self.w);
                f(oy, ox, rows, cols);
            }
        }
    }
}

/// Max pooling: the maximum of each window into `y`, and its index within the input plane
/// (`row · w + col`) into `arg`: ties go to the first in row-major window order, as in
/// PyTorch; a NaN in the window makes the value NaN (its gradient goes to a NaN).
pub(crate) fn max_pool<T: Float>(g: &PoolGeom, x: &[T], y: &mut [T], arg: &mut [usize]) {
    let (hw, l) = (g.h * g.w, g.oh * g.ow);
    let o = g.opts;
    let rows: Vec<(usize, usize)> = (0..g.oh)
        .map(|i| PoolGeom::span(i, o.kernel.0, o.stride.0, o.padding.0, g.h))
        .collect();
    let cols: Vec<(usize, usize)> = (0..g.ow)
        .map(|i| PoolGeom::span(i, o.kernel.1, o.stride.1, o.padding.1, g.w))
        .collect();
    let plain2 = o.kernel == (2, 2) && o.stride == (2, 2) && o.padding == (0, 0);
    let work = |p: usize, ys: &mut [T], args: &mut [usize]| {
        let plane = &x[p * hw..(p + 1) * hw];
        if plain2 {
            // The common 2×2 window, stride 2, without data-dependent branches (on random data
            // a branch per comparison mispredicts half the time, which made this loop 10× slower
            // than a ReLU over the same tensor): the maximum by `max`, its index as the first
            // of the four equal to it, computed in integers; a NaN (rare, so its branch is
            // predictable) makes the value NaN and the index the first NaN's.
            for oy in 0..g.oh {
                let (r0, r1) = (
                    &plane[2 * oy * g.w..][..g.w],
                    &plane[(2 * oy + 1) * g.w..][..g.w],
                );
                let (yr, ar) = (&mut ys[oy * g.ow..][..g.ow], &mut args[oy * g.ow..][..g.ow]);
                let base = 2 * oy * g.w;
                for (ox, (yv, av)) in yr.iter_mut().zip(ar.iter_mut()).enumerate() {
                    let c = 2 * ox;
                    let (a, b, d, e) = (r0[c], r0[c + 1], r1[c], r1[c + 1]);
                    let mut m = a.max(b).max(d.max(e));
                    if a.is_nan() | b.is_nan() | d.is_nan() | e.is_nan() {
                        m = T::from_f64(f64::NAN);
                    }
                    let miss = |v: T| usize::from(!(v == m || v.is_nan()));
                    let k = miss(a) * (1 + miss(b) * (1 + miss(d)));
                    *yv = m;
                    *av = base + c + (k & 1) + (k >> 1) * g.w;
                }
            }
            return;
        }
        let later = |v: T, best: T| (v > best) | v.is_nan();
        for (oy, &(r0, r1)) in rows.iter().enumerate() {
            for (ox, &(c0, c1)) in cols.iter().enumerate() {
                let mut at = r0 * g.w + c0;
                let mut best = plane[at];
                for r in r0..r1 {
                    let start = r * g.w + c0;
                    for (i, &v) in plane[start..r * g.w + c1].iter().enumerate() {
                        let t = later(v, best);
                        (best, at) = (if t { v } else { best }, if t { start + i } else { at });
                    }
                }
                ys[oy * g.ow + ox] = best;
                args[oy * g.ow + ox] = at;
            }
        }
    };
    if y.len() < super::PAR_THRESHOLD || super::threads() < 2 {
        for (p, (ys, args)) in y.chunks_mut(l).zip(arg.chunks_mut(l)).enumerate() {
            work(p, ys, args);
        }
    } else {
        let k = (super::PAR_THRESHOLD / 16 / l.max(1)).max(1);
        y.par_chunks_mut(l * k)
            .zip(arg.par_chunks_mut(l * k))
            .enumerate()
            .for_each(|(t, (ys, args))| {
                for (i, (ys, args)) in ys.chunks_mut(l).zip(args.chunks_mut(l)).enumerate() {
                    work(t * k + i, ys, args);
                }
            });
    }
}

/// Average pooling with padding counted as zeros (PyTorch's `count_include_pad = true`): the
/// window's sum over `kh · kw`.
pub(crate) fn avg_pool<T: Float>(g: &PoolGeom, x: &[T], y: &mut [T]) {
    let hw = g.h * g.w;
    let k = g.opts.kernel;
    let scale = T::ONE / T::from_f64((k.0 * k.1) as f64);
    super::for_each_run(y, g.oh * g.ow, |p, ys| {
        let plane = &x[p * hw..(p + 1) * hw];
        g.windows(|oy, ox, (r0, r1), (c0, c1)| {
            let mut s = T::ZERO;
            for r in r0..r1 {
                for v in &plane[r * g.w + c0..r * g.w + c1] {
                    s += *v;
                }
            }
            ys[oy * g.ow + ox] = s * scale;
        });
    });
}

/// The adjoint of [`avg_pool`]: each `gy` value over `kh · kw`, added to every input of its
/// window; `dx` is written in full.
pub(crate) fn avg_pool_adjoint<T: Float>(g: &PoolGeom, gy: &[T], dx: &mut [T]) {
    let (hw, l) = (g.h * g.w, g.oh * g.ow);
    let k = g.opts.kernel;
    let scale = T::ONE / T::from_f64((k.0 * k.1) as f64);
    super::for_each_run(dx, hw, |p, xs| {
        xs.fill(T::ZERO);
        let gs = &gy[p * l..(p + 1) * l];
        g.windows(|oy, ox, (r0, r1), (c0, c1)| {
            let v = gs[oy * g.ow + ox] * scale;
            for r in r0..r1 {
                for d in &mut xs[r * g.w + c0..r * g.w + c1] {
                    *d += v;
                }
            }
        });
    });
}

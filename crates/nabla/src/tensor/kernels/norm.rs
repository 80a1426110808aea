//! Batch-normalisation kernels over contiguous `[n, c, l]` data (`l` the product of the
//! trailing axes): per-channel statistics and gradient sums (one channel per task; each row's
//! terms in `T` over interleaved partial sums, the rows added in f64 in sample order: the same
//! bits on any thread count and tier), and the per-element passes in `T`, shared among threads
//! by `(sample, channel)` rows. Every loop is compiled for the active tier (`isa::vectorized`).

use super::rows::{part_sum, part_sums2};
use crate::isa::vectorized;
use crate::tensor::Float;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// The batch statistics a recorded batch normalisation keeps for its gradient: per-channel
/// mean and `1/√(var + eps)`, in f64.
#[derive(Debug, Clone, PartialEq)]
pub struct NormStats {
    /// Per-channel mean.
    pub mean: Vec<f64>,
    /// Per-channel `1/√(var + eps)`.
    pub invstd: Vec<f64>,
}

/// The layout `[n, c, l]` of a batch-normalised tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NormGeom {
    pub n: usize,
    pub c: usize,
    pub l: usize,
}

impl NormGeom {
    /// Values per channel.
    pub(crate) fn count(&self) -> usize {
        self.n * self.l
    }

    /// `f(channel)` for every channel, in parallel when the tensor is large.
    fn per_channel<R: Send>(&self, f: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
        if self.n * self.c * self.l < super::PAR_THRESHOLD || super::threads() < 2 {
            (0..self.c).map(f).collect()
        } else {
            (0..self.c).into_par_iter().map(f).collect()
        }
    }

    /// `f(channel, offset of the row, row of out)` for every `(sample, channel)` row.
    fn per_row<U: Send>(&self, out: &mut [U], f: impl Fn(usize, usize, &mut [U]) + Sync + Send) {
        let l = self.l.max(1);
        super::for_each_run(out, l, |r, o| f(r % self.c, r * l, o));
    }

    /// `Σ f(v)` over the values of channel `ch`: each sample's row by [`part_sum`], the rows
    /// added in f64 in sample order.
    #[inline(always)]
    fn sum<T: Float>(&self, x: &[T], ch: usize, f: impl Fn(T) -> T) -> f64 {
        let mut s = 0.0;
        for i in 0..self.n {
            let start = (i * self.c + ch) * self.l;
            s += part_sum(&x[start..start + self.l], &f);
        }
        s
    }
}

/// Per-channel mean and biased variance (two passes: the mean, then the squared deviations
/// from it, rounded to `T`).
pub(crate) fn stats<T: Float>(g: &NormGeom, x: &[T]) -> (Vec<f64>, Vec<f64>) {
    let m = g.count().max(1) as f64;
    g.per_channel(|ch| {
        vectorized(
            #[inline(always)]
            || {
                let mean = g.sum(x, ch, |v| v) / m;
                let mt = T::from_f64(mean);
                let var = g.sum(x, ch, |v| (v - mt) * (v - mt)) / m;
                (mean, var)
            },
        )
    })
    .into_iter()
    .unzip()
}

/// `y = x·scale[ch] + shift[ch]`, every element of `y` written.
pub(crate) fn affine<T: Float>(
    g: &NormGeom,
    x: &[T],
    scale: &[T],
    shift: &[T],
    y: &mut [MaybeUninit<T>],
) {
    g.per_row(y, |ch, at, out| {
        let (a, b, len) = (scale[ch], shift[ch], out.len());
        vectorized(
            #[inline(always)]
            || {
                for (o, v) in out.iter_mut().zip(&x[at..at + len]) {
                    o.write(*v * a + b);
                }
            },
        )
    });
}

/// Per-channel `Σ gy` and `Σ gy·x̂` with `x̂ = (x − mean)·invstd`, from one pass over each
/// row pair ([`part_sums2`]: `gy` and `gy·(x − mean)` in `T`; the scale by `invstd` in f64).
pub(crate) fn grad_sums<T: Float>(
    g: &NormGeom,
    gy: &[T],
    x: &[T],
    mean: &[f64],
    invstd: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    g.per_channel(|ch| {
        let mt = T::from_f64(mean[ch]);
        vectorized(
            #[inline(always)]
            || {
                let (mut sg, mut sgx) = (0.0, 0.0);
                for i in 0..g.n {
                    let at = (i * g.c + ch) * g.l;
                    let (gr, xr) = (&gy[at..at + g.l], &x[at..at + g.l]);
                    let (a, b) = part_sums2(gr, xr, |gv, xv| (gv, gv * (xv - mt)));
                    sg += a;
                    sgx += b;
                }
                (sg, sgx * invstd[ch])
            },
        )
    })
    .into_iter()
    .unzip()
}

/// `dx = k·(gy − Σgy/M − x̂·Σgy·x̂/M)` with `k = weight·invstd` per channel, every element
/// of `dx` written: per element `p·(gy − a) − q·(x − mean)` in `T`, the per-channel constants
/// `p = k`, `a = Σgy/M`, `q = k·invstd·Σgy·x̂/M` computed in f64.
#[allow(clippy::too_many_arguments)]
pub(crate) fn input_grad<T: Float>(
    g: &NormGeom,
    gy: &[T],
    x: &[T],
    mean: &[f64],
    invstd: &[f64],
    k: &[f64],
    (sg, sgx): (&[f64], &[f64]),
    dx: &mut [MaybeUninit<T>],
) {
    let m = g.count().max(1) as f64;
    g.per_row(dx, |ch, at, out| {
        let (p, a) = (T::from_f64(k[ch]), T::from_f64(sg[ch] / m));
        let q = T::from_f64(k[ch] * invstd[ch] * sgx[ch] / m);
        let mu = T::from_f64(mean[ch]);
        let len = out.len();
        let rows = gy[at..at + len].iter().zip(&x[at..at + len]);
        vectorized(
            #[inline(always)]
            || {
                for (o, (&gv, &xv)) in out.iter_mut().zip(rows) {
                    o.write(p * (gv - a) - q * (xv - mu));
                }
            },
        )
    });
}

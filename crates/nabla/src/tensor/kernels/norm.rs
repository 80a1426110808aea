//! Batch-normalisation kernels over contiguous `[n, c, l]` data (`l` the product of the
//! trailing axes): per-channel statistics and gradient sums (accumulated in f64, one channel
//! per task, each row in eight interleaved lanes and the rows in sample order: the same bits
//! on any thread count and tier), and the per-element passes, shared among threads by
//! `(sample, channel)` rows. Every loop is compiled for the active tier (`isa::vectorized`).

use super::rows::lane_sum;
use crate::isa::vectorized;
use crate::tensor::Float;
use rayon::prelude::*;

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
    fn per_row<T: Float>(&self, out: &mut [T], f: impl Fn(usize, usize, &mut [T]) + Sync + Send) {
        let l = self.l.max(1);
        super::for_each_run(out, l, |r, o| f(r % self.c, r * l, o));
    }

    /// `Σ f(v)` over the values of channel `ch`, in f64: each sample's row in eight lanes
    /// ([`lane_sum`]), the rows added in sample order.
    #[inline(always)]
    fn sum<T: Float>(&self, x: &[T], ch: usize, f: impl Fn(usize, T) -> f64) -> f64 {
        let mut s = 0.0;
        for i in 0..self.n {
            let start = (i * self.c + ch) * self.l;
            s += lane_sum(&x[start..start + self.l], |v, j| f(start + j, v));
        }
        s
    }
}

/// Per-channel mean and biased variance (two passes: the mean, then the squared deviations).
pub(crate) fn stats<T: Float>(g: &NormGeom, x: &[T]) -> (Vec<f64>, Vec<f64>) {
    let m = g.count().max(1) as f64;
    g.per_channel(|ch| {
        vectorized(
            #[inline(always)]
            || {
                let mean = g.sum(x, ch, |_, v| v.to_f64()) / m;
                let var = g.sum(x, ch, |_, v| (v.to_f64() - mean).powi(2)) / m;
                (mean, var)
            },
        )
    })
    .into_iter()
    .unzip()
}

/// `y = x·scale[ch] + shift[ch]`, every element written.
pub(crate) fn affine<T: Float>(g: &NormGeom, x: &[T], scale: &[T], shift: &[T], y: &mut [T]) {
    g.per_row(y, |ch, at, out| {
        let (a, b, len) = (scale[ch], shift[ch], out.len());
        vectorized(
            #[inline(always)]
            || {
                for (o, v) in out.iter_mut().zip(&x[at..at + len]) {
                    *o = *v * a + b;
                }
            },
        )
    });
}

/// Per-channel `Σ gy` and `Σ gy·x̂` with `x̂ = (x − mean)·invstd`.
pub(crate) fn grad_sums<T: Float>(
    g: &NormGeom,
    gy: &[T],
    x: &[T],
    mean: &[f64],
    invstd: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    g.per_channel(|ch| {
        let (m, s) = (mean[ch], invstd[ch]);
        vectorized(
            #[inline(always)]
            || {
                let sg = g.sum(gy, ch, |_, v| v.to_f64());
                let mut sgx = 0.0;
                for i in 0..g.n {
                    let at = (i * g.c + ch) * g.l;
                    let (gr, xr) = (&gy[at..at + g.l], &x[at..at + g.l]);
                    sgx += pair_lane_sum(gr, xr, |a, b| a.to_f64() * (b.to_f64() - m) * s);
                }
                (sg, sgx)
            },
        )
    })
    .into_iter()
    .unzip()
}

/// `Σ f(a[i], b[i])` in f64 over eight interleaved lanes, added as [`lane_sum`] adds them.
#[inline(always)]
fn pair_lane_sum<T: Float>(a: &[T], b: &[T], f: impl Fn(T, T) -> f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let (mut ca, mut cb) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..8 {
            acc[l] += f(x[l], y[l]);
        }
    }
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| f(x, y))
        .sum();
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `dx = k·(gy − Σgy/M − x̂·Σgy·x̂/M)` with `k = weight·invstd` per channel, every element
/// written.
#[allow(clippy::too_many_arguments)]
pub(crate) fn input_grad<T: Float>(
    g: &NormGeom,
    gy: &[T],
    x: &[T],
    mean: &[f64],
    invstd: &[f64],
    k: &[f64],
    (sg, sgx): (&[f64], &[f64]),
    dx: &mut [T],
) {
    let m = g.count().max(1) as f64;
    g.per_row(dx, |ch, at, out| {
        let (mu, s, kk) = (mean[ch], invstd[ch], k[ch]);
        let (a, b) = (sg[ch] / m, sgx[ch] / m);
        let len = out.len();
        let rows = gy[at..at + len].iter().zip(&x[at..at + len]);
        vectorized(
            #[inline(always)]
            || {
                for (o, (gv, xv)) in out.iter_mut().zip(rows) {
                    let xhat = (xv.to_f64() - mu) * s;
                    *o = T::from_f64(kk * (gv.to_f64() - a - xhat * b));
                }
            },
        )
    });
}

//! Pooling kernels over contiguous NCHW data, one `h × w` plane at a time (planes shared among
//! threads above [`PAR_THRESHOLD`](super::PAR_THRESHOLD) values; each plane's sums run in one
//! fixed order, so results do not depend on the thread count).

use super::conv::PoolOptions;
use crate::error::{Error, Result};
use crate::tensor::shape::fmt_shape;
use crate::tensor::Float;
use rayon::prelude::*;
use std::mem::MaybeUninit;

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
        if x[2] == 0 || x[3] == 0 {
            return Err(Error::shape(
                op,
                format!(
                    "input {}: the planes are empty (a window would hold no input value)",
                    fmt_shape(x)
                ),
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
pub(crate) fn max_pool<T: Float>(
    g: &PoolGeom,
    x: &[T],
    y: &mut [MaybeUninit<T>],
    arg: &mut [MaybeUninit<usize>],
) {
    let (hw, l) = (g.h * g.w, g.oh * g.ow);
    let tier = crate::isa::active();
    if y.len() < super::PAR_THRESHOLD || super::threads() < 2 {
        return max_pool_planes(g, x, y, arg, tier);
    }
    let k = (super::PAR_THRESHOLD / 16 / l.max(1)).max(1);
    y.par_chunks_mut(l * k)
        .zip(arg.par_chunks_mut(l * k))
        .enumerate()
        .for_each(|(t, (ys, args))| {
            max_pool_planes(g, &x[t * k * hw..], ys, args, tier);
        });
}

/// [`max_pool`] of the first `y.len() / (oh·ow)` planes of `x`, on this thread with `tier`'s
/// kernels: the one-pass convolution and pooling calls it for each sample's planes as soon as
/// the convolution has written them (while they are still in cache).
pub(crate) fn max_pool_planes<T: Float>(
    g: &PoolGeom,
    x: &[T],
    y: &mut [MaybeUninit<T>],
    arg: &mut [MaybeUninit<usize>],
    tier: crate::isa::Isa,
) {
    let (hw, l) = (g.h * g.w, g.oh * g.ow);
    if l == 0 {
        return;
    }
    let o = g.opts;
    let plain2 = o.kernel == (2, 2) && o.stride == (2, 2) && o.padding == (0, 0);
    let (rows, cols): (Vec<_>, Vec<_>) = if plain2 {
        (Vec::new(), Vec::new())
    } else {
        (
            (0..g.oh)
                .map(|i| PoolGeom::span(i, o.kernel.0, o.stride.0, o.padding.0, g.h))
                .collect(),
            (0..g.ow)
                .map(|i| PoolGeom::span(i, o.kernel.1, o.stride.1, o.padding.1, g.w))
                .collect(),
        )
    };
    let later = |v: T, best: T| (v > best) | v.is_nan();
    for (p, (ys, args)) in y.chunks_mut(l).zip(arg.chunks_mut(l)).enumerate() {
        let plane = &x[p * hw..(p + 1) * hw];
        if plain2 {
            for oy in 0..g.oh {
                let (r0, r1) = (
                    &plane[2 * oy * g.w..][..2 * g.ow],
                    &plane[(2 * oy + 1) * g.w..][..2 * g.ow],
                );
                let (yr, ar) = (&mut ys[oy * g.ow..][..g.ow], &mut args[oy * g.ow..][..g.ow]);
                max2x2_row(r0, r1, (2 * oy * g.w, g.w), yr, ar, tier);
            }
            continue;
        }
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
                ys[oy * g.ow + ox].write(best);
                args[oy * g.ow + ox].write(at);
            }
        }
    }
}

/// One output row of the 2×2, stride-2 window over the input rows `r0` and `r1` (`2·ow` values
/// each, `r0` starting at `base` in a plane `w` wide): the maxima into `yr`, their indices into
/// `ar`. f32 rows of at least 4 outputs run in vector code, 4 outputs at a time ([`simd`]; the
/// last block overlaps the one before it and writes the same values again); everything else,
/// and any block holding a NaN, runs [`max2x2_exact`]. Both give the same values and indices.
/// `tier` is the instruction-set tier to use (the active one, passed in so that a test can
/// pick one without changing the process-wide limit under other threads).
fn max2x2_row<T: Float>(
    r0: &[T],
    r1: &[T],
    (base, w): (usize, usize),
    yr: &mut [MaybeUninit<T>],
    ar: &mut [MaybeUninit<usize>],
    tier: crate::isa::Isa,
) {
    let ow = yr.len();
    #[cfg(target_arch = "x86_64")]
    if let (Some(p), Some(q), true) = (
        T::as_f32(r0),
        T::as_f32(r1),
        simd::usable(ow, base, w, tier),
    ) {
        let y = T::as_f32_uninit(yr).expect("T is f32: its inputs are");
        let mut ox = 0;
        while ox < ow {
            let at = ox.min(ow - 4);
            // SAFETY: `usable` checked AVX2 and that the indices fit; `at + 4 ≤ ow`, so the
            // block reads `2·at .. 2·at + 8 ≤ 2·ow` values of each row (their lengths, sliced
            // by the caller) and writes `at .. at + 4` of `y` and `ar` (both `ow` long).
            let done = unsafe {
                simd::block4(
                    p.as_ptr().add(2 * at),
                    q.as_ptr().add(2 * at),
                    w,
                    base + 2 * at,
                    y.as_mut_ptr().add(at).cast::<f32>(),
                    ar.as_mut_ptr().add(at).cast::<usize>(),
                )
            };
            if !done {
                // a NaN: the rest of the row one window at a time
                return max2x2_exact(r0, r1, (base, w), at..ow, yr, ar);
            }
            ox = at + 4;
        }
        return;
    }
    max2x2_exact(r0, r1, (base, w), 0..ow, yr, ar)
}

/// Outputs `range` of one row of [`max2x2_row`], one at a time: the first maximum in row-major
/// window order, a NaN winning over any number (the first NaN), the value being that element
/// itself. Without data-dependent branches (on random data a branch per comparison
/// mispredicts half the time: an earlier loop with them ran at a tenth of a ReLU's speed): the
/// index is the first of the four equal to the maximum — or, with a NaN, the first NaN —
/// computed in integers.
fn max2x2_exact<T: Float>(
    r0: &[T],
    r1: &[T],
    (base, w): (usize, usize),
    range: std::ops::Range<usize>,
    yr: &mut [MaybeUninit<T>],
    ar: &mut [MaybeUninit<usize>],
) {
    for ox in range {
        let c = 2 * ox;
        let four = [r0[c], r0[c + 1], r1[c], r1[c + 1]];
        let nan = four.iter().fold(false, |n, v| n | v.is_nan());
        let m = four[0].max(four[1]).max(four[2].max(four[3]));
        let miss = |v: T| usize::from(!((v == m && !nan) || v.is_nan()));
        let k = miss(four[0]) * (1 + miss(four[1]) * (1 + miss(four[2])));
        yr[ox].write(four[k]);
        ar[ox].write(base + c + (k & 1) + (k >> 1) * w);
    }
}

/// Vector code for 2×2, stride-2 max pooling of f32 rows.
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// Whether [`block4`] may run: AVX2 in `tier` (which the CPU runs), rows of at least
    /// 4 outputs, and every index of the row small enough for 32-bit offsets.
    pub(super) fn usable(ow: usize, base: usize, w: usize, tier: crate::isa::Isa) -> bool {
        ow >= 4
            && w < (i32::MAX as usize) / 2
            && base.checked_add(2 * ow + w).is_some()
            && tier >= crate::isa::Isa::Avx2
            && crate::isa::detected() >= tier
    }

    /// Four outputs from 8 values of each input row (`r0`, `r1`): maxima into `y`, indices
    /// `first + 2i + k` into `arg` (`k` = 0, 1, `w`, `w + 1`: the first of the window's four
    /// values, row-major, equal to the maximum). Returns `false`, writing nothing, if a NaN is
    /// among the 16 values.
    ///
    /// # Safety
    /// AVX2 must be available; `r0` and `r1` must be readable for 8 values, `y` and `arg`
    /// writable for 4.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn block4(
        r0: *const f32,
        r1: *const f32,
        w: usize,
        first: usize,
        y: *mut f32,
        arg: *mut usize,
    ) -> bool {
        let (v0, v1) = (_mm256_loadu_ps(r0), _mm256_loadu_ps(r1));
        let nan = _mm256_or_ps(
            _mm256_cmp_ps::<_CMP_UNORD_Q>(v0, v0),
            _mm256_cmp_ps::<_CMP_UNORD_Q>(v1, v1),
        );
        if _mm256_movemask_ps(nan) != 0 {
            return false;
        }
        let even = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
        let odd = _mm256_setr_epi32(1, 3, 5, 7, 1, 3, 5, 7);
        let half = |v: __m256, i: __m256i| _mm256_castps256_ps128(_mm256_permutevar8x32_ps(v, i));
        let (a, b, d, e) = (half(v0, even), half(v0, odd), half(v1, even), half(v1, odd));
        // Ties keep the earlier value, as the exact loop does.
        let ab = _mm_blendv_ps(a, b, _mm_cmpgt_ps(b, a));
        let de = _mm_blendv_ps(d, e, _mm_cmpgt_ps(e, d));
        let m = _mm_blendv_ps(ab, de, _mm_cmpgt_ps(de, ab));
        // The offset of the first of the four equal to the maximum: set from the last to
        // the first, so that the first match is written last.
        let w = w as i32;
        let pick = |k: __m128i, v: __m128, off: i32| {
            _mm_blendv_epi8(k, _mm_set1_epi32(off), _mm_castps_si128(_mm_cmpeq_ps(v, m)))
        };
        let k = _mm_set1_epi32(w + 1);
        let k = pick(pick(pick(k, d, w), b, 1), a, 0);
        let k = _mm_add_epi32(k, _mm_setr_epi32(0, 2, 4, 6));
        let idx = _mm256_add_epi64(_mm256_cvtepi32_epi64(k), _mm256_set1_epi64x(first as i64));
        _mm_storeu_ps(y, m);
        _mm256_storeu_si256(arg as *mut __m256i, idx);
        true
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The first maximum of each window by plain comparisons, a NaN winning (the first NaN):
    /// the definition both row paths must meet.
    /// Outputs holding values no kernel writes (a NaN payload of its own, `usize::MAX`), so
    /// that an element left unwritten fails the comparison.
    #[allow(clippy::type_complexity)]
    fn unwritten(n: usize) -> (Vec<MaybeUninit<f32>>, Vec<MaybeUninit<usize>>) {
        (
            vec![MaybeUninit::new(f32::from_bits(0x7fc0_1234)); n],
            vec![MaybeUninit::new(usize::MAX); n],
        )
    }

    fn read<T: Copy>(v: &[MaybeUninit<T>]) -> Vec<T> {
        // SAFETY: every element was initialised by `unwritten`.
        v.iter().map(|x| unsafe { x.assume_init() }).collect()
    }

    fn reference(r0: &[f32], r1: &[f32], (base, w): (usize, usize)) -> (Vec<f32>, Vec<usize>) {
        (0..r0.len() / 2)
            .map(|ox| {
                let c = 2 * ox;
                let four = [(r0[c], 0), (r0[c + 1], 1), (r1[c], w), (r1[c + 1], w + 1)];
                let (mut best, mut at) = four[0];
                for &(v, k) in &four[1..] {
                    if !best.is_nan() && (v > best || v.is_nan()) {
                        (best, at) = (v, k);
                    }
                }
                (best, base + c + at)
            })
            .unzip()
    }

    /// The vector rows and the branch-free loop give the reference's values and indices, bit
    /// for bit, on every tier: rows of 1–19 outputs, values drawn from a few levels so that
    /// ties are common, ±0, and NaNs in some rows.
    #[test]
    fn max2x2_rows_match_the_reference() {
        let levels = [-1.5f32, -0.0, 0.0, 0.25, 2.0, f32::NAN];
        let mut state = 12345u64;
        let mut draw = |nan: bool| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let k = (state >> 33) as usize % if nan { 6 } else { 5 };
            levels[k]
        };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        // The tier is passed in, never set process-wide: other tests run on other threads
        // meanwhile (setting it here once made a product test compare two tiers' bits).
        let active = crate::isa::active();
        for tier in [crate::isa::Isa::Scalar, crate::isa::Isa::Avx2] {
            if tier > active {
                continue;
            }
            for ow in 1..20 {
                for trial in 0..40 {
                    let nan = trial % 8 == 7;
                    let w = 2 * ow + trial % 3;
                    let r0: Vec<f32> = (0..2 * ow).map(|_| draw(nan)).collect();
                    let r1: Vec<f32> = (0..2 * ow).map(|_| draw(nan)).collect();
                    let base = 2 * w * trial;
                    let (ye, ae) = reference(&r0, &r1, (base, w));
                    let (mut y, mut a) = unwritten(ow);
                    max2x2_row(&r0, &r1, (base, w), &mut y, &mut a, tier);
                    let (y, a) = (read(&y), read(&a));
                    assert_eq!(bits(&y), bits(&ye), "{tier:?} ow {ow} trial {trial}");
                    assert_eq!(a, ae, "{tier:?} ow {ow} trial {trial}");
                    let (mut y, mut a) = unwritten(ow);
                    max2x2_exact(&r0, &r1, (base, w), 0..ow, &mut y, &mut a);
                    let (y, a) = (read(&y), read(&a));
                    assert_eq!(bits(&y), bits(&ye), "exact loop, ow {ow} trial {trial}");
                    assert_eq!(a, ae, "exact loop, ow {ow} trial {trial}");
                }
            }
        }
    }
}

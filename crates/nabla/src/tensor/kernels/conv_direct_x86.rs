//! The [`Lanes`] of the direct convolution kernels on x86-64: AVX-512F (16 lanes, masks in
//! `k` registers) and AVX2 with FMA (8 lanes, partial vectors through `vmaskmovps`).

use super::{ConvGeom, Lanes, Plan};
use std::arch::x86_64::*;

/// AVX-512F: 16 lanes, lane masks in a `k` register.
pub(super) struct Avx512;
impl Lanes for Avx512 {
    const LANES: usize = 16;
    const WIDE: usize = 4;
    type V = __m512;
    type M = u16;
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        _mm512_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn load_live(p: *const f32, m: u16) -> __m512 {
        _mm512_maskz_loadu_ps(m, p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        _mm512_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn store_live(p: *mut f32, m: u16, v: __m512) {
        _mm512_mask_storeu_ps(p, m, v)
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m512, b: __m512, c: __m512) -> __m512 {
        _mm512_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        _mm512_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: __m512, b: __m512) -> __m512 {
        _mm512_sub_ps(a, b)
    }
    #[inline(always)]
    unsafe fn live(n: usize) -> u16 {
        if n >= 16 {
            u16::MAX
        } else {
            (1u16 << n) - 1
        }
    }
    #[inline(always)]
    unsafe fn sum(v: __m512) -> f32 {
        _mm512_reduce_add_ps(v)
    }
    #[inline(always)]
    unsafe fn flag_nonfinite(acc: __m512, v: __m512) -> __m512 {
        _mm512_castsi512_ps(_mm512_or_si512(
            _mm512_castps_si512(acc),
            _mm512_castps_si512(_mm512_sub_ps(v, v)),
        ))
    }
    #[inline(always)]
    unsafe fn transpose8(src: *const f32, ss: usize, dst: *mut f32, ds: usize) -> bool {
        transpose8(src, ss, dst, ds)
    }
    #[inline(always)]
    unsafe fn any_nan(v: __m512) -> bool {
        _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v) != 0
    }
    #[target_feature(enable = "avx512f")]
    unsafe fn pad(p: &Plan, g: &ConvGeom, x: &[f32], buf: &mut [f32]) -> bool {
        pad_planes::<Self>(p, g, x, buf)
    }
    #[target_feature(enable = "avx512f")]
    #[inline(never)]
    unsafe fn wgt_tile<const R: usize, const Q: usize, const MASKED: bool>(
        items: &[(usize, u16)],
        t: &super::WgtTile,
        acc: *mut __m512,
    ) {
        super::wgt_tile::<Self, R, Q, MASKED>(items, t, acc)
    }
}

/// AVX2 with FMA: 8 lanes; a partial vector through `vmaskmovps` (a full one through
/// plain loads and stores).
pub(super) struct Avx2;
impl Lanes for Avx2 {
    const LANES: usize = 8;
    const WIDE: usize = 2;
    type V = __m256;
    type M = (bool, __m256i);
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        _mm256_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        _mm256_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn load_live(p: *const f32, (full, m): (bool, __m256i)) -> __m256 {
        if full {
            _mm256_loadu_ps(p)
        } else {
            _mm256_maskload_ps(p, m)
        }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        _mm256_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn store_live(p: *mut f32, (full, m): (bool, __m256i), v: __m256) {
        if full {
            _mm256_storeu_ps(p, v)
        } else {
            _mm256_maskstore_ps(p, m, v)
        }
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m256, b: __m256, c: __m256) -> __m256 {
        _mm256_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        _mm256_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: __m256, b: __m256) -> __m256 {
        _mm256_sub_ps(a, b)
    }
    #[inline(always)]
    unsafe fn live(n: usize) -> (bool, __m256i) {
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let n = n.min(8) as i32;
        (n == 8, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane))
    }
    #[inline(always)]
    unsafe fn sum(v: __m256) -> f32 {
        // Fixed order: the two halves, then pairs, then the last two lanes.
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
    }
    #[inline(always)]
    unsafe fn flag_nonfinite(acc: __m256, v: __m256) -> __m256 {
        _mm256_or_ps(acc, _mm256_sub_ps(v, v))
    }
    #[inline(always)]
    unsafe fn transpose8(src: *const f32, ss: usize, dst: *mut f32, ds: usize) -> bool {
        transpose8(src, ss, dst, ds)
    }
    #[inline(always)]
    unsafe fn any_nan(v: __m256) -> bool {
        _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v)) != 0
    }
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pad(p: &Plan, g: &ConvGeom, x: &[f32], buf: &mut [f32]) -> bool {
        pad_planes::<Self>(p, g, x, buf)
    }
    #[target_feature(enable = "avx2,fma")]
    #[inline(never)]
    unsafe fn wgt_tile<const R: usize, const Q: usize, const MASKED: bool>(
        items: &[(usize, (bool, __m256i))],
        t: &super::WgtTile,
        acc: *mut __m256,
    ) {
        super::wgt_tile::<Self, R, Q, MASKED>(items, t, acc)
    }
}

/// An 8 × 8 block transposed through AVX registers (AVX-512 CPUs run AVX2 too): `dst[j·ds +
/// i] = src[i·ss + j]`. Returns whether every value is finite.
///
/// # Safety
/// AVX2 exists; `src` holds 8 rows of 8 values `ss` apart, `dst` 8 rows `ds` apart.
#[inline(always)]
unsafe fn transpose8(src: *const f32, ss: usize, dst: *mut f32, ds: usize) -> bool {
    let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * ss)));
    let mut flags = _mm256_setzero_ps();
    for v in r {
        flags = _mm256_or_ps(flags, _mm256_sub_ps(v, v));
    }
    let o = super::super::operand::transpose_8x8(r);
    for (j, v) in o.into_iter().enumerate() {
        _mm256_storeu_ps(dst.add(j * ds), v);
    }
    _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(flags, flags)) == 0
}

/// [`Plan::pad`] with the tier's vectors: per row, the left and right borders by one masked
/// store each (borders up to a vector wide; wider ones in a loop) and the row's values by
/// whole and masked vector moves; the top and bottom borders and the slack by `fill`.
/// Returns whether every value of `x` is finite (flagged on the way, in the same loads).
///
/// # Safety
/// The tier's instructions exist; `x` holds `c·h·w` values and `buf` `p.sample`.
#[inline(always)]
unsafe fn pad_planes<S: Lanes>(p: &Plan, g: &ConvGeom, x: &[f32], buf: &mut [f32]) -> bool {
    let (ph, pw) = g.opts.padding;
    let (hp, wp, w) = (p.hp, p.wp, g.w);
    let (planes, slack) = buf[..p.sample].split_at_mut(g.c * hp * wp);
    let zero = S::splat(0.0);
    let mut flags = zero;
    let (border, tail) = (S::live(pw), S::live(w % S::LANES));
    for (plane, src) in planes
        .chunks_exact_mut(hp * wp)
        .zip(x.chunks_exact(g.h * w))
    {
        let (top, rest) = plane.split_at_mut(ph * wp);
        top.fill(0.0);
        let (body, bottom) = rest.split_at_mut(g.h * wp);
        for (row, s) in body.chunks_exact_mut(wp).zip(src.chunks_exact(w)) {
            let (d, s) = (row.as_mut_ptr(), s.as_ptr());
            if pw <= S::LANES {
                // The right border ends the row: `pw + w + pw = wp` values.
                S::store_live(d, border, zero);
                S::store_live(d.add(pw + w), border, zero);
            } else {
                row[..pw].fill(0.0);
                row[pw + w..].fill(0.0);
            }
            let mut i = 0;
            while i + S::LANES <= w {
                let v = S::load(s.add(i));
                flags = S::flag_nonfinite(flags, v);
                S::store(d.add(pw + i), v);
                i += S::LANES;
            }
            if i < w {
                let v = S::load_live(s.add(i), tail);
                flags = S::flag_nonfinite(flags, v);
                S::store_live(d.add(pw + i), tail, v);
            }
        }
        bottom.fill(0.0);
    }
    slack.fill(0.0);
    !S::any_nan(flags)
}

//! The column-wise softmax and score gradients of attention's tiles (`attention.rs`) in f32
//! with AVX-512 (one zmm per key: sixteen queries) and AVX2 (two ymm per key). Written with
//! intrinsics because the compiler left the generic sixteen-lane loops scalar (22 ns per key
//! of sixteen lanes against ~2 here). `exp` is [`crate::tensor::float::exp_f32`]'s sequence of
//! operations lane by lane (no fused multiply-adds), so the two tiers give the same bits as
//! each other and as the scalar function.

#![cfg(target_arch = "x86_64")]

use crate::tensor::float::exp_consts::{LN2_HI, LN2_LO, LOG2E, P};
use std::arch::x86_64::*;

/// Sixteen queries per key.
const LANES: usize = 16;

/// Asserts that `cols` keys of sixteen lanes at `j·ld + off` lie inside a buffer of `len`.
fn check(len: usize, (ld, off, cols): (usize, usize, usize)) {
    let fits = cols == 0
        || (cols - 1)
            .checked_mul(ld)
            .and_then(|e| e.checked_add(off + LANES))
            .is_some_and(|e| e <= len);
    assert!(fits, "internal: attention tile outside its buffer");
}

/// `exp_f32` on sixteen lanes.
#[inline]
#[target_feature(enable = "avx512f")]
fn exp512(x: __m512) -> __m512 {
    let c = _mm512_min_ps(
        _mm512_set1_ps(88.72),
        _mm512_max_ps(_mm512_set1_ps(-104.0), x),
    );
    let f = _mm512_add_ps(_mm512_mul_ps(c, _mm512_set1_ps(LOG2E)), _mm512_set1_ps(0.5));
    let f = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(f, f), f);
    let t = _mm512_cvttps_epi32(f);
    let below = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(f, _mm512_cvtepi32_ps(t));
    let n = _mm512_mask_sub_epi32(t, below, t, _mm512_set1_epi32(1));
    let nf = _mm512_cvtepi32_ps(n);
    let r = _mm512_sub_ps(
        _mm512_sub_ps(c, _mm512_mul_ps(nf, _mm512_set1_ps(LN2_HI))),
        _mm512_mul_ps(nf, _mm512_set1_ps(LN2_LO)),
    );
    let mut p = _mm512_set1_ps(P[0]);
    for a in &P[1..] {
        p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(*a));
    }
    let e = _mm512_add_ps(
        _mm512_add_ps(_mm512_mul_ps(p, _mm512_mul_ps(r, r)), r),
        _mm512_set1_ps(1.0),
    );
    let n1 = _mm512_srai_epi32::<1>(n);
    let n2 = _mm512_sub_epi32(n, n1);
    let pow = |k: __m512i| {
        _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
            k,
            _mm512_set1_epi32(127),
        )))
    };
    let y = _mm512_mul_ps(_mm512_mul_ps(e, pow(n1)), pow(n2));
    let over = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, _mm512_set1_ps(88.72));
    _mm512_mask_mov_ps(y, over, _mm512_set1_ps(f32::INFINITY))
}

/// `exp_f32` on eight lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn exp256(x: __m256) -> __m256 {
    let c = _mm256_min_ps(
        _mm256_set1_ps(88.72),
        _mm256_max_ps(_mm256_set1_ps(-104.0), x),
    );
    let f = _mm256_add_ps(_mm256_mul_ps(c, _mm256_set1_ps(LOG2E)), _mm256_set1_ps(0.5));
    let f = _mm256_and_ps(f, _mm256_cmp_ps::<_CMP_ORD_Q>(f, f));
    let t = _mm256_cvttps_epi32(f);
    let below = _mm256_cmp_ps::<_CMP_LT_OQ>(f, _mm256_cvtepi32_ps(t));
    // A true comparison is all ones: −1 as an integer.
    let n = _mm256_add_epi32(t, _mm256_castps_si256(below));
    let nf = _mm256_cvtepi32_ps(n);
    let r = _mm256_sub_ps(
        _mm256_sub_ps(c, _mm256_mul_ps(nf, _mm256_set1_ps(LN2_HI))),
        _mm256_mul_ps(nf, _mm256_set1_ps(LN2_LO)),
    );
    let mut p = _mm256_set1_ps(P[0]);
    for a in &P[1..] {
        p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(*a));
    }
    let e = _mm256_add_ps(
        _mm256_add_ps(_mm256_mul_ps(p, _mm256_mul_ps(r, r)), r),
        _mm256_set1_ps(1.0),
    );
    let n1 = _mm256_srai_epi32::<1>(n);
    let n2 = _mm256_sub_epi32(n, n1);
    let pow = |k: __m256i| {
        _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            k,
            _mm256_set1_epi32(127),
        )))
    };
    let y = _mm256_mul_ps(_mm256_mul_ps(e, pow(n1)), pow(n2));
    let over = _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(88.72));
    _mm256_blendv_ps(y, _mm256_set1_ps(f32::INFINITY), over)
}

/// `attention::softmax_columns` in f32 with AVX-512.
///
/// # Safety
/// The CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn softmax_avx512(
    buf: &mut [f32],
    at: (usize, usize, usize),
    vis: &[u32; LANES],
    scale: f32,
) {
    check(buf.len(), at);
    let (ld, off, cols) = at;
    let b = buf.as_mut_ptr().wrapping_add(off);
    // SAFETY (of every access below): key j's sixteen values lie at b + j·ld, inside `buf`
    // (checked above), for j < cols; `vis` holds sixteen u32s.
    unsafe {
        let visv = _mm512_loadu_si512(vis.as_ptr().cast());
        let seen = |j: usize| _mm512_cmpgt_epu32_mask(visv, _mm512_set1_epi32(j as i32));
        let sc = _mm512_set1_ps(scale);
        let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
        for j in 0..cols {
            let c = _mm512_loadu_ps(b.add(j * ld));
            let v = _mm512_mask_mul_ps(_mm512_set1_ps(f32::NEG_INFINITY), seen(j), c, sc);
            m = _mm512_max_ps(m, v);
        }
        let mut sum = _mm512_setzero_ps();
        for j in 0..cols {
            let p = b.add(j * ld);
            let x = _mm512_sub_ps(_mm512_mul_ps(_mm512_loadu_ps(p), sc), m);
            let e = _mm512_maskz_mov_ps(seen(j), exp512(x));
            _mm512_storeu_ps(p, e);
            sum = _mm512_add_ps(sum, e);
        }
        let inv = _mm512_div_ps(_mm512_set1_ps(1.0), sum);
        for j in 0..cols {
            let p = b.add(j * ld);
            // A hidden key stays exactly 0 even where `inv` is NaN (a row of −∞ only).
            _mm512_storeu_ps(p, _mm512_maskz_mul_ps(seen(j), _mm512_loadu_ps(p), inv));
        }
    }
}

/// `attention::score_gradients` in f32 with AVX-512.
///
/// # Safety
/// The CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn score_gradients_avx512(
    p: &[f32],
    dp: &mut [f32],
    at: (usize, usize, usize),
    vis: &[u32; LANES],
    scale: f32,
) {
    check(p.len(), at);
    check(dp.len(), at);
    let (ld, off, cols) = at;
    let (pb, db) = (
        p.as_ptr().wrapping_add(off),
        dp.as_mut_ptr().wrapping_add(off),
    );
    // SAFETY: as in `softmax_avx512`, for both buffers.
    unsafe {
        let visv = _mm512_loadu_si512(vis.as_ptr().cast());
        let seen = |j: usize| _mm512_cmpgt_epu32_mask(visv, _mm512_set1_epi32(j as i32));
        let mut dot = _mm512_setzero_ps();
        for j in 0..cols {
            let (pv, dv) = (
                _mm512_loadu_ps(pb.add(j * ld)),
                _mm512_loadu_ps(db.add(j * ld)),
            );
            dot = _mm512_add_ps(dot, _mm512_maskz_mul_ps(seen(j), pv, dv));
        }
        let sc = _mm512_set1_ps(scale);
        for j in 0..cols {
            let (pv, d) = (_mm512_loadu_ps(pb.add(j * ld)), db.add(j * ld));
            let v = _mm512_mul_ps(
                _mm512_mul_ps(sc, pv),
                _mm512_sub_ps(_mm512_loadu_ps(d), dot),
            );
            _mm512_storeu_ps(d, _mm512_maskz_mov_ps(seen(j), v));
        }
    }
}

/// The two halves' lane masks of key `j`: all ones where `j < vis`.
#[inline]
#[target_feature(enable = "avx2")]
fn seen256(vis: [__m256i; 2], j: usize) -> [__m256; 2] {
    let jv = _mm256_set1_epi32(j as i32);
    vis.map(|v| _mm256_castsi256_ps(_mm256_cmpgt_epi32(v, jv)))
}

/// `attention::softmax_columns` in f32 with AVX2 (`vis` below 2³¹, which `attention` checks).
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn softmax_avx2(
    buf: &mut [f32],
    at: (usize, usize, usize),
    vis: &[u32; LANES],
    scale: f32,
) {
    check(buf.len(), at);
    let (ld, off, cols) = at;
    let b = buf.as_mut_ptr().wrapping_add(off);
    // SAFETY: as in `softmax_avx512`.
    unsafe {
        let visv = [0, 8].map(|h| _mm256_loadu_si256(vis.as_ptr().add(h).cast()));
        let sc = _mm256_set1_ps(scale);
        let ninf = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut m = [ninf; 2];
        for j in 0..cols {
            let seen = seen256(visv, j);
            for h in 0..2 {
                let c = _mm256_mul_ps(_mm256_loadu_ps(b.add(j * ld + 8 * h)), sc);
                m[h] = _mm256_max_ps(m[h], _mm256_blendv_ps(ninf, c, seen[h]));
            }
        }
        let mut sum = [_mm256_setzero_ps(); 2];
        for j in 0..cols {
            let seen = seen256(visv, j);
            for h in 0..2 {
                let p = b.add(j * ld + 8 * h);
                let x = _mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(p), sc), m[h]);
                let e = _mm256_and_ps(exp256(x), seen[h]);
                _mm256_storeu_ps(p, e);
                sum[h] = _mm256_add_ps(sum[h], e);
            }
        }
        let inv = sum.map(|s| _mm256_div_ps(_mm256_set1_ps(1.0), s));
        for j in 0..cols {
            let seen = seen256(visv, j);
            for h in 0..2 {
                let p = b.add(j * ld + 8 * h);
                let v = _mm256_mul_ps(_mm256_loadu_ps(p), inv[h]);
                _mm256_storeu_ps(p, _mm256_and_ps(v, seen[h]));
            }
        }
    }
}

/// `attention::score_gradients` in f32 with AVX2 (`vis` below 2³¹).
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn score_gradients_avx2(
    p: &[f32],
    dp: &mut [f32],
    at: (usize, usize, usize),
    vis: &[u32; LANES],
    scale: f32,
) {
    check(p.len(), at);
    check(dp.len(), at);
    let (ld, off, cols) = at;
    let (pb, db) = (
        p.as_ptr().wrapping_add(off),
        dp.as_mut_ptr().wrapping_add(off),
    );
    // SAFETY: as in `softmax_avx512`, for both buffers.
    unsafe {
        let visv = [0, 8].map(|h| _mm256_loadu_si256(vis.as_ptr().add(h).cast()));
        let mut dot = [_mm256_setzero_ps(); 2];
        for j in 0..cols {
            let seen = seen256(visv, j);
            for h in 0..2 {
                let at = j * ld + 8 * h;
                let pd = _mm256_mul_ps(_mm256_loadu_ps(pb.add(at)), _mm256_loadu_ps(db.add(at)));
                dot[h] = _mm256_add_ps(dot[h], _mm256_and_ps(pd, seen[h]));
            }
        }
        let sc = _mm256_set1_ps(scale);
        for j in 0..cols {
            let seen = seen256(visv, j);
            for h in 0..2 {
                let at = j * ld + 8 * h;
                let d = db.add(at);
                let v = _mm256_mul_ps(
                    _mm256_mul_ps(sc, _mm256_loadu_ps(pb.add(at))),
                    _mm256_sub_ps(_mm256_loadu_ps(d), dot[h]),
                );
                _mm256_storeu_ps(d, _mm256_and_ps(v, seen[h]));
            }
        }
    }
}

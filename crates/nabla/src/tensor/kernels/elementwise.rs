//! Element-wise kernels: unary maps and binary maps with NumPy broadcasting, reading strided
//! inputs directly and appending to an output buffer the caller allocated. Each loop runs
//! compiled for the active instruction-set tier ([`vectorized`]); the arithmetic is the
//! caller's closure, unchanged, so every tier gives the same bits.

use super::ELEMENTWISE_THRESHOLD as PAR_THRESHOLD;
use crate::isa::vectorized;
use crate::tensor::view::Layout;
use crate::tensor::Float;
use rayon::prelude::*;

use crate::tensor::storage::{append_par, CHUNK};

/// Appends `f(x[i])` for every element of a contiguous slice.
pub fn map<T: Float>(x: &[T], f: impl Fn(T) -> T + Sync + Send, out: &mut Vec<T>) {
    if x.len() < PAR_THRESHOLD {
        return vectorized(
            #[inline(always)]
            || out.extend(x.iter().map(|&v| f(v))),
        );
    }
    append_par(out, x.len(), |c, o| {
        let i = &x[c * CHUNK..][..o.len()];
        vectorized(
            #[inline(always)]
            || {
                for (o, &v) in o.iter_mut().zip(i) {
                    o.write(f(v));
                }
            },
        )
    });
}

/// Appends both values of `f(x[i])` for every element of a contiguous slice: the first to
/// `out`, the second to `aux` (one pass computing two results, such as an activation and its
/// derivative).
pub fn map_pair<T: Float>(
    x: &[T],
    f: impl Fn(T) -> (T, T) + Sync + Send,
    out: &mut Vec<T>,
    aux: &mut Vec<T>,
) {
    let n = x.len();
    out.reserve(n);
    aux.reserve(n);
    let (o0, a0) = (out.len(), aux.len());
    let fill =
        |i: usize, o: &mut [std::mem::MaybeUninit<T>], a: &mut [std::mem::MaybeUninit<T>]| {
            debug_assert_eq!(o.len(), a.len());
            let x = &x[i * CHUNK..][..o.len()];
            vectorized(
                #[inline(always)]
                || {
                    for ((o, a), &v) in o.iter_mut().zip(a.iter_mut()).zip(x) {
                        let (y, d) = f(v);
                        o.write(y);
                        a.write(d);
                    }
                },
            )
        };
    let (os, as_) = (
        &mut out.spare_capacity_mut()[..n],
        &mut aux.spare_capacity_mut()[..n],
    );
    if n < PAR_THRESHOLD {
        fill(0, os, as_);
    } else {
        os.par_chunks_mut(CHUNK)
            .zip(as_.par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(i, (o, a))| fill(i, o, a));
    }
    // SAFETY: both buffers had room for `n` more values (reserved above) and `fill` wrote every
    // value of each chunk — all `n` — in both; a panic leaves the lengths as they were.
    unsafe {
        out.set_len(o0 + n);
        aux.set_len(a0 + n);
    }
}

/// Appends `f(x)` for every element `layout` addresses in `src`, in row-major order.
pub fn map_strided<T: Float>(
    src: &[T],
    layout: &Layout,
    f: impl Fn(T) -> T + Sync + Send,
    out: &mut Vec<T>,
) {
    if let Some(r) = layout.contiguous_range() {
        return map(&src[r], f, out);
    }
    layout.for_each_row(|start, len, stride| {
        vectorized(
            #[inline(always)]
            || {
                if stride == 1 {
                    out.extend(src[start..start + len].iter().map(|&v| f(v)));
                } else {
                    out.extend((0..len).map(|j| f(src[start + j * stride])));
                }
            },
        )
    });
}

/// Appends `f(a[i], b[i])` for equal-length slices.
pub fn zip_map<T: Float>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Sync + Send, out: &mut Vec<T>) {
    debug_assert_eq!(a.len(), b.len());
    if a.len() < PAR_THRESHOLD {
        return vectorized(
            #[inline(always)]
            || out.extend(a.iter().zip(b).map(|(&x, &y)| f(x, y))),
        );
    }
    append_par(out, a.len(), |c, o| {
        let (a, b) = (&a[c * CHUNK..][..o.len()], &b[c * CHUNK..][..o.len()]);
        vectorized(
            #[inline(always)]
            || {
                for ((o, &x), &y) in o.iter_mut().zip(a).zip(b) {
                    o.write(f(x, y));
                }
            },
        )
    });
}

/// Appends `f(a, b)` with NumPy broadcasting to `out_shape` (which the caller computed and
/// checked), reading both operands through their layouts.
pub fn binary<T: Float>(
    a: &[T],
    la: &Layout,
    b: &[T],
    lb: &Layout,
    out_shape: &[usize],
    f: impl Fn(T, T) -> T + Sync + Send,
    out: &mut Vec<T>,
) {
    let n = crate::tensor::shape::numel(out_shape);
    if n == 0 {
        return;
    }
    let (ra, rb) = (la.contiguous_range(), lb.contiguous_range());
    if la.shape() == lb.shape() {
        if let (Some(ra), Some(rb)) = (&ra, &rb) {
            return zip_map(&a[ra.clone()], &b[rb.clone()], f, out);
        }
    }
    if lb.numel() == 1 && la.shape() == out_shape {
        let s = b[lb.offset()];
        return map_strided(a, la, |x| f(x, s), out);
    }
    if la.numel() == 1 && lb.shape() == out_shape {
        let s = a[la.offset()];
        return map_strided(b, lb, |y| f(s, y), out);
    }
    let va = la.broadcast_to(out_shape);
    let vb = lb.broadcast_to(out_shape);
    let (sa, sb) = (va.strides(), vb.strides());
    let rank = out_shape.len();
    let last = out_shape[rank - 1];
    let (la_s, lb_s) = (sa[rank - 1], sb[rank - 1]);
    // One row of the last dimension at a time; the row's start offsets come from its index.
    let row = |r: usize, o: &mut [T]| {
        let (mut oa, mut ob, mut rem) = (va.offset(), vb.offset(), r);
        for d in (0..rank - 1).rev() {
            let i = rem % out_shape[d];
            rem /= out_shape[d];
            oa += i * sa[d];
            ob += i * sb[d];
        }
        match (la_s, lb_s) {
            (1, 1) => {
                for ((o, &x), &y) in o.iter_mut().zip(&a[oa..oa + last]).zip(&b[ob..ob + last]) {
                    *o = f(x, y);
                }
            }
            (1, 0) => {
                let y = b[ob];
                for (o, &x) in o.iter_mut().zip(&a[oa..oa + last]) {
                    *o = f(x, y);
                }
            }
            (0, 1) => {
                let x = a[oa];
                for (o, &y) in o.iter_mut().zip(&b[ob..ob + last]) {
                    *o = f(x, y);
                }
            }
            _ => {
                for (j, o) in o.iter_mut().enumerate() {
                    *o = f(a[oa + j * la_s], b[ob + j * lb_s]);
                }
            }
        }
    };
    let start = out.len();
    out.resize(start + n, T::ZERO);
    let dst = &mut out[start..];
    if n < PAR_THRESHOLD {
        vectorized(
            #[inline(always)]
            || {
                for (r, o) in dst.chunks_mut(last).enumerate() {
                    row(r, o);
                }
            },
        )
    } else {
        dst.par_chunks_mut(last).enumerate().for_each(|(r, o)| {
            vectorized(
                #[inline(always)]
                || row(r, o),
            )
        });
    }
}

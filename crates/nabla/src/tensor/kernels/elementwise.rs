//! Element-wise kernels: unary maps and binary maps with NumPy broadcasting.

use super::PAR_THRESHOLD;
use crate::tensor::shape::broadcast_strides;
use crate::tensor::Float;
use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

/// `out[i] = f(x[i])`.
pub fn map<T: Float>(x: &[T], f: impl Fn(T) -> T + Sync + Send) -> Vec<T> {
    if x.len() < PAR_THRESHOLD {
        return x.iter().map(|&v| f(v)).collect();
    }
    let mut out = vec![T::ZERO; x.len()];
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(o, i)| {
            for (o, &v) in o.iter_mut().zip(i) {
                *o = f(v);
            }
        });
    out
}

/// `out[i] = f(a[i], b[i])` for equal-length slices.
pub fn zip_map<T: Float>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Sync + Send) -> Vec<T> {
    debug_assert_eq!(a.len(), b.len());
    if a.len() < PAR_THRESHOLD {
        return a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect();
    }
    let mut out = vec![T::ZERO; a.len()];
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(o, (a, b))| {
            for ((o, &x), &y) in o.iter_mut().zip(a).zip(b) {
                *o = f(x, y);
            }
        });
    out
}

/// `f(a, b)` with NumPy broadcasting to `out_shape` (which the caller computed).
pub fn broadcast_binary<T: Float>(
    a: &[T],
    a_shape: &[usize],
    b: &[T],
    b_shape: &[usize],
    out_shape: &[usize],
    f: impl Fn(T, T) -> T + Sync + Send,
) -> Vec<T> {
    if a_shape == b_shape {
        return zip_map(a, b, f);
    }
    if b.len() == 1 && a_shape == out_shape {
        let s = b[0];
        return map(a, |x| f(x, s));
    }
    if a.len() == 1 && b_shape == out_shape {
        let s = a[0];
        return map(b, |y| f(s, y));
    }
    let n: usize = out_shape.iter().product();
    let mut out = vec![T::ZERO; n];
    if n == 0 {
        return out;
    }
    let sa = broadcast_strides(a_shape, out_shape);
    let sb = broadcast_strides(b_shape, out_shape);
    let rank = out_shape.len();
    let last = out_shape[rank - 1];
    let (la, lb) = (sa[rank - 1], sb[rank - 1]);
    // One row of the last dimension at a time; the row's start offsets come from its index.
    let row = |r: usize, o: &mut [T]| {
        let (mut oa, mut ob, mut rem) = (0, 0, r);
        for d in (0..rank - 1).rev() {
            let i = rem % out_shape[d];
            rem /= out_shape[d];
            oa += i * sa[d];
            ob += i * sb[d];
        }
        match (la, lb) {
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
                    *o = f(a[oa + j * la], b[ob + j * lb]);
                }
            }
        }
    };
    if last == 0 {
        return out;
    }
    if n < PAR_THRESHOLD {
        for (r, o) in out.chunks_mut(last).enumerate() {
            row(r, o);
        }
    } else {
        out.par_chunks_mut(last)
            .enumerate()
            .for_each(|(r, o)| row(r, o));
    }
    out
}

//! Data-movement kernels: strided copies (permute, broadcast), narrow/pad, concat,
//! index_select/index_add and gather/scatter_add along an axis.

use super::split_at_axis;
use crate::tensor::shape::contiguous_strides;
use crate::tensor::Float;

/// Copies the elements of `src` read with `src_strides` into a contiguous tensor of
/// `out_shape`. Zero strides broadcast; permuted strides transpose.
pub fn strided_copy<T: Float>(src: &[T], out_shape: &[usize], src_strides: &[usize]) -> Vec<T> {
    let n: usize = out_shape.iter().product();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    let rank = out_shape.len();
    if rank == 0 {
        out.push(src[0]);
        return out;
    }
    let last = out_shape[rank - 1];
    let ls = src_strides[rank - 1];
    let mut idx = vec![0usize; rank];
    let mut base = 0usize;
    loop {
        if ls == 1 {
            out.extend_from_slice(&src[base..base + last]);
        } else {
            out.extend((0..last).map(|j| src[base + j * ls]));
        }
        // Advance the index over all but the last dimension.
        let mut d = rank - 1;
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            idx[d] += 1;
            base += src_strides[d];
            if idx[d] < out_shape[d] {
                break;
            }
            base -= src_strides[d] * idx[d];
            idx[d] = 0;
        }
    }
}

/// The permutation `perm` of a contiguous tensor: `out.shape[i] = shape[perm[i]]`.
pub fn permute<T: Float>(x: &[T], shape: &[usize], perm: &[usize]) -> Vec<T> {
    let strides = contiguous_strides(shape);
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let src_strides: Vec<usize> = perm.iter().map(|&p| strides[p]).collect();
    strided_copy(x, &out_shape, &src_strides)
}

/// Elements `start..start + len` along `axis`.
pub fn narrow<T: Float>(x: &[T], shape: &[usize], axis: usize, start: usize, len: usize) -> Vec<T> {
    let (outer, dim, inner) = split_at_axis(shape, axis);
    let mut out = Vec::with_capacity(outer * len * inner);
    for o in 0..outer {
        let from = (o * dim + start) * inner;
        out.extend_from_slice(&x[from..from + len * inner]);
    }
    out
}

/// Adds `g` (the shape of a narrow of `shape`) into a zero tensor of `shape` at `start`.
pub fn narrow_backward<T: Float>(
    g: &[T],
    shape: &[usize],
    axis: usize,
    start: usize,
    len: usize,
) -> Vec<T> {
    let (outer, dim, inner) = split_at_axis(shape, axis);
    let mut out = vec![T::ZERO; outer * dim * inner];
    for o in 0..outer {
        let to = (o * dim + start) * inner;
        out[to..to + len * inner].copy_from_slice(&g[o * len * inner..(o + 1) * len * inner]);
    }
    out
}

/// Concatenates tensors whose shapes agree except along `axis`; `dims[i]` is each one's size
/// along `axis`, `outer`/`inner` the products before and after it.
pub fn concat<T: Float>(parts: &[&[T]], dims: &[usize], outer: usize, inner: usize) -> Vec<T> {
    let total: usize = dims.iter().sum();
    let mut out = Vec::with_capacity(outer * total * inner);
    for o in 0..outer {
        for (p, &d) in parts.iter().zip(dims) {
            out.extend_from_slice(&p[o * d * inner..(o + 1) * d * inner]);
        }
    }
    out
}

/// `out[.., j, ..] = x[.., indices[j], ..]` along `axis` (indices already bounds-checked).
pub fn index_select<T: Float>(x: &[T], shape: &[usize], axis: usize, indices: &[usize]) -> Vec<T> {
    let (outer, dim, inner) = split_at_axis(shape, axis);
    let mut out = Vec::with_capacity(outer * indices.len() * inner);
    for o in 0..outer {
        for &i in indices {
            let from = (o * dim + i) * inner;
            out.extend_from_slice(&x[from..from + inner]);
        }
    }
    out
}

/// Backward of [`index_select`]: adds each selected row of `g` back at its index.
pub fn index_add<T: Float>(g: &[T], shape: &[usize], axis: usize, indices: &[usize]) -> Vec<T> {
    let (outer, dim, inner) = split_at_axis(shape, axis);
    let k = indices.len();
    let mut out = vec![T::ZERO; outer * dim * inner];
    for o in 0..outer {
        for (j, &i) in indices.iter().enumerate() {
            let to = (o * dim + i) * inner;
            let from = (o * k + j) * inner;
            for (t, &v) in out[to..to + inner].iter_mut().zip(&g[from..from + inner]) {
                *t += v;
            }
        }
    }
    out
}

/// `out[o, j, i] = x[o, idx[o, j, i], i]` viewing `x` as `[outer, dim, inner]` and the index
/// (and output) as `[outer, k, inner]`. Indices already bounds-checked.
pub fn gather<T: Float>(x: &[T], shape: &[usize], axis: usize, idx: &[usize]) -> Vec<T> {
    let (outer, dim, inner) = split_at_axis(shape, axis);
    let k = idx.len() / (outer * inner).max(1);
    let mut out = Vec::with_capacity(idx.len());
    for o in 0..outer {
        for j in 0..k {
            for i in 0..inner {
                let at = idx[(o * k + j) * inner + i];
                out.push(x[(o * dim + at) * inner + i]);
            }
        }
    }
    out
}

/// Backward of [`gather`]: scatter-adds `g` into a zero tensor of `shape`.
pub fn scatter_add<T: Float>(g: &[T], shape: &[usize], axis: usize, idx: &[usize]) -> Vec<T> {
    let (outer, dim, inner) = split_at_axis(shape, axis);
    let k = idx.len() / (outer * inner).max(1);
    let mut out = vec![T::ZERO; outer * dim * inner];
    for o in 0..outer {
        for j in 0..k {
            for i in 0..inner {
                let n = (o * k + j) * inner + i;
                out[(o * dim + idx[n]) * inner + i] += g[n];
            }
        }
    }
    out
}

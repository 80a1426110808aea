//! Data-movement kernels: strided copies and scatters, narrow's backward, concat,
//! index_select/index_add and gather/scatter_add along an axis. Outputs go into buffers the
//! caller allocated (fallibly).

use std::mem::MaybeUninit;

use super::split_at_axis;
use crate::tensor::storage::init_with;
use crate::tensor::view::{walk, Layout};
use crate::tensor::Float;

/// Appends the elements `layout` addresses in `src`, in row-major order, to `out`. Zero
/// strides broadcast; permuted strides transpose. Walks the last two (coalesced) axes as
/// planes: rows of a permuted view (the heads of attention put back in place) are copied
/// whole without per-row index bookkeeping, and a transposed plane is copied in 16 × 16
/// tiles, so that each tile's source and destination lines stay in L1 (element by element
/// down a column missed it on every value: 1.25 ns per value for a [768, 512] transpose).
pub fn strided_copy<T: Copy>(src: &[T], layout: &Layout, out: &mut Vec<T>) {
    let (shape, strides) = layout.coalesced();
    let r = shape.len();
    if r < 2 || layout.shape().contains(&0) {
        return layout.for_each_row(|start, len, stride| {
            if stride == 1 {
                out.extend_from_slice(&src[start..start + len]);
            } else {
                out.extend((0..len).map(|j| src[start + j * stride]));
            }
        });
    }
    let (n1, s1, n0, s0) = (shape[r - 2], strides[r - 2], shape[r - 1], strides[r - 1]);
    walk(
        &shape[..r - 2],
        &strides[..r - 2],
        layout.offset(),
        |base| {
            if s0 == 1 {
                for i in 0..n1 {
                    out.extend_from_slice(&src[base + i * s1..][..n0]);
                }
            } else if s1 == 1 && n0 >= 16 && n1 >= 16 {
                transpose_plane(src, base, (n1, n0, s0), out);
            } else {
                for i in 0..n1 {
                    let row = base + i * s1;
                    out.extend((0..n0).map(|j| src[row + j * s0]));
                }
            }
            true
        },
    );
}

/// Appends the `n1 × n0` plane `out[i][j] = src[base + i + j·s0]` (columns contiguous in
/// `src`) in 16 × 16 tiles.
fn transpose_plane<T: Copy>(
    src: &[T],
    base: usize,
    (n1, n0, s0): (usize, usize, usize),
    out: &mut Vec<T>,
) {
    const TILE: usize = 16;
    let (start, plane) = (out.len(), n1 * n0);
    out.reserve(plane);
    let dst = &mut out.spare_capacity_mut()[..plane];
    for i0 in (0..n1).step_by(TILE) {
        let i1 = (i0 + TILE).min(n1);
        for j0 in (0..n0).step_by(TILE) {
            for j in j0..(j0 + TILE).min(n0) {
                let col = &src[base + j * s0..][i0..i1];
                for (i, &v) in (i0..i1).zip(col) {
                    dst[i * n0 + j].write(v);
                }
            }
        }
    }
    // SAFETY: the tiles cover the plane, so each of its `plane` values was written above.
    unsafe { out.set_len(start + plane) };
}

/// Writes `values` (row-major) into the elements `layout` addresses in `dst`; the inverse of
/// [`strided_copy`] for a layout without overlap.
pub fn strided_scatter<T: Copy>(values: &[T], dst: &mut [T], layout: &Layout) {
    let mut at = 0;
    layout.for_each_row(|start, len, stride| {
        for (j, &v) in values[at..at + len].iter().enumerate() {
            dst[start + j * stride] = v;
        }
        at += len;
    });
}

/// Concatenates tensors whose shapes agree except along `axis`; `dims[i]` is each one's size
/// along `axis`, `outer`/`inner` the products before and after it.
pub fn concat<T: Float>(
    parts: &[&[T]],
    dims: &[usize],
    outer: usize,
    inner: usize,
    out: &mut Vec<T>,
) {
    if inner == 0 || dims.iter().all(|&d| d == 0) {
        return; // nothing to copy (and `outer` may be huge)
    }
    for o in 0..outer {
        for (p, &d) in parts.iter().zip(dims) {
            out.extend_from_slice(&p[o * d * inner..(o + 1) * d * inner]);
        }
    }
}

/// `out[.., j, ..] = x[.., indices[j], ..]` along `axis` (indices already bounds-checked).
pub fn index_select<T: Float>(
    x: &[T],
    shape: &[usize],
    axis: usize,
    indices: &[usize],
    out: &mut Vec<T>,
) {
    let (outer, dim, inner) = split_at_axis(shape, axis);
    if outer == 0 || inner == 0 || dim == 0 {
        return; // nothing addressed (and `outer` may be huge when `inner` is 0)
    }
    for o in 0..outer {
        for &i in indices {
            let from = (o * dim + i) * inner;
            out.extend_from_slice(&x[from..from + inner]);
        }
    }
}

/// Backward of [`index_select`]: adds each selected row of `g` back at its index.
pub fn index_add<T: Float>(
    g: &[T],
    shape: &[usize],
    axis: usize,
    indices: &[usize],
    out: &mut [T],
) {
    let (outer, dim, inner) = split_at_axis(shape, axis);
    if outer == 0 || inner == 0 || dim == 0 {
        return; // nothing addressed (and `outer` may be huge when `inner` is 0)
    }
    let k = indices.len();
    let add = |t: &mut [T], f: &[T]| {
        crate::isa::vectorized(
            #[inline(always)]
            || {
                for (t, &v) in t.iter_mut().zip(f) {
                    *t += v;
                }
            },
        )
    };
    // Consecutive indices (the gradient of `narrow`): one run of k·inner values per outer
    // index, where a last axis (inner = 1) went value by value.
    if let Some(&first) = indices.first() {
        if indices.iter().enumerate().all(|(j, &i)| i == first + j) {
            for o in 0..outer {
                let to = (o * dim + first) * inner;
                add(
                    &mut out[to..to + k * inner],
                    &g[o * k * inner..(o + 1) * k * inner],
                );
            }
            return;
        }
    }
    for o in 0..outer {
        for (j, &i) in indices.iter().enumerate() {
            let to = (o * dim + i) * inner;
            let from = (o * k + j) * inner;
            add(&mut out[to..to + inner], &g[from..from + inner]);
        }
    }
}

/// `out[o, j, i] = x[o, idx[o, j, i], i]` viewing `x` as `[outer, dim, inner]` and the index
/// (and output) as `[outer, k, inner]`. Indices already bounds-checked.
pub fn gather<T: Float>(x: &[T], shape: &[usize], axis: usize, idx: &[usize], out: &mut Vec<T>) {
    let (outer, dim, inner) = split_at_axis(shape, axis);
    if outer == 0 || inner == 0 || dim == 0 {
        return; // nothing addressed (and `outer` may be huge when `inner` is 0)
    }
    let k = idx.len() / (outer * inner).max(1);
    for o in 0..outer {
        for j in 0..k {
            for i in 0..inner {
                let at = idx[(o * k + j) * inner + i];
                out.push(x[(o * dim + at) * inner + i]);
            }
        }
    }
}

/// Backward of [`gather`]: `g` scatter-added into zeros of `shape`. Every element of `out` is
/// written (it may start uninitialised): each outer slice is zeroed and then added into while
/// it is still in cache, one pass over the output instead of a zero-fill pass and a scatter
/// pass.
pub fn scatter_add<T: Float>(
    g: &[T],
    shape: &[usize],
    axis: usize,
    idx: &[usize],
    out: &mut [MaybeUninit<T>],
) {
    let (outer, dim, inner) = split_at_axis(shape, axis);
    if outer == 0 || inner == 0 || dim == 0 {
        return; // the output is empty (and `outer` may be huge when `inner` is 0)
    }
    let k = idx.len() / (outer * inner).max(1);
    // Each outer slice adds only into its own `dim · inner` values, in a fixed order: the
    // slices can go to different threads without changing a bit.
    let slice = |o: usize, out: &mut [MaybeUninit<T>]| {
        let out = init_with(out, T::ZERO);
        let (idx, g) = (
            &idx[o * k * inner..][..k * inner],
            &g[o * k * inner..][..k * inner],
        );
        if inner == 1 {
            for (&at, &v) in idx.iter().zip(g) {
                out[at] += v;
            }
        } else {
            for (idx, g) in idx.chunks_exact(inner).zip(g.chunks_exact(inner)) {
                for (i, (&at, &v)) in idx.iter().zip(g).enumerate() {
                    out[at * inner + i] += v;
                }
            }
        }
    };
    super::for_each_run(out, dim * inner, slice);
}

//! Matrix products: 2-D, batched (one or more batch axes), and 3-D × 2-D (a shared right
//! operand). Every operand is read through its strides: a transposed, narrowed, permuted or
//! broadcast view goes to the GEMM as it is; no tensor is materialised (the kernels may copy a
//! transposed right operand of a large f32 product into a scratch buffer of their own, where
//! that measured faster).

use crate::autograd::{record, Op};
use crate::error::{Error, Result};
use crate::tensor::kernels::matmul::{gemm_into, gemm_uninit, MatRef};
use crate::tensor::shape::fmt_shape;
use crate::tensor::storage::{buffer, written};
use crate::tensor::{Float, Layout, Tensor};
use std::mem::MaybeUninit;

fn describe(a: &[usize], b: &[usize], ta: bool, tb: bool) -> String {
    let t = |s: &[usize], t: bool| format!("{}{}", fmt_shape(s), if t { "ᵀ" } else { "" });
    format!("{} x {}", t(a, ta), t(b, tb))
}

/// Matrix `i` of a 2-D (`batch = None`) or batched layout (every axis before the last two a
/// batch axis, `i` counting their entries in row-major order), as the product reads it.
pub(crate) fn mat<'a, T>(
    data: &'a [T],
    l: &Layout,
    batch: Option<usize>,
    trans: bool,
) -> MatRef<'a, T> {
    let (sh, st) = (l.shape(), l.strides());
    let r = sh.len() - 2;
    let mut offset = l.offset();
    if let Some(mut i) = batch {
        for ax in (0..r).rev() {
            offset += (i % sh[ax]) * st[ax];
            i /= sh[ax];
        }
    }
    let m = MatRef {
        data,
        offset,
        rows: sh[r],
        cols: sh[r + 1],
        rs: st[r],
        cs: st[r + 1],
    };
    if trans {
        m.t()
    } else {
        m
    }
}

/// The forward product without recording: returns the data and the shape. Operands are read
/// through their strides (views are not copied).
pub(crate) fn matmul_raw<T: Float>(
    a: &Tensor<T>,
    b: &Tensor<T>,
    ta: bool,
    tb: bool,
) -> Result<(Vec<T>, Vec<usize>)> {
    let (sa, sb) = (a.shape(), b.shape());
    let inner_err = |k1: usize, k2: usize| {
        Error::shape(
            "matmul",
            format!(
                "{}: inner dimensions {k1} and {k2} differ",
                describe(sa, sb, ta, tb)
            ),
        )
    };
    let (a_s, b_s) = (a.strided(), b.strided());
    let (ad, bd, la, lb) = (&a_s.data[..], &b_s.data[..], a.layout(), b.layout());
    match (sa.len(), sb.len()) {
        (2, 2) => {
            let (ma, mb) = (mat(ad, la, None, ta), mat(bd, lb, None, tb));
            if ma.cols != mb.rows {
                return Err(inner_err(ma.cols, mb.rows));
            }
            let shape = vec![ma.rows, mb.cols];
            let out = product_output(&shape, |o| gemm_uninit(ma, mb, o))?;
            Ok((out, shape))
        }
        (3, 2) if !ta => {
            let mb = mat(bd, lb, None, tb);
            let (batch, m, k) = (sa[0], sa[1], sa[2]);
            if k != mb.rows {
                return Err(inner_err(k, mb.rows));
            }
            let shape = vec![batch, m, mb.cols];
            if shape.contains(&0) {
                return Ok((Vec::new(), shape));
            }
            let st = la.strides();
            // The batch and row axes merge into one row axis when one stride steps over the other.
            let merged_rs = if batch <= 1 {
                Some(st[1])
            } else if m == 1 {
                Some(st[0])
            } else {
                (Some(st[0]) == m.checked_mul(st[1])).then_some(st[1])
            };
            let out = product_output(&shape, |out| match merged_rs {
                Some(rs) => {
                    let ma = MatRef {
                        data: ad,
                        offset: la.offset(),
                        rows: batch * m,
                        cols: k,
                        rs,
                        cs: st[2],
                    };
                    gemm_uninit(ma, mb, out);
                }
                None => each_product(
                    out,
                    m * mb.cols,
                    m.saturating_mul(k).saturating_mul(mb.cols),
                    |i, o| gemm_uninit(mat(ad, la, Some(i), false), mb, o),
                ),
            })?;
            Ok((out, shape))
        }
        (ra, rb) if ra == rb && ra >= 3 => {
            let lead = &sa[..ra - 2];
            if lead != &sb[..rb - 2] {
                return Err(Error::shape(
                    "matmul",
                    format!(
                        "{}: batch axes {} and {} differ",
                        describe(sa, sb, ta, tb),
                        fmt_shape(lead),
                        fmt_shape(&sb[..rb - 2])
                    ),
                ));
            }
            // The matrices' shapes (any batch entry's: `None` reads no batch axis, which may
            // be empty).
            let (pa, pb) = (mat(ad, la, None, ta), mat(bd, lb, None, tb));
            if pa.cols != pb.rows {
                return Err(inner_err(pa.cols, pb.rows));
            }
            let (m, n) = (pa.rows, pb.cols);
            let mut shape = lead.to_vec();
            shape.extend([m, n]);
            if shape.contains(&0) {
                return Ok((Vec::new(), shape));
            }
            let macs = m.saturating_mul(pa.cols).saturating_mul(n);
            let out = product_output(&shape, |out| {
                each_product(out, m * n, macs, |i, o| {
                    gemm_uninit(mat(ad, la, Some(i), ta), mat(bd, lb, Some(i), tb), o)
                })
            })?;
            Ok((out, shape))
        }
        _ => Err(Error::shape(
            "matmul",
            format!(
                "{}: supported are 2-D x 2-D, batched x batched (the same axes before the \
                 last two) and 3-D x 2-D (left operand not transposed)",
                describe(sa, sb, ta, tb)
            ),
        )),
    }
}

/// Products from which one splits among threads by itself (`kernels::sgemm` and `parts` in
/// `kernels/matmul.rs` split from 2²⁰ multiply-adds on).
const SPLITS_ITSELF: usize = 1 << 20;

/// `product(i, out_i)` for each `len`-long part `out_i` of `out` (one product of `macs`
/// multiply-adds each, such as the heads of an attention): the products shared among threads,
/// each on one thread, where each is too small to split itself and there are several; one
/// after the other otherwise. The same bits either way: every product is bit-identical for any
/// thread count.
fn each_product<T: Float>(
    out: &mut [MaybeUninit<T>],
    len: usize,
    macs: usize,
    product: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync,
) {
    use rayon::prelude::*;
    let threads = crate::tensor::kernels::threads();
    if macs >= SPLITS_ITSELF || threads < 2 || out.len() < 2 * len || len == 0 {
        for (i, o) in out.chunks_exact_mut(len.max(1)).enumerate() {
            product(i, o);
        }
        return;
    }
    // Products per task: about 2¹⁸ multiply-adds of work each.
    let per = (SPLITS_ITSELF / 4 / macs.max(1)).max(1);
    out.par_chunks_exact_mut(len)
        .enumerate()
        .with_min_len(per)
        .for_each(|(i, o)| crate::tensor::kernels::with_threads(1, || product(i, o)));
}

/// A fresh buffer of `shape`'s elements, filled by `fill` without zero-filling it first. `fill`
/// must write every element of the slice it is given (`gemm_uninit` writes all of its m×n
/// output; the callers above hand it disjoint outputs that cover the slice).
fn product_output<T: Float>(
    shape: &[usize],
    fill: impl FnOnce(&mut [MaybeUninit<T>]),
) -> Result<Vec<T>> {
    // SAFETY: every caller's `fill` writes the whole slice (above).
    unsafe { written("matmul", shape, fill) }
}

impl<T: Float> Tensor<T> {
    /// The fused linear map `self·w + b` for `self` `[n, in]`, `w` `[in, out]`, `b` `[out]`:
    /// one GEMM accumulating onto the broadcast bias, and a single saved output for backward
    /// (instead of `matmul` then `add`, which keep two).
    pub fn linear(&self, w: &Tensor<T>, b: &Tensor<T>) -> Result<Tensor<T>> {
        let (xs, ws, bs) = (self.shape(), w.shape(), b.shape());
        if xs.len() != 2 || ws.len() != 2 || xs[1] != ws[0] || bs != [ws[1]] {
            return Err(Error::shape(
                "linear",
                format!(
                    "x {} · w {} + b {}: need [n, in] · [in, out] + [out]",
                    fmt_shape(xs),
                    fmt_shape(ws),
                    fmt_shape(bs)
                ),
            ));
        }
        let (n, out) = (xs[0], ws[1]);
        let shape = vec![n, out];
        let mut data = buffer("linear", &shape)?;
        {
            let bd = b.data()?;
            for _ in 0..n {
                data.extend_from_slice(&bd);
            }
        }
        {
            let (xs, ws) = (self.strided(), w.strided());
            let mx = mat(&xs.data, xs.layout, None, false);
            let mw = mat(&ws.data, ws.layout, None, false);
            gemm_into(mx, mw, T::ONE, &mut data);
        }
        Ok(record(data, shape, &[self, w, b], || {
            Op::Linear(self.clone(), w.clone(), b.clone())
        }))
    }

    /// Matrix product `self · b`: `[m, k] × [k, n] → [m, n]`, batched `[B, m, k] × [B, k, n]`
    /// (or with several batch axes, the same in both: `[B, H, m, k] × [B, H, k, n]`), or
    /// `[B, m, k] × [k, n]` (the same right matrix for every batch entry). Views (a
    /// permutation of the batch axes, say) are read through their strides, not copied.
    pub fn matmul(&self, b: &Tensor<T>) -> Result<Tensor<T>> {
        self.matmul_t(b, false, false)
    }

    /// `op(self) · op(b)` where `op` transposes the last two axes when its flag is set. The
    /// transpose is read through strides; no transposed tensor is made (the same as `matmul`
    /// of a transposed view, without recording the view).
    pub fn matmul_t(&self, b: &Tensor<T>, ta: bool, tb: bool) -> Result<Tensor<T>> {
        let (data, shape) = matmul_raw(self, b, ta, tb)?;
        Ok(record(data, shape, &[self, b], || {
            Op::Matmul(self.clone(), b.clone(), ta, tb)
        }))
    }
}

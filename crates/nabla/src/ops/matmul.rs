//! Matrix products: 2-D, batched 3-D, and 3-D × 2-D (a shared right operand), with either
//! operand optionally read transposed through strides.

use crate::autograd::Op;
use crate::error::{Error, Result};
use crate::tensor::kernels::matmul::{gemm, gemm_into, MatRef};
use crate::tensor::shape::fmt_shape;
use crate::tensor::{Float, Tensor};

fn describe(a: &[usize], b: &[usize], ta: bool, tb: bool) -> String {
    let t = |s: &[usize], t: bool| format!("{}{}", fmt_shape(s), if t { "ᵀ" } else { "" });
    format!("{} x {}", t(a, ta), t(b, tb))
}

/// The forward product without recording: returns the data and the shape.
pub(crate) fn matmul_raw<T: Float>(
    a: &Tensor<T>,
    b: &Tensor<T>,
    ta: bool,
    tb: bool,
) -> Result<(Vec<T>, Vec<usize>)> {
    let (sa, sb) = (a.shape(), b.shape());
    let mat = |data, s0, s1, trans| MatRef {
        data,
        rows: s0,
        cols: s1,
        trans,
    };
    let inner_err = |k1: usize, k2: usize| {
        Error::shape(
            "matmul",
            format!(
                "{}: inner dimensions {k1} and {k2} differ",
                describe(sa, sb, ta, tb)
            ),
        )
    };
    match (sa.len(), sb.len()) {
        (2, 2) => {
            let (ad, bd) = (a.data(), b.data());
            let ma = mat(&ad[..], sa[0], sa[1], ta);
            let mb = mat(&bd[..], sb[0], sb[1], tb);
            let ((m, k1), (k2, n)) = (ma.dims(), mb.dims());
            if k1 != k2 {
                return Err(inner_err(k1, k2));
            }
            Ok((gemm(ma, mb), vec![m, n]))
        }
        (3, 2) if !ta => {
            let (ad, bd) = (a.data(), b.data());
            let ma = mat(&ad[..], sa[0] * sa[1], sa[2], false);
            let mb = mat(&bd[..], sb[0], sb[1], tb);
            let ((_, k1), (k2, n)) = (ma.dims(), mb.dims());
            if k1 != k2 {
                return Err(inner_err(k1, k2));
            }
            Ok((gemm(ma, mb), vec![sa[0], sa[1], n]))
        }
        (3, 3) => {
            if sa[0] != sb[0] {
                return Err(Error::shape(
                    "matmul",
                    format!(
                        "{}: batch sizes {} and {} differ",
                        describe(sa, sb, ta, tb),
                        sa[0],
                        sb[0]
                    ),
                ));
            }
            let (ad, bd) = (a.data(), b.data());
            let batch = sa[0];
            let (sza, szb) = (sa[1] * sa[2], sb[1] * sb[2]);
            let probe_a = mat(&ad[..0], sa[1], sa[2], ta);
            let probe_b = mat(&bd[..0], sb[1], sb[2], tb);
            let ((m, k1), (k2, n)) = (probe_a.dims(), probe_b.dims());
            if k1 != k2 {
                return Err(inner_err(k1, k2));
            }
            let mut out = vec![T::ZERO; batch * m * n];
            for i in 0..batch {
                gemm_into(
                    mat(&ad[i * sza..(i + 1) * sza], sa[1], sa[2], ta),
                    mat(&bd[i * szb..(i + 1) * szb], sb[1], sb[2], tb),
                    T::ZERO,
                    &mut out[i * m * n..(i + 1) * m * n],
                );
            }
            Ok((out, vec![batch, m, n]))
        }
        _ => Err(Error::shape(
            "matmul",
            format!(
                "{}: supported are 2-D x 2-D, 3-D x 3-D (same batch) and 3-D x 2-D \
                 (left operand not transposed)",
                describe(sa, sb, ta, tb)
            ),
        )),
    }
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
        let mut data = Vec::with_capacity(n * out);
        {
            let bd = b.data();
            for _ in 0..n {
                data.extend_from_slice(&bd);
            }
        }
        {
            let (xd, wd) = (self.data(), w.data());
            let mx = MatRef {
                data: &xd[..],
                rows: n,
                cols: xs[1],
                trans: false,
            };
            let mw = MatRef {
                data: &wd[..],
                rows: ws[0],
                cols: out,
                trans: false,
            };
            gemm_into(mx, mw, T::ONE, &mut data);
        }
        Ok(Tensor::from_op(data, vec![n, out], &[self, w, b], || {
            Op::Linear(self.clone(), w.clone(), b.clone())
        }))
    }

    /// Matrix product `self · b`: `[m, k] × [k, n] → [m, n]`, batched `[B, m, k] × [B, k, n]`,
    /// or `[B, m, k] × [k, n]` (the same right matrix for every batch entry).
    pub fn matmul(&self, b: &Tensor<T>) -> Result<Tensor<T>> {
        self.matmul_t(b, false, false)
    }

    /// `op(self) · op(b)` where `op` transposes the last two axes when its flag is set. The
    /// transpose is read through strides; nothing is copied.
    pub fn matmul_t(&self, b: &Tensor<T>, ta: bool, tb: bool) -> Result<Tensor<T>> {
        let (data, shape) = matmul_raw(self, b, ta, tb)?;
        Ok(Tensor::from_op(data, shape, &[self, b], || Op::Matmul {
            a: self.clone(),
            b: b.clone(),
            ta,
            tb,
        }))
    }
}

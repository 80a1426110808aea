//! The ops of sequence models, as `torch.nn.functional` names them: `layer_norm` (one fused op,
//! [`Op::LayerNorm`], whose second derivatives come from the same function composed of
//! differentiable ops), `embedding` (an `index_select` of table rows, whose gradient
//! scatters into the table with repeated rows added), the softmax of attention scores
//! ([`Op::AttentionSoftmax`]: scaled and optionally causal, without a mask tensor) and
//! [`scaled_dot_product_attention`].

use std::sync::Arc;

use crate::autograd::{record, record_permuted, Op};
use crate::error::{Error, Result};
use crate::ops::matmul::mat;
use crate::tensor::kernels::attention::{self, Dims, Place};
use crate::tensor::kernels::counter::Keep;
use crate::tensor::kernels::matmul::MatRef;
use crate::tensor::kernels::rows::{self, RowStats};
use crate::tensor::shape::fmt_shape;
use crate::tensor::storage::buffer;
use crate::tensor::{Float, Strided, Tensor};

impl<T: Float> Tensor<T> {
    /// Layer normalisation over the trailing axes `normalized_shape`: each row of those values
    /// becomes `(x − mean) / √(var + eps) · weight + bias` (biased variance; `weight` and
    /// `bias`, of shape `normalized_shape`, are optional), as `torch.nn.functional.layer_norm`.
    ///
    /// ```
    /// use nabla::Tensor;
    /// let x = Tensor::<f64>::from_vec(vec![1.0, 3.0, 2.0, 6.0], &[2, 2]).unwrap();
    /// let y = x.layer_norm(&[2], None, None, 0.0).unwrap();
    /// assert_eq!(y.to_vec().unwrap(), [-1.0, 1.0, -1.0, 1.0]);
    /// ```
    pub fn layer_norm(
        &self,
        normalized_shape: &[usize],
        weight: Option<&Tensor<T>>,
        bias: Option<&Tensor<T>>,
        eps: f64,
    ) -> Result<Tensor<T>> {
        let s = self.shape();
        let k = normalized_shape.len();
        if k == 0 || k > s.len() || s[s.len() - k..] != *normalized_shape {
            return Err(Error::shape(
                "layer_norm",
                format!(
                    "normalized_shape {} must be the trailing axes of input {}",
                    fmt_shape(normalized_shape),
                    fmt_shape(s)
                ),
            ));
        }
        for (name, t) in [("weight", weight), ("bias", bias)] {
            if let Some(t) = t.filter(|t| t.shape() != normalized_shape) {
                return Err(Error::shape(
                    "layer_norm",
                    format!(
                        "{name} {} does not match normalized_shape {}",
                        fmt_shape(t.shape()),
                        fmt_shape(normalized_shape)
                    ),
                ));
            }
        }
        if !(eps >= 0.0 && eps.is_finite()) {
            return Err(Error::arg(
                "layer_norm",
                format!("eps {eps} must be finite and ≥ 0"),
            ));
        }
        let d: usize = normalized_shape.iter().product();
        let (y, stats) = {
            let x = self.data()?;
            let w = weight.map(|w| w.data()).transpose()?;
            let b = bias.map(|b| b.data()).transpose()?;
            rows::layer_norm(&x, d, w.as_deref(), b.as_deref(), eps)
        };
        let inputs: Vec<&Tensor<T>> = [Some(self), weight, bias].into_iter().flatten().collect();
        let stats = Arc::new(stats);
        Ok(record(y, s.to_vec(), &inputs, || {
            Op::LayerNorm(self.clone(), weight.cloned(), bias.cloned(), stats, eps)
        }))
    }

    /// Layer normalisation over rows of the trailing `d` values, composed of differentiable
    /// ops: the function the fused op's rule differentiates when a gradient must itself be
    /// differentiable.
    pub(crate) fn layer_norm_composed(
        &self,
        d: usize,
        weight: Option<&Tensor<T>>,
        bias: Option<&Tensor<T>>,
        eps: f64,
    ) -> Result<Tensor<T>> {
        let rows = self.numel().checked_div(d).unwrap_or(0);
        let x = self.reshape(&[rows, d])?;
        let centred = x.sub(&x.mean(&[1], true)?)?;
        let var = centred.square()?.mean(&[1], true)?;
        let y = centred
            .mul(&var.add_scalar(eps)?.pow_scalar(-0.5)?)?
            .reshape(self.shape())?;
        let y = match weight {
            Some(w) => y.mul(w)?,
            None => y,
        };
        match bias {
            Some(b) => y.add(b),
            None => Ok(y),
        }
    }

    /// The gradients of the fused layer normalisation of `x` (row statistics `st`) for the
    /// output gradient `self`, each where `need` asks: `(dx, dweight, dbias)`, plain values.
    pub(crate) fn layer_norm_grads(
        &self,
        x: &Tensor<T>,
        weight: Option<&Tensor<T>>,
        st: &RowStats,
        need: [bool; 3],
    ) -> Result<[Option<Tensor<T>>; 3]> {
        let d = x.numel().checked_div(st.mean.len()).unwrap_or(0);
        let (dx, dw, db) = {
            let (g, xd) = (self.data()?, x.data()?);
            let w = weight.map(|w| w.data()).transpose()?;
            rows::layer_norm_grads(&g, &xd, d, w.as_deref(), st, need[0])
        };
        let wshape = weight.map_or_else(|| vec![d], |w| w.shape().to_vec());
        let vector =
            |v: Vec<f64>| Tensor::from_vec(v.into_iter().map(T::from_f64).collect(), &wshape);
        Ok([
            dx.map(|dx| Tensor::from_vec(dx, x.shape())).transpose()?,
            need[1].then(|| vector(dw)).transpose()?,
            need[2].then(|| vector(db)).transpose()?,
        ])
    }

    /// Rows of the table `self` (`[vocab, dim]`) for each id: `[ids.len(), dim]`, as
    /// `torch.nn.functional.embedding`. The gradient adds into the table's rows, repeated ids
    /// adding up. An id outside the table is an error naming it.
    ///
    /// ```
    /// use nabla::Tensor;
    /// let table = Tensor::<f64>::from_vec(vec![0.0, 1.0, 10.0, 11.0], &[2, 2]).unwrap();
    /// let rows = table.embedding(&[1, 0, 1]).unwrap();
    /// assert_eq!(rows.to_vec().unwrap(), [10.0, 11.0, 0.0, 1.0, 10.0, 11.0]);
    /// assert!(table.embedding(&[2]).is_err());
    /// ```
    pub fn embedding(&self, ids: &[usize]) -> Result<Tensor<T>> {
        let s = self.shape();
        if s.len() != 2 {
            return Err(Error::shape(
                "embedding",
                format!("the table must be [vocab, dim], got {}", fmt_shape(s)),
            ));
        }
        if let Some(&bad) = ids.iter().find(|&&i| i >= s[0]) {
            return Err(Error::arg(
                "embedding",
                format!("id {bad} is outside the table of {} rows", s[0]),
            ));
        }
        self.index_select(0, ids)
    }

    /// Softmax of `scale·self` along the last axis of `[.., t, s]` attention scores (`t`
    /// queries against `s` keys). With `causal`, query `i` — the queries being the last `t` of
    /// the `s` positions — sees keys `0..=i + s − t` only: the others get probability exactly
    /// 0 without a mask tensor being made, and their gradient is 0.
    ///
    /// ```
    /// use nabla::Tensor;
    /// let scores = Tensor::<f64>::zeros(&[2, 2]).unwrap();
    /// let p = scores.attention_softmax(1.0, true).unwrap();
    /// assert_eq!(p.to_vec().unwrap(), [1.0, 0.0, 0.5, 0.5]);
    /// ```
    pub fn attention_softmax(&self, scale: f64, causal: bool) -> Result<Tensor<T>> {
        let sh = self.shape();
        if sh.len() < 2 || (causal && sh[sh.len() - 2] > sh[sh.len() - 1]) {
            return Err(Error::shape(
                "attention_softmax",
                format!(
                    "expected scores [.., queries, keys]{}, got {}",
                    if causal { " with queries ≤ keys" } else { "" },
                    fmt_shape(sh)
                ),
            ));
        }
        if !scale.is_finite() {
            return Err(Error::arg(
                "attention_softmax",
                format!("scale {scale} must be finite"),
            ));
        }
        let (t, s) = (sh[sh.len() - 2], sh[sh.len() - 1]);
        let c = T::from_f64(scale);
        let y = rows::attention_softmax(&self.data()?, t, s, c, causal);
        Ok(record(y, sh.to_vec(), &[self], || {
            Op::AttentionSoftmax(self.clone(), c, causal)
        }))
    }
}

impl<T: Float> Tensor<T> {
    /// `scale·y ⊙ (self − Σ self⊙y)` along the last axis, in one pass: the backward of a
    /// softmax `y` (of `scale·x`) for the output gradient `self`. Differentiable in both.
    ///
    /// ```
    /// use nabla::Tensor;
    /// let y = Tensor::<f64>::from_vec(vec![0.5, 0.5], &[1, 2]).unwrap();
    /// let g = Tensor::from_vec(vec![1.0, 0.0], &[1, 2]).unwrap();
    /// assert_eq!(g.softmax_backward(&y, 1.0).unwrap().to_vec().unwrap(), [0.25, -0.25]);
    /// ```
    pub fn softmax_backward(&self, y: &Tensor<T>, scale: f64) -> Result<Tensor<T>> {
        if self.shape() != y.shape() || y.rank() == 0 {
            return Err(Error::shape(
                "softmax_backward",
                format!(
                    "gradient {} and probabilities {} must have the same shape (rank ≥ 1)",
                    fmt_shape(self.shape()),
                    fmt_shape(y.shape())
                ),
            ));
        }
        let s = y.shape()[y.rank() - 1];
        let c = T::from_f64(scale);
        let dx = rows::softmax_backward(&self.data()?, &y.data()?, s, c);
        Ok(record(dx, y.shape().to_vec(), &[self, y], || {
            Op::SoftmaxBackward(self.clone(), y.clone(), c)
        }))
    }
}

/// Attention `softmax(q·kᵀ/√d + mask)·v`, as `torch.nn.functional.scaled_dot_product_attention`:
/// `q` `[.., t, d]`, `k` `[.., s, d]`, `v` `[.., s, dv]` with the same leading axes (one or
/// two of them, e.g. batch and head), giving `[.., t, dv]`. `mask`, if given, is added to the
/// scaled scores (broadcast to `[.., t, s]`; `−∞` hides a key). With `causal`, each query —
/// the queries being the last `t` of the `s` positions, as when a key/value cache holds the
/// earlier ones — sees only keys at or before its own position, without a mask tensor.
///
/// ```
/// use nabla::{ops::scaled_dot_product_attention, Tensor};
/// let q = Tensor::<f64>::zeros(&[1, 2, 4]).unwrap();
/// let v = Tensor::<f64>::from_vec((0..8).map(f64::from).collect(), &[1, 2, 4]).unwrap();
/// let y = scaled_dot_product_attention(&q, &q, &v, None, true).unwrap();
/// // the first query sees the first value only; the second, the mean of both
/// assert_eq!(y.to_vec().unwrap(), [0.0, 1.0, 2.0, 3.0, 2.0, 3.0, 4.0, 5.0]);
/// ```
pub fn scaled_dot_product_attention<T: Float>(
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    mask: Option<&Tensor<T>>,
    causal: bool,
) -> Result<Tensor<T>> {
    let (sq, sk, sv) = (q.shape(), k.shape(), v.shape());
    let r = sq.len();
    let lead_ok = |s: &[usize]| s.len() == r && s[..r - 2] == sq[..r - 2];
    if !(3..=4).contains(&r)
        || !lead_ok(sk)
        || !lead_ok(sv)
        || sk[r - 1] != sq[r - 1]
        || sv[r - 2] != sk[r - 2]
    {
        return Err(Error::shape(
            "scaled_dot_product_attention",
            format!(
                "expected q [.., t, d], k [.., s, d], v [.., s, dv] with the same one or two \
                 leading axes, got q {}, k {}, v {}",
                fmt_shape(sq),
                fmt_shape(sk),
                fmt_shape(sv)
            ),
        ));
    }
    let (t, d, s) = (sq[r - 2], sq[r - 1], sk[r - 2]);
    let scale = 1.0 / (d.max(1) as f64).sqrt();
    if causal && t > s {
        return Err(Error::shape(
            "scaled_dot_product_attention",
            format!(
                "causal attention needs queries ≤ keys, got {t} queries (q {}) over {s} keys \
                 (k {})",
                fmt_shape(sq),
                fmt_shape(sk)
            ),
        ));
    }
    let Some(m) = mask else {
        return if attention::fuses::<T>(s) {
            q.attention(k, v, scale, causal)
        } else {
            q.attention_composed(k, v, scale, causal)
        };
    };
    // With a mask: batched products over the leading axes, read through their strides (the
    // heads of a `[b, h, t, d]` view of `[b, t, h·d]` data are not copied), the mask added to
    // the scaled scores.
    let scores = q.matmul_t(k, false, true)?;
    let mut full = sq[..r - 2].to_vec();
    full.extend([t, s]);
    let m = m.broadcast_to(&full).map_err(|_| {
        Error::shape(
            "scaled_dot_product_attention",
            format!(
                "mask {} does not broadcast to the scores {}",
                fmt_shape(m.shape()),
                fmt_shape(&full)
            ),
        )
    })?;
    let scaled = scores.mul_scalar(scale)?;
    scaled.add(&m)?.attention_softmax(1.0, causal)?.matmul(v)
}

/// Multi-head attention over packed projections, as a transformer layer computes it: `qkv`
/// `[b, t, 3c]` holds each position's queries, keys and values side by side (`c = heads·d`
/// columns each, the heads in order within them), and the result `[b, t, c]` each position's
/// heads side by side. The same as splitting `qkv` into three `[b, heads, t, d]` views,
/// [`scaled_dot_product_attention`] (scale `1/√d`) and merging the heads — in one op whose
/// gradient is written into the columns of `qkv` it came from (no view of a third of a
/// tensor scatters its gradient into zeros).
///
/// ```
/// use nabla::{ops::packed_attention, Tensor};
/// // one position, two heads of width 1: each value comes back (a query sees only itself)
/// let qkv = Tensor::<f64>::from_vec(vec![0.5, -1.0, 2.0, 3.0, 7.0, 9.0], &[1, 1, 6]).unwrap();
/// let y = packed_attention(&qkv, 2, true).unwrap();
/// assert_eq!(y.to_vec().unwrap(), [7.0, 9.0]);
/// ```
pub fn packed_attention<T: Float>(
    qkv: &Tensor<T>,
    heads: usize,
    causal: bool,
) -> Result<Tensor<T>> {
    packed_attention_dropped(qkv, heads, causal, None)
}

/// [`packed_attention`] with the attention probabilities `[b, heads, t, t]` dropped by
/// `keep`'s mask before they weigh the values (training-mode dropout): in the fused kernel,
/// which makes each tile's mask values where it needs them, forward and backward (no mask or
/// probability tensor is stored); composed of differentiable ops, with the same mask, where
/// the kernel does not run or a gradient must itself be differentiable.
pub(crate) fn packed_attention_dropped<T: Float>(
    qkv: &Tensor<T>,
    heads: usize,
    causal: bool,
    keep: Option<Keep>,
) -> Result<Tensor<T>> {
    let scale = packed_scale(qkv.shape(), heads)?;
    if attention::fuses::<T>(qkv.shape()[1]) {
        qkv.packed_attention_fused(heads, scale, causal, keep)
    } else {
        qkv.packed_attention_composed(heads, scale, causal, keep)
    }
}

/// The scale `1/√d` of [`packed_attention`] over `sh`, after checking that `sh` is
/// `[b, t, 3·heads·d]`.
fn packed_scale(sh: &[usize], heads: usize) -> Result<f64> {
    let fits = heads
        .checked_mul(3)
        .is_some_and(|h3| h3 > 0 && sh.len() == 3 && sh[2].is_multiple_of(h3));
    if !fits {
        return Err(Error::shape(
            "packed_attention",
            format!(
                "expected qkv [b, t, 3·heads·d] for {heads} heads, got {}",
                fmt_shape(sh)
            ),
        ));
    }
    let d = sh[2] / 3 / heads;
    Ok(1.0 / (d.max(1) as f64).sqrt())
}

impl<T: Float> Tensor<T> {
    /// [`packed_attention`] as one op ([`Op::PackedAttention`]), on a checked shape.
    fn packed_attention_fused(
        &self,
        heads: usize,
        scale: f64,
        causal: bool,
        keep: Option<Keep>,
    ) -> Result<Tensor<T>> {
        let sh = self.shape();
        let (b, t, c) = (sh[0], sh[1], sh[2] / 3);
        let dims = packed_dims(sh, heads);
        let ct = T::from_f64(scale);
        let out = {
            let x = self.strided();
            let [q, k, v] = [0, 1, 2].map(|i| heads_at(&x, heads, dims.d, i * c));
            let group = (heads, Place::Interleaved);
            let room = buffer("packed_attention", &[b, t, c])?;
            attention::forward(&q, &k, &v, dims, (ct, causal, keep), group, room)
        };
        Ok(record(out, vec![b, t, c], &[self], || {
            Op::PackedAttention(self.clone(), heads, ct, causal, keep)
        }))
    }

    /// [`packed_attention_dropped`] composed of differentiable ops (views of the three parts,
    /// the composed attention, the probabilities times `keep`'s mask, the heads merged): what
    /// the fused op's rule differentiates when a gradient must itself be differentiable.
    pub(crate) fn packed_attention_composed(
        &self,
        heads: usize,
        scale: f64,
        causal: bool,
        keep: Option<Keep>,
    ) -> Result<Tensor<T>> {
        let sh = self.shape();
        let (b, t, c) = (sh[0], sh[1], sh[2] / 3);
        let part = |i: usize| -> Result<Tensor<T>> {
            self.narrow(2, i * c, c)?
                .reshape(&[b, t, heads, c / heads])?
                .permute(&SWAP)
        };
        let mut p = part(0)?
            .matmul_t(&part(1)?, false, true)?
            .attention_softmax(scale, causal)?;
        if let Some(keep) = keep {
            p = p.mul(&Tensor::from_vec(keep.mask(p.numel()), p.shape())?)?;
        }
        p.matmul(&part(2)?)?.permute(&SWAP)?.reshape(&[b, t, c])
    }

    /// The gradient of [`Op::PackedAttention`] for the output gradient `self`, not recorded:
    /// `d(qkv)`, contiguous.
    pub(crate) fn packed_attention_grad(
        &self,
        qkv: &Tensor<T>,
        heads: usize,
        (scale, causal, keep): (T, bool, Option<Keep>),
    ) -> Result<Tensor<T>> {
        let sh = qkv.shape();
        let dims = packed_dims(sh, heads);
        let c = sh[2] / 3;
        let data = {
            let (x, g) = (qkv.strided(), self.strided());
            let [q, k, v] = [0, 1, 2].map(|i| heads_at(&x, heads, dims.d, i * c));
            let gh = heads_at(&g, heads, dims.d, 0);
            let room = buffer("packed_attention", sh)?;
            let how = (scale, causal, keep);
            attention::backward_packed([&q, &k, &v], &gh, dims, how, heads, room)
        };
        Tensor::from_vec(data, sh)
    }
}

/// The sizes of [`packed_attention`] over `[b, t, 3·heads·d]`.
fn packed_dims(sh: &[usize], heads: usize) -> Dims {
    let d = sh[2] / 3 / heads;
    Dims {
        t: sh[1],
        s: sh[1],
        d,
        dv: d,
    }
}

/// Each (batch element, head)'s `[t, d]` matrix of a `[b, t, ..]` operand whose heads' columns
/// start at `col`, `d` apart, read through its strides.
fn heads_at<'a, T: Float>(
    x: &'a Strided<'_, T>,
    heads: usize,
    d: usize,
    col: usize,
) -> Vec<MatRef<'a, T>> {
    let (sh, st) = (x.layout.shape(), x.layout.strides());
    (0..sh[0] * heads)
        .map(|i| MatRef {
            data: &x.data[..],
            offset: x.layout.offset() + (i / heads) * st[0] + (col + (i % heads) * d) * st[2],
            rows: sh[1],
            cols: d,
            rs: st[1],
            cs: st[2],
        })
        .collect()
}

impl<T: Float> Tensor<T> {
    /// The fused attention op ([`Op::Attention`]) on shapes [`scaled_dot_product_attention`]
    /// checked: `softmax(scale·self·kᵀ)·v`, each head in one pass.
    fn attention(
        &self,
        k: &Tensor<T>,
        v: &Tensor<T>,
        scale: f64,
        causal: bool,
    ) -> Result<Tensor<T>> {
        let (q, c) = (self, T::from_f64(scale));
        let dims = dims_of(q, v);
        let (group, places) = placing([q, k, v]);
        let mut shape = q.shape()[..q.rank() - 1].to_vec();
        shape.push(dims.dv);
        let room = buffer("scaled_dot_product_attention", &shape)?;
        let out = {
            let (qs, ks, vs) = (q.strided(), k.strided(), v.strided());
            let (qh, kh, vh) = (heads(&qs), heads(&ks), heads(&vs));
            let how = (c, causal, None);
            attention::forward(&qh, &kh, &vh, dims, how, (group, places[0]), room)
        };
        let op = || Op::Attention(q.clone(), k.clone(), v.clone(), c, causal);
        Ok(match places[0] {
            Place::Heads => record(out, shape, &[q, k, v], op),
            Place::Interleaved => record_permuted(out, interleaved(&shape), &SWAP, &[q, k, v], op),
        })
    }

    /// [`Op::Attention`] composed of differentiable ops (a product, the attention softmax,
    /// a product): the function the fused op's rule differentiates when a gradient must itself
    /// be differentiable.
    pub(crate) fn attention_composed(
        &self,
        k: &Tensor<T>,
        v: &Tensor<T>,
        scale: f64,
        causal: bool,
    ) -> Result<Tensor<T>> {
        self.matmul_t(k, false, true)?
            .attention_softmax(scale, causal)?
            .matmul(v)
    }

    /// The gradients of [`Op::Attention`] for the output gradient `self`, not recorded: `dq`,
    /// `dk`, `dv` where `want` asks, contiguous in the inputs' shapes.
    pub(crate) fn attention_grads(
        &self,
        q: &Tensor<T>,
        k: &Tensor<T>,
        v: &Tensor<T>,
        scale: T,
        causal: bool,
        want: [bool; 3],
    ) -> Result<[Option<Tensor<T>>; 3]> {
        let dims = dims_of(q, v);
        let placed = placing([q, k, v]);
        let grads = {
            let (qs, ks, vs, gs) = (q.strided(), k.strided(), v.strided(), self.strided());
            let (qh, kh, vh, gh) = (heads(&qs), heads(&ks), heads(&vs), heads(&gs));
            let mut rooms = [Vec::new(), Vec::new(), Vec::new()];
            for ((room, x), w) in rooms.iter_mut().zip([q, k, v]).zip(want) {
                if w {
                    *room = buffer("scaled_dot_product_attention", x.shape())?;
                }
            }
            attention::backward(
                &qh,
                &kh,
                &vh,
                &gh,
                dims,
                (scale, causal),
                want,
                placed,
                rooms,
            )
        };
        let mut out = [None, None, None];
        for (i, (data, x)) in grads.into_iter().zip([q, k, v]).enumerate() {
            if want[i] {
                out[i] = Some(match placed.1[i] {
                    Place::Heads => Tensor::from_vec(data, x.shape())?,
                    Place::Interleaved => {
                        Tensor::from_vec(data, &interleaved(x.shape()))?.permute(&SWAP)?
                    }
                });
            }
        }
        Ok(out)
    }
}

/// Swaps the head and position axes of `[b, h, n, d]` (its own inverse).
const SWAP: [usize; 4] = [0, 2, 1, 3];

/// `[b, h, n, d]` as `[b, n, h, d]`.
fn interleaved(shape: &[usize]) -> Vec<usize> {
    SWAP.iter().map(|&a| shape[a]).collect()
}

/// Whether `x` is a `[b, h, n, d]` view of dense `[b, n, h·d]` data (a multi-head layer's
/// heads): its gradient is then made in that order, so the layer's own permute and reshape
/// of it copy nothing.
fn is_interleaved<T: Float>(x: &Tensor<T>) -> bool {
    let (sh, st) = (x.shape(), x.strides());
    x.rank() == 4
        && st[3] == 1
        && st[1] == sh[3]
        && st[2] == sh[1] * sh[3]
        && st[0] == sh[2] * sh[1] * sh[3]
}

/// How attention over `[q, k, v]` places its outputs (the output and dq follow q, dk k, dv v)
/// and how many heads share a task: all of a batch element's where any output interleaves
/// them.
fn placing<T: Float>(xs: [&Tensor<T>; 3]) -> (usize, [Place; 3]) {
    let places = xs.map(|x| {
        if is_interleaved(x) {
            Place::Interleaved
        } else {
            Place::Heads
        }
    });
    let group = if places.contains(&Place::Interleaved) {
        xs[0].shape()[1]
    } else {
        1
    };
    (group, places)
}

/// The sizes of an attention of `q` `[.., t, d]` over values `v` `[.., s, dv]` (checked by
/// [`scaled_dot_product_attention`]).
fn dims_of<T: Float>(q: &Tensor<T>, v: &Tensor<T>) -> Dims {
    let (sq, sv) = (q.shape(), v.shape());
    let r = sq.len();
    Dims {
        t: sq[r - 2],
        s: sv[r - 2],
        d: sq[r - 1],
        dv: sv[r - 1],
    }
}

/// Every head's matrix of a `[.., n, d]` operand (one or two leading axes), read through its
/// strides.
fn heads<'a, T: Float>(x: &'a Strided<'_, T>) -> Vec<MatRef<'a, T>> {
    let sh = x.layout.shape();
    let count: usize = sh[..sh.len() - 2].iter().product();
    (0..count)
        .map(|i| mat(&x.data[..], x.layout, Some(i), false))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused kernel with dropout (f64 runs it) gives the composition's output with the
    /// same mask, and the gradient of a loss that is not linear in that output (so it reads
    /// the forward's mask too), causal and not, over three tiles of queries.
    #[test]
    fn fused_dropout_is_the_composition_with_the_same_mask() {
        assert!(attention::fuses::<f64>(37));
        let keep = Some(Keep { p: 0.35, seed: 5 });
        for causal in [true, false] {
            let x = Tensor::<f64>::randn(&[2, 37, 24], 0.0, 1.0, 3).unwrap();
            let run = |fused: bool| {
                let xg = x.clone().requires_grad();
                let y = if fused {
                    xg.packed_attention_fused(2, 0.5, causal, keep)
                } else {
                    xg.packed_attention_composed(2, 0.5, causal, keep)
                }
                .unwrap();
                let g = y.mul(&y).unwrap().sum_all().unwrap().backward().unwrap();
                let g = g.get(&xg).unwrap().to_vec().unwrap();
                (y.to_vec().unwrap(), g)
            };
            let ((yf, gf), (yc, gc)) = (run(true), run(false));
            let far = |a: &[f64], b: &[f64]| {
                a.iter()
                    .zip(b)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max)
            };
            assert!(far(&yf, &yc) < 1e-12, "causal {causal}: {}", far(&yf, &yc));
            assert!(far(&gf, &gc) < 1e-11, "causal {causal}: {}", far(&gf, &gc));
            let plain = x.packed_attention_fused(2, 0.5, causal, None).unwrap();
            let plain = plain.to_vec().unwrap();
            assert!(far(&yf, &plain) > 0.01, "the mask must matter");
        }
    }
}

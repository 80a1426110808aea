//! Batch normalisation, as `torch.nn.functional.batch_norm`. With batch statistics it is one
//! fused op ([`Op::BatchNorm`]: two passes forward, two backward, its gradient flowing through
//! the statistics); its second derivatives come from the same function composed of
//! differentiable ops ([`Tensor::batch_norm_composed`]), differentiated by the chain rule. With
//! running statistics it is an affine map per channel, composed. The running statistics are
//! updated in place outside the graph.

use std::sync::Arc;

use crate::autograd::{record, Op};
use crate::error::{Error, Result};
use crate::tensor::kernels::norm::{self, NormGeom, NormStats};
use crate::tensor::shape::fmt_shape;
use crate::tensor::storage::written;
use crate::tensor::{Float, Tensor};

impl<T: Float> Tensor<T> {
    /// Batch normalisation of `[n, c]`, `[n, c, l]` or `[n, c, h, w]` per channel (axis 1):
    /// `(x − mean) / √(var + eps) · weight + bias`.
    ///
    /// In training (`training = true`) the mean and the biased variance of the batch are used,
    /// and `running_mean`/`running_var` (if given, `[c]`) are updated in place as PyTorch does:
    /// `r ← (1 − momentum)·r + momentum·stat`, with the *unbiased* variance. In evaluation the
    /// running statistics are used (the batch's if none are given). `weight` and `bias` (`[c]`)
    /// are optional. Training on a batch with one value per channel is an error (its variance is
    /// undefined), as in PyTorch.
    ///
    /// ```
    /// use nabla::Tensor;
    /// let x = Tensor::<f64>::from_vec(vec![1.0, 3.0, 2.0, 6.0], &[2, 2]).unwrap();
    /// let (rm, rv) = (Tensor::zeros(&[2]).unwrap(), Tensor::ones(&[2]).unwrap());
    /// let y = x.batch_norm(Some(&rm), Some(&rv), None, None, true, 0.5, 0.0).unwrap();
    /// assert_eq!(y.to_vec().unwrap(), [-1.0, -1.0, 1.0, 1.0]);
    /// // half of the batch means 1.5 and 4.5; half of 1 plus half the unbiased variances 0.5, 4.5
    /// assert_eq!(rm.to_vec().unwrap(), [0.75, 2.25]);
    /// assert_eq!(rv.to_vec().unwrap(), [0.75, 2.75]);
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm(
        &self,
        running_mean: Option<&Tensor<T>>,
        running_var: Option<&Tensor<T>>,
        weight: Option<&Tensor<T>>,
        bias: Option<&Tensor<T>>,
        training: bool,
        momentum: f64,
        eps: f64,
    ) -> Result<Tensor<T>> {
        let s = self.shape();
        if !(2..=4).contains(&s.len()) {
            return Err(Error::shape(
                "batch_norm",
                format!(
                    "expected [n, c], [n, c, l] or [n, c, h, w], got {}",
                    fmt_shape(s)
                ),
            ));
        }
        let c = s[1];
        for (name, t) in [
            ("running_mean", running_mean),
            ("running_var", running_var),
            ("weight", weight),
            ("bias", bias),
        ] {
            if let Some(t) = t {
                if t.shape() != [c] {
                    return Err(Error::shape(
                        "batch_norm",
                        format!(
                            "{name} {} does not match the {c} channels of input {}",
                            fmt_shape(t.shape()),
                            fmt_shape(s)
                        ),
                    ));
                }
            }
        }
        if !(eps >= 0.0 && eps.is_finite() && momentum.is_finite()) {
            return Err(Error::arg(
                "batch_norm",
                format!("eps {eps} must be finite and ≥ 0, momentum {momentum} finite"),
            ));
        }
        let axes: Vec<usize> = (0..s.len()).filter(|&a| a != 1).collect();
        let count: usize = axes.iter().map(|&a| s[a]).product();
        let mut bshape = vec![1; s.len()];
        bshape[1] = c;
        let per_channel = |t: &Tensor<T>| t.reshape(&bshape);
        let use_batch = training || running_mean.is_none() || running_var.is_none();
        if use_batch {
            if training && count <= 1 {
                return Err(Error::shape(
                    "batch_norm",
                    format!(
                        "training needs more than one value per channel, input {} has {count}",
                        fmt_shape(s)
                    ),
                ));
            }
            let x = self.data()?;
            let geom = NormGeom {
                n: s[0],
                c,
                l: s[2..].iter().product(),
            };
            let (mean, var) = norm::stats(&geom, &x);
            if training {
                let unbiased = count as f64 / (count as f64 - 1.0);
                if let Some(rm) = running_mean {
                    update(rm, &mean, momentum, 1.0)?;
                }
                if let Some(rv) = running_var {
                    update(rv, &var, momentum, unbiased)?;
                }
            }
            let invstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
            let w = weight.map(|w| w.to_vec()).transpose()?;
            let b = bias.map(|b| b.to_vec()).transpose()?;
            let scale: Vec<f64> = (0..c)
                .map(|ch| invstd[ch] * w.as_ref().map_or(1.0, |w| w[ch].to_f64()))
                .collect();
            let shift: Vec<T> = (0..c)
                .map(|ch| {
                    T::from_f64(b.as_ref().map_or(0.0, |b| b[ch].to_f64()) - mean[ch] * scale[ch])
                })
                .collect();
            let scale: Vec<T> = scale.into_iter().map(T::from_f64).collect();
            // SAFETY: `affine` writes every element of its output.
            let y = unsafe {
                written("batch_norm", s, |y| {
                    norm::affine(&geom, &x, &scale, &shift, y)
                })
            }?;
            drop(x);
            let inputs: Vec<&Tensor<T>> =
                [Some(self), weight, bias].into_iter().flatten().collect();
            let stats = Arc::new(NormStats { mean, invstd });
            return Ok(record(y, s.to_vec(), &inputs, || {
                Op::BatchNorm(self.clone(), weight.cloned(), bias.cloned(), stats, eps)
            }));
        }
        // Running statistics: a per-channel affine map, y = x·scale + shift with
        // scale = weight/√(running_var + eps) and shift = bias − running_mean·scale, composed of
        // differentiable ops on the [c] values (so any order of derivative works), then one
        // product and one sum over x. Where nothing needs a gradient (inference), the same
        // arithmetic runs as one pass over x: the same bits, a quarter of the passes.
        let (rm, rv) = (
            running_mean.expect("internal: checked above"),
            running_var.expect("internal: checked above"),
        );
        let inv = per_channel(&rv.detach())?
            .add_scalar(eps)?
            .pow_scalar(-0.5)?;
        let scale = match weight {
            Some(w) => inv.mul(&per_channel(w)?)?,
            None => inv,
        };
        let moved = per_channel(&rm.detach())?.mul(&scale)?;
        let shift = match bias {
            Some(b) => per_channel(b)?.sub(&moved)?,
            None => moved.neg()?,
        };
        // (`should_record` also notes the inputs for a checkpointed block's recomputation;
        // anomaly detection checks each recorded op's output, so it takes the composed path.)
        let inputs: Vec<&Tensor<T>> = [Some(self), weight, bias].into_iter().flatten().collect();
        let tracked =
            crate::autograd::should_record(&inputs) || crate::autograd::anomaly::is_detecting();
        if tracked {
            return self.mul(&scale)?.add(&shift);
        }
        let x = self.data()?;
        let geom = NormGeom {
            n: s[0],
            c,
            l: s[2..].iter().product(),
        };
        let (scale, shift) = (scale.to_vec()?, shift.to_vec()?);
        // SAFETY: `affine` writes every element of its output.
        let y = unsafe {
            written("batch_norm", s, |y| {
                norm::affine(&geom, &x, &scale, &shift, y)
            })
        }?;
        drop(x);
        Tensor::from_vec(y, s)
    }
}

impl<T: Float> Tensor<T> {
    /// Batch normalisation with the batch's statistics, composed of differentiable ops (mean,
    /// subtraction, power, product): the same function as the fused op, which its rule
    /// differentiates by the chain rule when a gradient must itself be differentiable.
    pub(crate) fn batch_norm_composed(
        &self,
        weight: Option<&Tensor<T>>,
        bias: Option<&Tensor<T>>,
        eps: f64,
    ) -> Result<Tensor<T>> {
        let s = self.shape();
        let axes: Vec<usize> = (0..s.len()).filter(|&a| a != 1).collect();
        let mut bshape = vec![1; s.len()];
        bshape[1] = s[1];
        let centred = self.sub(&self.mean(&axes, true)?)?;
        let var = centred.square()?.mean(&axes, true)?;
        let y = centred.mul(&var.add_scalar(eps)?.pow_scalar(-0.5)?)?;
        let y = match weight {
            Some(w) => y.mul(&w.reshape(&bshape)?)?,
            None => y,
        };
        match bias {
            Some(b) => y.add(&b.reshape(&bshape)?),
            None => Ok(y),
        }
    }

    /// The gradients of the fused batch normalisation of `x` (batch statistics `st`) for the
    /// output gradient `self`, each where `need` asks: `(dx, dweight, dbias)`, plain values
    /// (nothing recorded).
    pub(crate) fn batch_norm_grads(
        &self,
        x: &Tensor<T>,
        weight: Option<&Tensor<T>>,
        st: &NormStats,
        need: [bool; 3],
    ) -> Result<[Option<Tensor<T>>; 3]> {
        let s = x.shape();
        let (c, geom) = (
            s[1],
            NormGeom {
                n: s[0],
                c: s[1],
                l: s[2..].iter().product(),
            },
        );
        let (gy, xd) = (self.data()?, x.data()?);
        let (sg, sgx) = norm::grad_sums(&geom, &gy, &xd, &st.mean, &st.invstd);
        let vector =
            |v: &[f64]| Tensor::from_vec(v.iter().map(|&a| T::from_f64(a)).collect(), &[c]);
        let dx = if need[0] {
            let w = weight.map(|w| w.to_vec()).transpose()?;
            let k: Vec<f64> = (0..c)
                .map(|ch| st.invstd[ch] * w.as_ref().map_or(1.0, |w| w[ch].to_f64()))
                .collect();
            // SAFETY: `input_grad` writes every element of its output.
            let dx = unsafe {
                written("batch_norm", s, |dx| {
                    norm::input_grad(&geom, &gy, &xd, &st.mean, &st.invstd, &k, (&sg, &sgx), dx)
                })
            }?;
            Some(Tensor::from_vec(dx, s)?)
        } else {
            None
        };
        Ok([
            dx,
            need[1].then(|| vector(&sgx)).transpose()?,
            need[2].then(|| vector(&sg)).transpose()?,
        ])
    }
}

/// `r ← (1 − momentum)·r + momentum·scale·stat`, in place (a version bump).
fn update<T: Float>(r: &Tensor<T>, stat: &[f64], momentum: f64, scale: f64) -> Result<()> {
    r.update_data(|d| {
        for (v, s) in d.iter_mut().zip(stat) {
            *v = T::from_f64((1.0 - momentum) * v.to_f64() + momentum * scale * s);
        }
    })
}

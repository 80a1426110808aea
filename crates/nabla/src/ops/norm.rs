//! Batch normalisation, as `torch.nn.functional.batch_norm`: composed of differentiable ops
//! (mean, subtraction, product, power), so its gradient flows through the batch statistics and
//! gradients of gradients work; the running statistics are updated in place outside the graph.

use crate::autograd::no_grad;
use crate::error::{Error, Result};
use crate::tensor::shape::fmt_shape;
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
        let y = if use_batch {
            if training && count <= 1 {
                return Err(Error::shape(
                    "batch_norm",
                    format!(
                        "training needs more than one value per channel, input {} has {count}",
                        fmt_shape(s)
                    ),
                ));
            }
            let mean = self.mean(&axes, true)?;
            let centred = self.sub(&mean)?;
            let var = centred.square()?.mean(&axes, true)?;
            if training {
                let unbiased = count as f64 / (count as f64 - 1.0);
                no_grad(|| -> Result<()> {
                    if let Some(rm) = running_mean {
                        update(rm, &mean.reshape(&[c])?, momentum, 1.0)?;
                    }
                    if let Some(rv) = running_var {
                        update(rv, &var.reshape(&[c])?, momentum, unbiased)?;
                    }
                    Ok(())
                })?;
            }
            centred.mul(&var.add_scalar(eps)?.pow_scalar(-0.5)?)?
        } else {
            let (rm, rv) = (
                running_mean.expect("internal: checked above"),
                running_var.expect("internal: checked above"),
            );
            let inv = per_channel(&rv.detach())?
                .add_scalar(eps)?
                .pow_scalar(-0.5)?;
            self.sub(&per_channel(&rm.detach())?)?.mul(&inv)?
        };
        let y = match weight {
            Some(w) => y.mul(&per_channel(w)?)?,
            None => y,
        };
        match bias {
            Some(b) => y.add(&per_channel(b)?),
            None => Ok(y),
        }
    }
}

/// `r ← (1 − momentum)·r + momentum·scale·stat`, in place (a version bump).
fn update<T: Float>(r: &Tensor<T>, stat: &Tensor<T>, momentum: f64, scale: f64) -> Result<()> {
    let stat = stat.to_vec()?;
    let (keep, take) = (T::from_f64(1.0 - momentum), T::from_f64(momentum * scale));
    r.update_data(|d| {
        for (v, s) in d.iter_mut().zip(&stat) {
            *v = keep * *v + take * *s;
        }
    })
}

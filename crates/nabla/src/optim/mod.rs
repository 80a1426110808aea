//! Optimizers that update parameters in place from a [`GradStore`], learning-rate schedules,
//! and gradient clipping.

mod adam;
mod clip;
mod schedule;
mod sgd;

pub use adam::{Adam, AdamConfig};
pub(crate) use clip::clip_scale;
pub use clip::{clip_grad_norm, grad_norm};
pub use schedule::LrSchedule;
pub use sgd::{Sgd, SgdConfig};

use crate::autograd::GradStore;
use crate::error::{Error, Result};
use crate::tensor::shape::fmt_shape;
use crate::tensor::{Float, Tensor};

/// Everything an optimizer carries between steps, for inspection and checkpoints.
#[derive(Debug, Clone)]
pub struct OptimizerState<T: Float = f32> {
    /// `sgd`, `adam` or `adamw`.
    pub kind: String,
    /// Steps taken so far.
    pub steps: u64,
    /// Hyper-parameters (learning rate included) as JSON.
    pub config: String,
    /// Per-parameter buffers named `{buffer}.{parameter}`, e.g. `exp_avg.layers.0.weight`.
    pub buffers: Vec<(String, Tensor<T>)>,
}

/// Updates parameters from gradients. The optimizer holds handles to the parameters (sharing
/// their storage), so `step` changes the model in place.
pub trait Optimizer<T: Float = f32> {
    /// One update of every parameter that has a gradient in `grads` (others are left alone).
    fn step(&mut self, grads: &GradStore<T>) -> Result<()>;
    /// [`step`](Optimizer::step) with every gradient multiplied by `scale` first (rounded to
    /// `T`, as [`clip_grad_norm`] scales them): what clipping by the global norm needs. The
    /// default scales copies of the gradients and steps; [`Adam`] and [`Sgd`] multiply inside
    /// their update instead (the same values, one pass over the gradients fewer).
    ///
    /// ```
    /// use nabla::optim::{Optimizer, Sgd, SgdConfig};
    /// use nabla::Tensor;
    /// let w = Tensor::<f32>::from_vec(vec![1.0], &[1]).unwrap().requires_grad();
    /// let grads = w.mul_scalar(4.0).unwrap().sum_all().unwrap().backward().unwrap(); // 4
    /// let mut opt = Sgd::new(vec![("w".into(), w.clone())], SgdConfig::new(0.5)).unwrap();
    /// opt.step_scaled(&grads, 0.25).unwrap(); // 1 − 0.5·(4·0.25)
    /// assert_eq!(w.to_vec().unwrap(), [0.5]);
    /// ```
    fn step_scaled(&mut self, grads: &GradStore<T>, scale: f64) -> Result<()> {
        if scale == 1.0 {
            return self.step(grads);
        }
        // A fresh store: each parameter's gradient scaled once, even if it is listed twice.
        let mut scaled = GradStore::new();
        let params: Vec<Tensor<T>> = self.params().iter().map(|(_, p)| p.clone()).collect();
        for p in &params {
            if let (None, Some(g)) = (scaled.get(p), grads.get(p)) {
                scaled.insert(p, g.detach().mul_scalar(scale)?);
            }
        }
        self.step(&scaled)
    }
    /// The live learning rate (the configuration's base rate until [`Optimizer::set_lr`]).
    fn lr(&self) -> f64;
    /// Sets the live learning rate (schedules call this before each step); the configuration
    /// keeps its base rate, which is what [`Optimizer::state`] saves and `load_state` restores
    /// as the live rate.
    fn set_lr(&mut self, lr: f64);
    /// Steps taken.
    fn steps(&self) -> u64;
    /// The named parameters being optimised.
    fn params(&self) -> &[(String, Tensor<T>)];
    /// A snapshot of the state.
    fn state(&self) -> OptimizerState<T>;
    /// Restores a snapshot taken by the same kind of optimizer over the same parameters.
    fn load_state(&mut self, state: &OptimizerState<T>) -> Result<()>;
}

/// Element count above which parameter updates are split across threads (element-wise, so
/// the result does not depend on the thread count).
const PAR_UPDATE: usize = 1 << 15;

/// Applies `f` to matching chunks of a parameter, its gradient and its `N` state buffers
/// (none for plain SGD, one momentum, Adam's two moments), in parallel for large parameters.
/// Element-wise, so the result does not depend on the thread count. Each chunk runs compiled for
/// the active tier ([`crate::isa::vectorized`]): `f` should be an `#[inline(always)]` closure
/// whose loops hold no branch (see there).
pub(crate) fn par_update<T: Float, const N: usize>(
    w: &mut [T],
    g: &[T],
    state: [&mut [T]; N],
    f: impl Fn(&mut [T], &[T], [&mut [T]; N]) + Sync + Send,
) {
    use rayon::prelude::*;
    if w.len() < PAR_UPDATE {
        return crate::isa::vectorized(
            #[inline(always)]
            || f(w, g, state),
        );
    }
    const CHUNK: usize = 1 << 13;
    let mut state = state.map(|s| s.chunks_mut(CHUNK));
    // Chunk i of every slice together (a shorter buffer gives empty chunks at the end; the
    // update loops zip their slices, so they stop at the shortest, as one loop over all would).
    let chunks: Vec<_> = w
        .chunks_mut(CHUNK)
        .zip(g.chunks(CHUNK))
        .map(|(w, g)| {
            let s: [&mut [T]; N] = std::array::from_fn(|i| state[i].next().unwrap_or_default());
            (w, g, s)
        })
        .collect();
    chunks.into_par_iter().for_each(|(w, g, s)| {
        crate::isa::vectorized(
            #[inline(always)]
            || f(w, g, s),
        )
    });
}

/// Checks a learning rate (finite and ≥ 0).
pub(crate) fn check_lr(op: &'static str, lr: f64) -> Result<()> {
    if lr.is_finite() && lr >= 0.0 {
        Ok(())
    } else {
        Err(Error::arg(
            op,
            format!("learning rate {lr} must be finite and ≥ 0"),
        ))
    }
}

/// The gradient of a parameter as a slice-compatible copy, checked against its shape.
pub(crate) fn grad_of<'a, T: Float>(
    op: &'static str,
    grads: &'a GradStore<T>,
    name: &str,
    p: &Tensor<T>,
) -> Result<Option<&'a Tensor<T>>> {
    match grads.get(p) {
        None => Ok(None),
        Some(g) if g.shape() == p.shape() => Ok(Some(g)),
        Some(g) => Err(Error::shape(
            op,
            format!(
                "gradient of {name} has shape {} but the parameter has {}",
                fmt_shape(g.shape()),
                fmt_shape(p.shape())
            ),
        )),
    }
}

/// A gradient's values for an in-place update of `p`: a copy when they share `p`'s storage
/// (holding a read lock on it while `p` is written would deadlock), otherwise borrowed.
pub(crate) enum GradValues<'a, T> {
    Borrowed(crate::tensor::DataRef<'a, T>),
    Owned(Vec<T>),
}

impl<T> std::ops::Deref for GradValues<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            GradValues::Borrowed(d) => d,
            GradValues::Owned(v) => v,
        }
    }
}

pub(crate) fn grad_values<'a, T: Float>(
    g: &'a Tensor<T>,
    p: &Tensor<T>,
) -> Result<GradValues<'a, T>> {
    if g.storage_key() == p.storage_key() {
        Ok(GradValues::Owned(g.to_vec()?))
    } else {
        Ok(GradValues::Borrowed(g.data()?))
    }
}

/// Restores named buffers into `slots` (one per parameter) from `state`; `prefix` selects
/// the buffer kind. Unknown names or wrong shapes are errors naming them all.
pub(crate) fn load_buffers<T: Float>(
    what: &str,
    prefix: &str,
    params: &[(String, Tensor<T>)],
    state: &OptimizerState<T>,
    slots: &mut [Option<Vec<T>>],
) -> Result<()> {
    let mut problems = Vec::new();
    let mut fresh: Vec<Option<Vec<T>>> = vec![None; slots.len()];
    for (name, t) in &state.buffers {
        let Some(pname) = name.strip_prefix(prefix).and_then(|n| n.strip_prefix('.')) else {
            continue;
        };
        match params.iter().position(|(n, _)| n == pname) {
            None => problems.push(format!("buffer {name} is for an unknown parameter")),
            Some(i) if params[i].1.shape() != t.shape() => problems.push(format!(
                "buffer {name} has shape {} but the parameter has {}",
                fmt_shape(t.shape()),
                fmt_shape(params[i].1.shape())
            )),
            Some(i) => fresh[i] = Some(t.to_vec()?),
        }
    }
    if problems.is_empty() {
        slots.clone_from_slice(&fresh);
        Ok(())
    } else {
        Err(Error::Mismatch {
            what: what.to_string(),
            msg: problems.join("; "),
        })
    }
}

/// The hyper-parameters of a saved state, after checking it was saved by `kind`.
pub(crate) fn state_config<C: serde::de::DeserializeOwned, T: Float>(
    state: &OptimizerState<T>,
    kind: &str,
) -> Result<C> {
    let mismatch = |msg: String| Error::Mismatch {
        what: "optimizer state".into(),
        msg,
    };
    if state.kind != kind {
        return Err(mismatch(format!(
            "saved by '{}', loading into '{kind}'",
            state.kind
        )));
    }
    serde_json::from_str(&state.config).map_err(|e| mismatch(format!("bad {kind} config: {e}")))
}

/// Named buffers for [`OptimizerState`].
pub(crate) fn save_buffers<T: Float>(
    prefix: &str,
    params: &[(String, Tensor<T>)],
    slots: &[Option<Vec<T>>],
) -> Vec<(String, Tensor<T>)> {
    params
        .iter()
        .zip(slots)
        .filter_map(|((n, p), s)| {
            s.as_ref().map(|v| {
                let t = Tensor::from_vec(v.clone(), p.shape()).expect("internal: buffer shape");
                (format!("{prefix}.{n}"), t)
            })
        })
        .collect()
}

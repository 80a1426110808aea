//! Stochastic gradient descent with momentum, Nesterov momentum and weight decay.

use serde::{Deserialize, Serialize};

use super::{
    check_lr, grad_of, grad_values, load_buffers, par_update, save_buffers, state_config,
    Optimizer, OptimizerState,
};
use crate::autograd::GradStore;
use crate::error::{Error, Result};
use crate::tensor::{Float, Tensor};

/// Hyper-parameters of [`Sgd`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SgdConfig {
    /// Learning rate η.
    pub lr: f64,
    /// Momentum μ (0 = plain SGD).
    pub momentum: f64,
    /// Nesterov momentum (needs μ > 0).
    pub nesterov: bool,
    /// L2 weight decay λ, added to the gradient.
    pub weight_decay: f64,
}

impl SgdConfig {
    /// Plain SGD with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        SgdConfig {
            lr,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }
}

/// SGD as in PyTorch: `d = g + λw`; with momentum `b ← μb + d` (`b = d` at the first step) and
/// `d = b` (or `d + μb` for Nesterov); then `w ← w − η·d`.
pub struct Sgd<T: Float = f32> {
    /// The configuration, its `lr` the base rate (never changed by [`Optimizer::set_lr`]).
    config: SgdConfig,
    /// The live learning rate (the base rate until a schedule sets another).
    lr: f64,
    params: Vec<(String, Tensor<T>)>,
    momentum: Vec<Option<Vec<T>>>,
    steps: u64,
}

impl<T: Float> Sgd<T> {
    /// An optimizer over named parameters (e.g. `model.named_parameters()`).
    pub fn new(params: Vec<(String, Tensor<T>)>, config: SgdConfig) -> Result<Self> {
        check_lr("sgd", config.lr)?;
        let bad = |m: String| Err(Error::arg("sgd", m));
        if !(0.0..1.0).contains(&config.momentum) {
            return bad(format!("momentum {} is not in [0, 1)", config.momentum));
        }
        if config.nesterov && config.momentum == 0.0 {
            return bad("Nesterov momentum needs momentum > 0".into());
        }
        if !(config.weight_decay >= 0.0 && config.weight_decay.is_finite()) {
            return bad(format!("weight decay {} must be ≥ 0", config.weight_decay));
        }
        let momentum = vec![None; params.len()];
        Ok(Sgd {
            lr: config.lr,
            config,
            params,
            momentum,
            steps: 0,
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }
}

impl<T: Float> Optimizer<T> for Sgd<T> {
    fn step(&mut self, grads: &GradStore<T>) -> Result<()> {
        self.step_scaled(grads, 1.0)
    }

    fn step_scaled(&mut self, grads: &GradStore<T>, scale: f64) -> Result<()> {
        // The gradient times `scale`, as `clip_grad_norm` would have scaled it (the same
        // bits; times 1 is exact). Always multiplied: a branch on it in the loop kept the
        // compiler from vectorising the update (3× the time).
        let scale = T::from_f64(scale);
        let lr = T::from_f64(self.lr);
        let mu = T::from_f64(self.config.momentum);
        let wd = T::from_f64(self.config.weight_decay);
        let (use_momentum, nesterov) = (self.config.momentum > 0.0, self.config.nesterov);
        for ((name, p), buf) in self.params.iter().zip(self.momentum.iter_mut()) {
            let Some(g) = grad_of("sgd", grads, name, p)? else {
                continue;
            };
            let g = grad_values(g, p)?;
            if !use_momentum {
                // (a buffer loaded from a run with momentum is not kept)
                *buf = None;
            }
            p.update_data(|w| {
                if !use_momentum {
                    // No buffer: w −= lr·(scale·g + wd·w).
                    return par_update(w, &g, [], {
                        #[inline(always)]
                        move |w: &mut [T], g: &[T], []: [&mut [T]; 0]| {
                            for (w, &g) in w.iter_mut().zip(g) {
                                *w -= lr * (g * scale + wd * *w);
                            }
                        }
                    });
                }
                let fresh = buf.is_none();
                let b = buf.get_or_insert_with(|| vec![T::ZERO; w.len()]);
                // The branches stay outside the loops: inside, the conditional store to the
                // momentum kept the compiler from vectorising the loop (on every tier).
                let update = {
                    #[inline(always)]
                    move |w: &mut [T], g: &[T], [b]: [&mut [T]; 1]| {
                        let all = w.iter_mut().zip(g).zip(b.iter_mut());
                        match (fresh, nesterov) {
                            (true, false) => all.for_each(|((w, &g), b)| {
                                *b = g * scale + wd * *w;
                                *w -= lr * *b;
                            }),
                            (false, false) => all.for_each(|((w, &g), b)| {
                                *b = mu * *b + (g * scale + wd * *w);
                                *w -= lr * *b;
                            }),
                            (true, true) => all.for_each(|((w, &g), b)| {
                                let d = g * scale + wd * *w;
                                *b = d;
                                *w -= lr * (d + mu * *b);
                            }),
                            (false, true) => all.for_each(|((w, &g), b)| {
                                let d = g * scale + wd * *w;
                                *b = mu * *b + d;
                                *w -= lr * (d + mu * *b);
                            }),
                        }
                    }
                };
                par_update(w, &g, [b], update);
            })?;
        }
        self.steps += 1;
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn steps(&self) -> u64 {
        self.steps
    }

    fn params(&self) -> &[(String, Tensor<T>)] {
        &self.params
    }

    fn state(&self) -> OptimizerState<T> {
        OptimizerState {
            kind: "sgd".into(),
            steps: self.steps,
            config: serde_json::to_string(&self.config).expect("internal: config serialises"),
            buffers: save_buffers("momentum_buffer", &self.params, &self.momentum),
        }
    }

    fn load_state(&mut self, state: &OptimizerState<T>) -> Result<()> {
        let config: SgdConfig = state_config(state, "sgd")?;
        load_buffers(
            "optimizer state",
            "momentum_buffer",
            &self.params,
            state,
            &mut self.momentum,
        )?;
        self.lr = config.lr;
        self.config = config;
        self.steps = state.steps;
        Ok(())
    }
}

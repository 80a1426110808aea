//! Adam and AdamW.

use serde::{Deserialize, Serialize};

use super::{
    check_lr, grad_of, grad_values, load_buffers, par_update, save_buffers, state_config,
    Optimizer, OptimizerState,
};
use crate::autograd::GradStore;
use crate::error::{Error, Result};
use crate::tensor::{Float, Tensor};

/// Hyper-parameters of [`Adam`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdamConfig {
    /// Learning rate η.
    pub lr: f64,
    /// Decay of the first-moment average β₁.
    pub beta1: f64,
    /// Decay of the second-moment average β₂.
    pub beta2: f64,
    /// ε added to the denominator.
    pub eps: f64,
    /// Weight decay λ.
    pub weight_decay: f64,
    /// AdamW: decay the weights directly (`w ← w − ηλw`) instead of adding `λw` to the
    /// gradient.
    pub decoupled: bool,
}

impl AdamConfig {
    /// Adam with PyTorch's defaults (β = 0.9, 0.999; ε = 1e-8; no weight decay).
    pub fn adam(lr: f64) -> Self {
        AdamConfig {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
        }
    }

    /// AdamW with PyTorch's defaults (weight decay 0.01).
    pub fn adamw(lr: f64) -> Self {
        AdamConfig {
            weight_decay: 0.01,
            decoupled: true,
            ..Self::adam(lr)
        }
    }
}

/// Adam (Kingma & Ba), in PyTorch's form: at step `t`,
/// `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
/// `w ← w − (η / (1−β₁ᵗ)) · m / (√v / √(1−β₂ᵗ) + ε)`.
/// AdamW first applies `w ← w(1 − ηλ)`; Adam with weight decay adds `λw` to `g`.
pub struct Adam<T: Float = f32> {
    /// The configuration, its `lr` the base rate (never changed by [`Optimizer::set_lr`]).
    config: AdamConfig,
    /// The live learning rate (the base rate until a schedule sets another).
    lr: f64,
    params: Vec<(String, Tensor<T>)>,
    m: Vec<Option<Vec<T>>>,
    v: Vec<Option<Vec<T>>>,
    steps: u64,
}

impl<T: Float> Adam<T> {
    /// An optimizer over named parameters.
    pub fn new(params: Vec<(String, Tensor<T>)>, config: AdamConfig) -> Result<Self> {
        check_lr("adam", config.lr)?;
        let ok = (0.0..1.0).contains(&config.beta1)
            && (0.0..1.0).contains(&config.beta2)
            && config.eps > 0.0
            && config.weight_decay >= 0.0
            && config.weight_decay.is_finite();
        if !ok {
            return Err(Error::arg(
                "adam",
                format!(
                    "betas ({}, {}) must be in [0, 1), eps {} > 0, weight decay {} ≥ 0",
                    config.beta1, config.beta2, config.eps, config.weight_decay
                ),
            ));
        }
        let n = params.len();
        Ok(Adam {
            lr: config.lr,
            config,
            params,
            m: vec![None; n],
            v: vec![None; n],
            steps: 0,
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    fn kind(&self) -> &'static str {
        if self.config.decoupled {
            "adamw"
        } else {
            "adam"
        }
    }
}

impl<T: Float> Optimizer<T> for Adam<T> {
    fn step(&mut self, grads: &GradStore<T>) -> Result<()> {
        self.step_scaled(grads, 1.0)
    }

    fn step_scaled(&mut self, grads: &GradStore<T>, scale: f64) -> Result<()> {
        let c = &self.config;
        let t = (self.steps + 1) as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        let step_size = T::from_f64(self.lr / bc1);
        let (b1, b2) = (T::from_f64(c.beta1), T::from_f64(c.beta2));
        let (one_b1, one_b2) = (T::from_f64(1.0 - c.beta1), T::from_f64(1.0 - c.beta2));
        let k = Update {
            scale: T::from_f64(scale),
            decoupled: c.decoupled,
            decay: T::from_f64(1.0 - self.lr * c.weight_decay),
            wd: T::from_f64(c.weight_decay),
            b1,
            b2,
            one_b1,
            one_b2,
            step_size,
            inv_bc2_sqrt: T::from_f64(1.0 / bc2_sqrt),
            eps: T::from_f64(c.eps),
            g_sq_min: (T::MIN_POSITIVE / one_b2).sqrt(),
            g_m_min: T::MIN_POSITIVE / one_b1,
            m_min: T::MIN_POSITIVE / b1,
            v_min: T::MIN_POSITIVE / b2,
            step_m_min: T::MIN_POSITIVE / step_size,
        };
        for (((name, p), m), v) in self.params.iter().zip(&mut self.m).zip(&mut self.v) {
            let Some(g) = grad_of("adam", grads, name, p)? else {
                continue;
            };
            let g = grad_values(g, p)?;
            p.update_data(|w| {
                let m = m.get_or_insert_with(|| vec![T::ZERO; w.len()]);
                let v = v.get_or_insert_with(|| vec![T::ZERO; w.len()]);
                par_update(w, &g, [m, v], {
                    #[inline(always)]
                    |w, g, [m, v]| k.run(w, g, m, v)
                });
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
        let mut buffers = save_buffers("exp_avg", &self.params, &self.m);
        buffers.extend(save_buffers("exp_avg_sq", &self.params, &self.v));
        OptimizerState {
            kind: self.kind().into(),
            steps: self.steps,
            config: serde_json::to_string(&self.config).expect("internal: config serialises"),
            buffers,
        }
    }

    fn load_state(&mut self, state: &OptimizerState<T>) -> Result<()> {
        let config: AdamConfig = state_config(state, self.kind())?;
        let (mut m, mut v) = (self.m.clone(), self.v.clone());
        load_buffers("optimizer state", "exp_avg", &self.params, state, &mut m)?;
        load_buffers("optimizer state", "exp_avg_sq", &self.params, state, &mut v)?;
        (self.m, self.v) = (m, v);
        self.lr = config.lr;
        self.config = config;
        self.steps = state.steps;
        Ok(())
    }
}

/// One Adam(W) step's constants, applied to matching parts of a parameter, its gradient and
/// its moments.
struct Update<T> {
    /// The gradient's factor, as `clip_grad_norm` would have scaled it (the same bits; times 1
    /// is exact). Always multiplied: a branch on it in the loop kept the compiler from
    /// vectorising the update (3× the time).
    scale: T,
    decoupled: bool,
    decay: T,
    wd: T,
    b1: T,
    b2: T,
    one_b1: T,
    one_b2: T,
    step_size: T,
    inv_bc2_sqrt: T,
    eps: T,
    g_sq_min: T,
    g_m_min: T,
    m_min: T,
    v_min: T,
    step_m_min: T,
}

impl<T: Float> Update<T> {
    /// The step on these values. Inlined into the tier's vectorised context
    /// (`isa::vectorized`); the branch on `decoupled` stays outside the loops (inside, its
    /// store to `w` kept the compiler from vectorising the loop under AVX2, which has no cheap
    /// masked stores: 6× the time).
    #[inline(always)]
    fn run(&self, w: &mut [T], g: &[T], m: &mut [T], v: &mut [T]) {
        let all = w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut());
        if self.decoupled {
            for (((w, &g), m), v) in all {
                *w *= self.decay;
                self.moments(w, g * self.scale, m, v);
            }
        } else {
            for (((w, &g), m), v) in all {
                let g = g * self.scale + self.wd * *w;
                self.moments(w, g, m, v);
            }
        }
    }

    /// The moments and the step for one value, after the weight decay. Inputs whose products
    /// would be subnormal are flushed to zero first (what a CPU's flush-to-zero mode does, but
    /// in the arithmetic, so the same on every machine and thread count): a subnormal operand
    /// or result costs ~100 cycles of microcode on x86, which made this loop 18× slower once
    /// gradients fell below ~1e-18. Only values within a factor of 1/(1−β) of the subnormal
    /// range are affected.
    #[inline(always)]
    fn moments(&self, w: &mut T, g: T, m: &mut T, v: &mut T) {
        let flush = |x: T, below: T| if x.abs() < below { T::ZERO } else { x };
        let gv = flush(g, self.g_sq_min);
        *m = self.b1 * flush(*m, self.m_min) + self.one_b1 * flush(g, self.g_m_min);
        *v = self.b2 * flush(*v, self.v_min) + self.one_b2 * gv * gv;
        let step = self.step_size * flush(*m, self.step_m_min);
        *w -= step / (v.sqrt() * self.inv_bc2_sqrt + self.eps);
    }
}

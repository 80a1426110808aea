//! Dropout: zeroes a random fraction of activations during training. [`Dropout`] is the layer;
//! [`Drops`] the same masks for a module that drops inside itself (a GPT's embeddings,
//! attention probabilities and residual branches).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::autograd::replayable_seed;
use crate::error::{Error, Result};
use crate::nn::{Module, SharedForward};
use crate::rng::Rng;
use crate::tensor::{Float, Tensor};

/// Checks a drop probability for `what`.
fn check_p(what: &'static str, p: f64) -> Result<()> {
    if (0.0..1.0).contains(&p) {
        Ok(())
    } else {
        Err(Error::arg(
            what,
            format!("drop probability {p} is not in [0, 1)"),
        ))
    }
}

/// How a mask's values are drawn from its seed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Masks {
    /// One generator stepped value after value ([`Dropout`]'s masks since its first version:
    /// kept, so that its runs repeat bit for bit).
    Stream,
    /// Each value from a hash of (seed, index) — a counter-based generator, as PyTorch's
    /// Philox: computed in parallel and vectorised, the same for any thread count. The
    /// sequence layers drop ~13 tensors per step; drawn one value at a time, their masks cost
    /// more than the layers' products.
    Counter,
}

/// Dropout masks drawn from one seeded generator, with a training flag: in training mode
/// [`Drops::apply`] keeps each element with probability `1 − p` and scales it by `1/(1 − p)`;
/// otherwise (or with `p = 0`) it is the identity and draws nothing. Clones share the
/// generator (each keeps its own flag), so a model whose layers drop in several places keeps
/// one generator state in its checkpoints.
#[derive(Clone)]
pub(crate) struct Drops {
    p: f64,
    training: bool,
    rng: Arc<Mutex<Rng>>,
    masks: Masks,
}

impl Drops {
    /// Masks of drop probability `p` (checked for `what`) from a generator seeded `seed`,
    /// in training mode.
    pub(crate) fn new(what: &'static str, p: f64, seed: u64) -> Result<Self> {
        check_p(what, p)?;
        Ok(Drops {
            p,
            training: true,
            rng: Arc::new(Mutex::new(Rng::new(seed))),
            masks: Masks::Counter,
        })
    }

    /// No dropout (`p = 0`): [`Drops::apply`] is always the identity.
    pub(crate) fn none() -> Self {
        Drops {
            p: 0.0,
            training: false,
            rng: Arc::new(Mutex::new(Rng::new(0))),
            masks: Masks::Counter,
        }
    }

    /// The drop probability.
    pub(crate) fn p(&self) -> f64 {
        self.p
    }

    /// Whether [`Drops::apply`] drops anything now (training mode and `p > 0`).
    pub(crate) fn active(&self) -> bool {
        self.training && self.p > 0.0
    }

    pub(crate) fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    /// `x` with a fresh mask applied (training mode, `p > 0`), else `x` itself. One draw from
    /// the generator seeds each mask; inside a checkpointed segment's recomputation the same
    /// seed is replayed, so the same mask comes back.
    pub(crate) fn apply<T: Float>(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        if !self.active() {
            return Ok(x.clone());
        }
        let scale = T::from_f64(1.0 / (1.0 - self.p));
        let seed = replayable_seed(|| {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            rng.next_u64()
        })?;
        let mask = match self.masks {
            Masks::Stream => {
                let mut rng = Rng::new(seed);
                (0..x.numel())
                    .map(|_| {
                        if rng.uniform() >= self.p {
                            scale
                        } else {
                            T::ZERO
                        }
                    })
                    .collect()
            }
            Masks::Counter => counter_mask(x.numel(), self.p, scale, seed),
        };
        x.mul(&Tensor::from_vec(mask, x.shape())?)
    }

    /// The generator's state under the key `rng` (nothing without dropout).
    pub(crate) fn extra_state(&self) -> BTreeMap<String, String> {
        if self.p == 0.0 {
            return BTreeMap::new();
        }
        let rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        BTreeMap::from([("rng".to_string(), rng.state_text())])
    }

    /// Restores [`Drops::extra_state`] (a missing key leaves the state as it is).
    pub(crate) fn load_extra_state(&self, state: &BTreeMap<String, String>) -> Result<()> {
        if let Some(v) = state.get("rng") {
            *self.rng.lock().unwrap_or_else(|e| e.into_inner()) = Rng::from_state_text(v)?;
        }
        Ok(())
    }
}

/// MurmurHash3's 32-bit finaliser: every input bit flips each output bit with probability ~½.
#[inline(always)]
fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Values per run of [`counter_mask`]: runs start on multiples of it, so an index's upper 32
/// bits are the same through a run.
const MASK_RUN: usize = 4096;

/// A keep-mask of `n` values: value `i` is `scale` where `fmix32(fmix32(lo(i) ^ s₀) +
/// (hi(i) ^ s₁))` — `lo`/`hi` the index's 32-bit halves, `s₀`/`s₁` the seed's — is at least
/// `⌈p·2³²⌉`, else 0. Runs of [`MASK_RUN`] values are shared among threads from 2¹⁶ values on
/// and vectorised on the active tier; the values do not depend on either.
pub(crate) fn counter_mask<T: Float>(n: usize, p: f64, scale: T, seed: u64) -> Vec<T> {
    let mut out = vec![T::ZERO; n];
    // Compared as 32-bit values (a 64-bit unsigned compare has no AVX2 instruction: the loop
    // ran one value at a time there); p within 2⁻³² of 1 keeps nothing.
    let Ok(threshold) = u32::try_from((p * 4_294_967_296.0).ceil() as u64) else {
        return out;
    };
    let (s0, s1) = (seed as u32, (seed >> 32) as u32);
    crate::tensor::kernels::for_each_run_above(
        &mut out,
        MASK_RUN,
        crate::tensor::kernels::ELEMENTWISE_THRESHOLD,
        |r, o| {
            let start = (r * MASK_RUN) as u64;
            let (lo, hi) = (start as u32, (start >> 32) as u32);
            let h1 = hi ^ s1;
            // A `move` closure: values captured by reference are read through pointers the
            // compiler cannot tell from the output's, and the loop stays scalar.
            crate::isa::vectorized(
                #[inline(always)]
                move || {
                    for (j, v) in o.iter_mut().enumerate() {
                        let h = fmix32(fmix32(lo.wrapping_add(j as u32) ^ s0).wrapping_add(h1));
                        *v = if h >= threshold { scale } else { T::ZERO };
                    }
                },
            )
        },
    );
    out
}

/// In training mode each element is kept with probability `1 − p` and scaled by `1/(1 − p)`
/// (so the expected activation is unchanged); in evaluation mode it is the identity. The mask
/// comes from the layer's own seeded generator, whose state checkpoints carry.
pub struct Dropout {
    drops: Drops,
}

impl Dropout {
    /// Dropout with drop probability `p` in `[0, 1)`, starting in training mode.
    pub fn new(p: f64, seed: u64) -> Result<Self> {
        let mut drops = Drops::new("Dropout", p, seed)?;
        drops.masks = Masks::Stream;
        Ok(Dropout { drops })
    }

    /// The drop probability.
    pub fn p(&self) -> f64 {
        self.drops.p()
    }
}

impl<T: Float> Module<T> for Dropout {
    fn forward_cached(
        &self,
        x: &Tensor<T>,
        _cache: &mut crate::nn::KvCache<T>,
    ) -> Result<Tensor<T>> {
        self.forward(x)
    }
    fn forward(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        self.drops.apply(x)
    }

    fn set_training(&mut self, training: bool) {
        self.drops.set_training(training);
    }

    fn shared_forward(&self) -> Option<SharedForward<T>> {
        let me = Dropout {
            drops: self.drops.clone(),
        };
        Some(Arc::new(move |x| me.forward(x)))
    }

    fn describe(&self) -> String {
        format!("Dropout(p={})", self.drops.p())
    }

    fn extra_state(&self) -> BTreeMap<String, String> {
        let rng = self.drops.rng.lock().unwrap_or_else(|e| e.into_inner());
        BTreeMap::from([("rng".to_string(), rng.state_text())])
    }

    fn load_extra_state(&mut self, state: &BTreeMap<String, String>) -> Result<()> {
        self.drops.load_extra_state(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counter masks keep 1 − p of the values (within 4σ), each scaled by 1/(1 − p), the
    /// same on one thread as on two, and differ between seeds and between positions.
    #[test]
    fn counter_masks_keep_the_expected_share_on_any_thread_count() {
        let n = 1 << 20;
        for p in [0.1, 0.5, 0.9] {
            let scale = (1.0 / (1.0 - p)) as f32;
            let m = counter_mask::<f32>(n, p, scale, 42);
            let kept = m.iter().filter(|&&v| v == scale).count();
            assert_eq!(kept + m.iter().filter(|&&v| v == 0.0).count(), n);
            let want = (1.0 - p) * n as f64;
            let sigma = (n as f64 * p * (1.0 - p)).sqrt();
            assert!(
                (kept as f64 - want).abs() < 4.0 * sigma,
                "p {p}: kept {kept} of {n}"
            );
            let one =
                crate::tensor::kernels::with_threads(1, || counter_mask::<f32>(n, p, scale, 42));
            assert_eq!(one, m, "p {p}");
            assert_ne!(counter_mask::<f32>(n, p, scale, 43), m, "p {p}");
            // Neighbouring runs are not copies of one another.
            assert_ne!(m[..MASK_RUN], m[MASK_RUN..2 * MASK_RUN]);
        }
        assert!(counter_mask::<f64>(1000, 0.0, 1.0, 7)
            .iter()
            .all(|&v| v == 1.0));
    }
}

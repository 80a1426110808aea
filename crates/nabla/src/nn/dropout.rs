//! Dropout: zeroes a random fraction of activations during training. [`Dropout`] is the layer;
//! [`Drops`] the same masks for a module that drops inside itself (a GPT's embeddings,
//! attention probabilities and residual branches).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::autograd::replayable_seed;
use crate::error::{Error, Result};
use crate::nn::{Module, SharedForward};
use crate::rng::Rng;
use crate::tensor::kernels::counter::Keep;
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
        let Some(keep) = self.keep()? else {
            return Ok(x.clone());
        };
        let mask = match self.masks {
            Masks::Stream => {
                let (mut rng, scale) = (Rng::new(keep.seed), keep.scale());
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
            Masks::Counter => keep.mask(x.numel()),
        };
        x.mul(&Tensor::from_vec(mask, x.shape())?)
    }

    /// The mask to apply now, for a kernel that drops inside itself (attention's
    /// probabilities): `None` where [`Drops::apply`] would be the identity, else one draw from
    /// the generator as its seed (replayed inside a checkpointed segment's recomputation).
    pub(crate) fn keep(&self) -> Result<Option<Keep>> {
        if !self.active() {
            return Ok(None);
        }
        let seed = replayable_seed(|| {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            rng.next_u64()
        })?;
        Ok(Some(Keep { p: self.p, seed }))
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

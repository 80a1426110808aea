//! Dropout: zeroes a random fraction of activations during training.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::autograd::replayable_seed;
use crate::error::{Error, Result};
use crate::nn::{Module, SharedForward};
use crate::rng::Rng;
use crate::tensor::{Float, Tensor};

/// In training mode each element is kept with probability `1 − p` and scaled by `1/(1 − p)`
/// (so the expected activation is unchanged); in evaluation mode it is the identity. The mask
/// comes from the layer's own seeded generator, whose state checkpoints carry.
pub struct Dropout {
    p: f64,
    training: bool,
    rng: Arc<Mutex<Rng>>,
}

impl Dropout {
    /// Dropout with drop probability `p` in `[0, 1)`, starting in training mode.
    pub fn new(p: f64, seed: u64) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::arg(
                "Dropout",
                format!("drop probability {p} is not in [0, 1)"),
            ));
        }
        Ok(Dropout {
            p,
            training: true,
            rng: Arc::new(Mutex::new(Rng::new(seed))),
        })
    }

    /// The drop probability.
    pub fn p(&self) -> f64 {
        self.p
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
        if !self.training || self.p == 0.0 {
            return Ok(x.clone());
        }
        let scale = T::from_f64(1.0 / (1.0 - self.p));
        // One draw from the layer's generator seeds this mask; inside a checkpointed segment's
        // recomputation the same seed is replayed, so the same mask comes back.
        let seed = replayable_seed(|| {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            rng.next_u64()
        })?;
        let mut rng = Rng::new(seed);
        let mask: Vec<T> = (0..x.numel())
            .map(|_| {
                if rng.uniform() >= self.p {
                    scale
                } else {
                    T::ZERO
                }
            })
            .collect();
        x.mul(&Tensor::from_vec(mask, x.shape())?)
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    fn shared_forward(&self) -> Option<SharedForward<T>> {
        let me = Dropout {
            p: self.p,
            training: self.training,
            rng: self.rng.clone(),
        };
        Some(Arc::new(move |x| me.forward(x)))
    }

    fn describe(&self) -> String {
        format!("Dropout(p={})", self.p)
    }

    fn extra_state(&self) -> BTreeMap<String, String> {
        let rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        BTreeMap::from([("rng".to_string(), rng.state_text())])
    }

    fn load_extra_state(&mut self, state: &BTreeMap<String, String>) -> Result<()> {
        if let Some(v) = state.get("rng") {
            *self.rng.lock().unwrap_or_else(|e| e.into_inner()) = Rng::from_state_text(v)?;
        }
        Ok(())
    }
}

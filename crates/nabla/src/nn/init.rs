//! Weight initialisation schemes, seeded.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::tensor::{Float, Tensor};

/// How a `[fan_in, fan_out]` weight matrix is drawn. Biases start at zero.
///
/// * Kaiming (He) keeps the variance of ReLU activations constant: `std = √(2 / fan_in)`;
///   uniform on `±√(6 / fan_in)`.
/// * Xavier (Glorot) balances forward and backward variance for tanh/sigmoid:
///   `std = √(2 / (fan_in + fan_out))`; uniform on `±√(6 / (fan_in + fan_out))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// Uniform, Kaiming scale.
    KaimingUniform,
    /// Normal, Kaiming scale.
    KaimingNormal,
    /// Uniform, Xavier scale.
    XavierUniform,
    /// Normal, Xavier scale.
    XavierNormal,
}

impl Init {
    /// A `[fan_in, fan_out]` weight drawn from `rng` (an `Err` if it cannot be allocated).
    pub fn weight<T: Float>(
        self,
        fan_in: usize,
        fan_out: usize,
        rng: &mut Rng,
    ) -> Result<Tensor<T>> {
        self.tensor(&[fan_in, fan_out], fan_in, fan_out, rng)
    }

    /// A weight of any `shape` drawn with the scale of the given fans (a convolution's are
    /// channels times kernel taps).
    pub fn tensor<T: Float>(
        self,
        shape: &[usize],
        fan_in: usize,
        fan_out: usize,
        rng: &mut Rng,
    ) -> Result<Tensor<T>> {
        let kaiming = (2.0 / fan_in.max(1) as f64).sqrt();
        let xavier = (2.0 / fan_in.saturating_add(fan_out).max(1) as f64).sqrt();
        match self {
            Init::KaimingUniform => {
                let b = 3f64.sqrt() * kaiming;
                Tensor::rand_uniform_with(shape, -b, b, rng)
            }
            Init::KaimingNormal => Tensor::randn_with(shape, 0.0, kaiming, rng),
            Init::XavierUniform => {
                let b = 3f64.sqrt() * xavier;
                Tensor::rand_uniform_with(shape, -b, b, rng)
            }
            Init::XavierNormal => Tensor::randn_with(shape, 0.0, xavier, rng),
        }
    }
}

impl fmt::Display for Init {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Init::KaimingUniform => "kaiming_uniform",
            Init::KaimingNormal => "kaiming_normal",
            Init::XavierUniform => "xavier_uniform",
            Init::XavierNormal => "xavier_normal",
        })
    }
}

impl FromStr for Init {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "kaiming_uniform" => Init::KaimingUniform,
            "kaiming_normal" => Init::KaimingNormal,
            "xavier_uniform" => Init::XavierUniform,
            "xavier_normal" => Init::XavierNormal,
            _ => {
                return Err(Error::arg(
                    "init",
                    format!(
                        "unknown scheme '{s}' (kaiming_uniform, kaiming_normal, xavier_uniform, \
                         xavier_normal)"
                    ),
                ))
            }
        })
    }
}

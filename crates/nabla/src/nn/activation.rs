//! Element-wise activation functions as modules.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use std::sync::Arc;

use crate::nn::{Module, SharedForward};
use crate::tensor::{Float, Tensor};

/// An element-wise non-linearity. Without one between them, stacked linear layers collapse
/// into a single linear map.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
    /// `x` for x > 0, `slope·x` otherwise.
    LeakyRelu(f64),
    /// `1 / (1 + e^−x)`.
    Sigmoid,
    /// `tanh x`.
    Tanh,
    /// GELU (tanh approximation).
    Gelu,
    /// `ln(1 + eˣ)`.
    Softplus,
    /// `x`.
    Identity,
}

impl Activation {
    /// Applies the function.
    pub fn apply<T: Float>(self, x: &Tensor<T>) -> Result<Tensor<T>> {
        match self {
            Activation::Relu => x.relu(),
            Activation::LeakyRelu(s) => x.leaky_relu(s),
            Activation::Sigmoid => x.sigmoid(),
            Activation::Tanh => x.tanh(),
            Activation::Gelu => x.gelu(),
            Activation::Softplus => x.softplus(),
            Activation::Identity => Ok(x.clone()),
        }
    }
}

impl<T: Float> Module<T> for Activation {
    fn forward(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        self.apply(x)
    }
    fn forward_cached(
        &self,
        x: &Tensor<T>,
        _cache: &mut crate::nn::KvCache<T>,
    ) -> Result<Tensor<T>> {
        self.forward(x)
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn shared_forward(&self) -> Option<SharedForward<T>> {
        let me = *self;
        Some(Arc::new(move |x| me.apply(x)))
    }

    fn describe(&self) -> String {
        match self {
            Activation::Relu => "ReLU".into(),
            Activation::LeakyRelu(s) => format!("LeakyReLU({s})"),
            Activation::Sigmoid => "Sigmoid".into(),
            Activation::Tanh => "Tanh".into(),
            Activation::Gelu => "GELU".into(),
            Activation::Softplus => "Softplus".into(),
            Activation::Identity => "Identity".into(),
        }
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Activation::Relu => f.write_str("relu"),
            Activation::LeakyRelu(s) => write!(f, "leaky_relu:{s}"),
            Activation::Sigmoid => f.write_str("sigmoid"),
            Activation::Tanh => f.write_str("tanh"),
            Activation::Gelu => f.write_str("gelu"),
            Activation::Softplus => f.write_str("softplus"),
            Activation::Identity => f.write_str("identity"),
        }
    }
}

impl FromStr for Activation {
    type Err = Error;
    /// Parses `relu`, `leaky_relu` (slope 0.01) or `leaky_relu:SLOPE`, `sigmoid`, `tanh`,
    /// `gelu`, `softplus`, `identity` (or `none`).
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::arg(
                "activation",
                format!(
                    "unknown activation '{s}' (relu, leaky_relu[:slope], sigmoid, tanh, gelu, \
                     softplus, identity)"
                ),
            )
        };
        Ok(match s {
            "relu" => Activation::Relu,
            "leaky_relu" => Activation::LeakyRelu(0.01),
            "sigmoid" => Activation::Sigmoid,
            "tanh" => Activation::Tanh,
            "gelu" => Activation::Gelu,
            "softplus" => Activation::Softplus,
            "identity" | "none" => Activation::Identity,
            _ => match s.strip_prefix("leaky_relu:") {
                Some(v) => {
                    let slope: f64 = v.parse().map_err(|_| bad())?;
                    if !slope.is_finite() {
                        return Err(bad());
                    }
                    Activation::LeakyRelu(slope)
                }
                None => return Err(bad()),
            },
        })
    }
}

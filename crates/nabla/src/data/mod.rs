//! Data sets: MNIST-format (IDX) directories, numeric CSV, seeded synthetic sets, and the
//! batching, splitting and normalisation around them.

pub mod csv;
mod fingerprint;
pub mod idx;
mod loader;
pub mod mnist;
pub mod synthetic;
mod task;
pub mod text;

pub use fingerprint::{DataFingerprint, FileFingerprint, FINGERPRINT_HEAD_BYTES};
pub use loader::{batch_indices, Normalization, Normalizer};
pub use task::TaskData;

use crate::error::Result;
use crate::tensor::Tensor;

/// A classification data set held in memory: features `[n, d]` and one class per row.
#[derive(Debug, Clone)]
pub struct Classification {
    /// Features, `[n, d]`.
    pub x: Tensor<f32>,
    /// Class of each row, in `0..classes`.
    pub labels: Vec<usize>,
    /// Number of classes.
    pub classes: usize,
}

/// A regression data set: features `[n, d]` and targets `[n, p]`.
#[derive(Debug, Clone)]
pub struct Regression {
    /// Features, `[n, d]`.
    pub x: Tensor<f32>,
    /// Targets, `[n, p]`.
    pub y: Tensor<f32>,
}

impl Classification {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of features per sample.
    pub fn features(&self) -> usize {
        self.x.shape().get(1).copied().unwrap_or(0)
    }

    /// The rows `idx`, in that order.
    pub fn subset(&self, idx: &[usize]) -> Result<Classification> {
        Ok(Classification {
            x: self.x.index_select(0, idx)?,
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            classes: self.classes,
        })
    }

    /// A seeded random split into (train, validation) with `val_fraction` of the rows in
    /// validation.
    pub fn split(&self, val_fraction: f64, seed: u64) -> Result<(Classification, Classification)> {
        let (train, val) = loader::split_indices(self.len(), val_fraction, seed)?;
        Ok((self.subset(&train)?, self.subset(&val)?))
    }
}

impl Regression {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.x.shape().first().copied().unwrap_or(0)
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows `idx`, in that order.
    pub fn subset(&self, idx: &[usize]) -> Result<Regression> {
        Ok(Regression {
            x: self.x.index_select(0, idx)?,
            y: self.y.index_select(0, idx)?,
        })
    }

    /// A seeded random split into (train, validation).
    pub fn split(&self, val_fraction: f64, seed: u64) -> Result<(Regression, Regression)> {
        let (train, val) = loader::split_indices(self.len(), val_fraction, seed)?;
        Ok((self.subset(&train)?, self.subset(&val)?))
    }
}

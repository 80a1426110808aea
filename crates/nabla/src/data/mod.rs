//! Data sets. For now the embedded synthetic ones; file formats (IDX, CSV) and the loader come
//! with the data-set work.

pub mod synthetic;

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

impl Classification {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

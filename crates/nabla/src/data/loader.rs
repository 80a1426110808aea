//! Mini-batches with seeded shuffling, train/validation splits, and feature normalisation.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// The row indices of each mini-batch of an epoch over `n` samples: shuffled by `rng` when
/// given (the same generator state gives the same order), the last short batch kept unless
/// `drop_last`.
pub fn batch_indices(
    n: usize,
    batch: usize,
    rng: Option<&mut Rng>,
    drop_last: bool,
) -> Result<Vec<Vec<usize>>> {
    if batch == 0 {
        return Err(Error::arg("batches", "batch size must be at least 1"));
    }
    let mut order: Vec<usize> = (0..n).collect();
    if let Some(rng) = rng {
        rng.shuffle(&mut order);
    }
    Ok(order
        .chunks(batch)
        .filter(|c| !drop_last || c.len() == batch)
        .map(|c| c.to_vec())
        .collect())
}

/// Shuffled (train, validation) index sets.
pub(crate) fn split_indices(
    n: usize,
    val_fraction: f64,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    if !(0.0..1.0).contains(&val_fraction) {
        return Err(Error::arg(
            "split",
            format!("validation fraction {val_fraction} is not in [0, 1)"),
        ));
    }
    let mut order: Vec<usize> = (0..n).collect();
    Rng::new(seed).shuffle(&mut order);
    let n_val = (n as f64 * val_fraction).round() as usize;
    let val = order.split_off(n - n_val);
    Ok((order, val))
}

/// How features are normalised before training (statistics from the training set only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    /// Features as they are.
    #[default]
    None,
    /// One mean and standard deviation over all features (suits pixels).
    Global,
    /// A mean and standard deviation per feature (suits tabular data).
    PerFeature,
}

/// Fitted normalisation: `(x − mean) / std`, stored with checkpoints so that evaluation and
/// prediction see inputs exactly as training did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalizer {
    /// The mode it was fitted with.
    pub mode: Normalization,
    /// Means (one for `Global`, one per feature for `PerFeature`, none for `None`).
    pub mean: Vec<f32>,
    /// Standard deviations (1 where a feature is constant).
    pub std: Vec<f32>,
}

impl Normalizer {
    /// Fits the statistics of `x` (`[n, d]`).
    pub fn fit(x: &Tensor<f32>, mode: Normalization) -> Result<Self> {
        if x.rank() != 2 {
            return Err(Error::shape(
                "normalize",
                format!("features must be [n, d], got {:?}", x.shape()),
            ));
        }
        let d = x.shape()[1];
        let data = x.data()?;
        let stats = |vals: &mut dyn Iterator<Item = f64>| {
            let (mut n, mut s, mut s2) = (0.0, 0.0, 0.0);
            for v in vals {
                n += 1.0;
                s += v;
                s2 += v * v;
            }
            let mean = if n > 0.0 { s / n } else { 0.0 };
            let var = if n > 0.0 {
                (s2 / n - mean * mean).max(0.0)
            } else {
                0.0
            };
            let std = var.sqrt();
            (mean as f32, if std > 1e-8 { std as f32 } else { 1.0 })
        };
        let (mean, std) = match mode {
            Normalization::None => (vec![], vec![]),
            Normalization::Global => {
                let (m, s) = stats(&mut data.iter().map(|&v| v as f64));
                (vec![m], vec![s])
            }
            Normalization::PerFeature => (0..d)
                .map(|j| stats(&mut data.iter().skip(j).step_by(d.max(1)).map(|&v| v as f64)))
                .unzip(),
        };
        Ok(Normalizer { mode, mean, std })
    }

    /// Applies the normalisation to `x` (`[n, d]` with the fitted `d`), into a new tensor.
    pub fn apply(&self, x: &Tensor<f32>) -> Result<Tensor<f32>> {
        self.check(x)?;
        let mut data = x.to_vec()?;
        self.normalize(&mut data, x.shape().get(1).copied().unwrap_or(0));
        Tensor::from_vec(data, x.shape())
    }

    /// [`Normalizer::apply`] in place: rewrites `x`'s storage instead of allocating a second
    /// copy of the data (for Fashion-MNIST, 188 MB less at peak). Every tensor sharing that
    /// storage sees the change, as with any in-place write.
    ///
    /// ```
    /// use nabla::data::{Normalization, Normalizer};
    /// use nabla::Tensor;
    /// let x = Tensor::from_vec(vec![0.0f32, 2.0, 4.0, 6.0], &[2, 2])?;
    /// let n = Normalizer::fit(&x, Normalization::Global)?;
    /// let copy = n.apply(&x)?;
    /// n.apply_in_place(&x)?;
    /// assert_eq!(x.to_vec()?, copy.to_vec()?);
    /// # Ok::<(), nabla::Error>(())
    /// ```
    pub fn apply_in_place(&self, x: &Tensor<f32>) -> Result<()> {
        self.check(x)?;
        let d = x.shape().get(1).copied().unwrap_or(0);
        x.update_data(|data| self.normalize(data, d))
    }

    /// An error unless `x` has the features the normalisation was fitted on.
    fn check(&self, x: &Tensor<f32>) -> Result<()> {
        let d = x.shape().get(1).copied().unwrap_or(0);
        if self.mode == Normalization::PerFeature && (d != self.mean.len() || x.rank() != 2) {
            return Err(Error::shape(
                "normalize",
                format!(
                    "input {:?} does not have the {} features the normalisation was fitted on",
                    x.shape(),
                    self.mean.len()
                ),
            ));
        }
        Ok(())
    }

    /// Normalises row-major rows of `d` features.
    fn normalize(&self, data: &mut [f32], d: usize) {
        match self.mode {
            Normalization::None => {}
            Normalization::Global => {
                let (m, s) = (self.mean[0], self.std[0]);
                data.iter_mut().for_each(|v| *v = (*v - m) / s);
            }
            Normalization::PerFeature => {
                for row in data.chunks_mut(d.max(1)) {
                    for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                        *v = (*v - m) / s;
                    }
                }
            }
        }
    }
}

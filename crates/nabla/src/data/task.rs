//! Training or evaluation data of either task, as one type the trainer takes.

use super::text::TextData;
use super::{Classification, Normalizer, Regression};
use crate::error::Result;
use crate::tensor::Tensor;

/// Data of either task: classes or real-valued targets.
#[derive(Debug, Clone)]
pub enum TaskData {
    /// Features with one class per row.
    Class(Classification),
    /// Features with real targets.
    Reg(Regression),
    /// Windows of a token stream, each position's target the next token.
    Text(TextData),
}

impl TaskData {
    /// Rows.
    pub fn len(&self) -> usize {
        match self {
            TaskData::Class(c) => c.len(),
            TaskData::Reg(r) => r.len(),
            TaskData::Text(t) => t.len(),
        }
    }

    /// True without rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The features, `[n, d]`; for text, the whole token stream as `[1, len]` (its windows
    /// are cut by [`TaskData::rows`]).
    pub fn x(&self) -> &Tensor<f32> {
        match self {
            TaskData::Class(c) => &c.x,
            TaskData::Reg(r) => &r.x,
            TaskData::Text(t) => &t.stream,
        }
    }

    /// The model inputs of the rows (windows, for text) `idx`, in that order.
    pub fn rows(&self, idx: &[usize]) -> Result<Tensor<f32>> {
        match self {
            TaskData::Text(t) => t.inputs(idx),
            _ => self.x().index_select(0, idx),
        }
    }

    /// Features per row (positions per window, for text).
    pub fn features(&self) -> usize {
        match self {
            TaskData::Text(t) => t.context,
            _ => self.x().shape().get(1).copied().unwrap_or(0),
        }
    }

    /// Model outputs the data need: classes, or target columns.
    pub fn outputs(&self) -> usize {
        match self {
            TaskData::Class(c) => c.classes,
            TaskData::Reg(r) => r.y.shape().get(1).copied().unwrap_or(1),
            TaskData::Text(t) => t.vocab,
        }
    }

    /// True for classification data.
    pub fn is_classification(&self) -> bool {
        matches!(self, TaskData::Class(_))
    }

    /// The same rows with the features normalised.
    pub fn normalized(&self, n: &Normalizer) -> Result<TaskData> {
        Ok(match self {
            TaskData::Class(c) => TaskData::Class(Classification {
                x: n.apply(&c.x)?,
                ..c.clone()
            }),
            TaskData::Reg(r) => TaskData::Reg(Regression {
                x: n.apply(&r.x)?,
                y: r.y.clone(),
            }),
            TaskData::Text(t) => TaskData::Text(t.clone()),
        })
    }

    /// [`TaskData::normalized`] in place (no second copy of the features; see
    /// [`Normalizer::apply_in_place`]).
    pub fn normalize_in_place(&mut self, n: &Normalizer) -> Result<()> {
        if let TaskData::Text(_) = self {
            return Ok(()); // token ids are not features
        }
        n.apply_in_place(self.x())
    }

    /// The rows `idx`, in that order.
    pub fn subset(&self, idx: &[usize]) -> Result<TaskData> {
        Ok(match self {
            TaskData::Class(c) => TaskData::Class(c.subset(idx)?),
            TaskData::Reg(r) => TaskData::Reg(r.subset(idx)?),
            TaskData::Text(_) => {
                return Err(crate::error::Error::arg(
                    "text data",
                    "windows of a text are not taken as a subset (split the text instead)",
                ))
            }
        })
    }

    /// A seeded split into (train, validation).
    pub fn split(&self, val_fraction: f64, seed: u64) -> Result<(TaskData, TaskData)> {
        Ok(match self {
            TaskData::Class(c) => {
                let (a, b) = c.split(val_fraction, seed)?;
                (TaskData::Class(a), TaskData::Class(b))
            }
            TaskData::Reg(r) => {
                let (a, b) = r.split(val_fraction, seed)?;
                (TaskData::Reg(a), TaskData::Reg(b))
            }
            TaskData::Text(t) => {
                let (a, b) = TextData::split(t.tokens.to_vec(), t.vocab, t.context, val_fraction)?;
                (TaskData::Text(a), TaskData::Text(b))
            }
        })
    }

    /// FNV-1a (64-bit) of the features' and targets' bytes: identifies data that have no file
    /// (synthetic sets) in a [`DataFingerprint`](super::DataFingerprint).
    pub fn content_hash(&self) -> Result<u64> {
        let mut h = Fnv64::new();
        h.write_f32s(&self.x().to_vec()?);
        match self {
            TaskData::Class(c) => c
                .labels
                .iter()
                .for_each(|&l| h.write(&(l as u64).to_le_bytes())),
            TaskData::Reg(r) => h.write_f32s(&r.y.to_vec()?),
            TaskData::Text(t) => h.write(&(t.context as u64).to_le_bytes()),
        }
        Ok(h.finish())
    }
}

/// The 64-bit FNV-1a hash: small, fixed across platforms and releases.
pub(crate) struct Fnv64(u64);

impl Fnv64 {
    pub(crate) fn new() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_f32s(&mut self, v: &[f32]) {
        v.iter()
            .for_each(|x| self.write(&x.to_bits().to_le_bytes()));
    }

    pub(crate) fn finish(&self) -> u64 {
        self.0
    }
}

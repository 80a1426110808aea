//! What data a run was trained on, so that a resume over other data is refused.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::task::Fnv64;
use super::TaskData;
use crate::error::{Error, Result};

/// How much of each data file is hashed: its header and first MiB.
pub const FINGERPRINT_HEAD_BYTES: u64 = 1 << 20;

/// One data file: absolute path, size, and FNV-1a of its first MiB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileFingerprint {
    /// Absolute path when fingerprinted.
    pub path: PathBuf,
    /// Size in bytes.
    pub bytes: u64,
    /// FNV-1a (64-bit, hex) of the first [`FINGERPRINT_HEAD_BYTES`].
    pub head_hash: String,
}

/// The identity of a training set: its kind, where it came from, its files (or, for data with
/// no file, a hash of the contents), and the sample counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFingerprint {
    /// The kind, e.g. `fashion-mnist`, `csv`, `spiral`.
    pub kind: String,
    /// Files read (empty for generated data).
    pub files: Vec<FileFingerprint>,
    /// FNV-1a (hex) of the training rows, for data without files.
    pub content_hash: Option<String>,
    /// Training rows (after any validation split).
    pub train_samples: usize,
    /// Features per row.
    pub features: usize,
}

impl DataFingerprint {
    /// The fingerprint of `train` loaded from `files` (made absolute). With no files, the
    /// contents are hashed instead.
    pub fn new(kind: &str, files: &[PathBuf], train: &TaskData) -> Result<Self> {
        let files = files
            .iter()
            .map(|p| file_fingerprint(p))
            .collect::<Result<Vec<_>>>()?;
        let content_hash = if files.is_empty() {
            Some(format!("{:016x}", train.content_hash()?))
        } else {
            None
        };
        Ok(DataFingerprint {
            kind: kind.to_string(),
            files,
            content_hash,
            train_samples: train.len(),
            features: train.features(),
        })
    }

    /// One line: kind, files (size, hash) or content hash, samples.
    pub fn describe(&self) -> String {
        let what = if self.files.is_empty() {
            format!("content {}", self.content_hash.as_deref().unwrap_or("?"))
        } else {
            self.files
                .iter()
                .map(|f| format!("{} ({} bytes, {})", f.path.display(), f.bytes, f.head_hash))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "{}: {what}; {} training rows of {} features",
            self.kind, self.train_samples, self.features
        )
    }

    /// Ok when `self` (the data at hand) is the data `recorded` names; otherwise an error
    /// naming both.
    pub fn check_same(&self, recorded: &DataFingerprint, what: &str) -> Result<()> {
        if self == recorded {
            return Ok(());
        }
        Err(Error::Mismatch {
            what: what.to_string(),
            msg: format!(
                "it was trained on {}, but these data are {}",
                recorded.describe(),
                self.describe()
            ),
        })
    }
}

fn file_fingerprint(path: &Path) -> Result<FileFingerprint> {
    let err = |m: String| Error::file(path, m);
    let abs = std::fs::canonicalize(path).map_err(|e| err(format!("cannot resolve: {e}")))?;
    let file = std::fs::File::open(&abs).map_err(|e| err(format!("cannot open: {e}")))?;
    let bytes = file
        .metadata()
        .map_err(|e| err(format!("cannot stat: {e}")))?
        .len();
    let mut head = Vec::new();
    file.take(FINGERPRINT_HEAD_BYTES)
        .read_to_end(&mut head)
        .map_err(|e| err(format!("cannot read: {e}")))?;
    let mut h = Fnv64::new();
    h.write(&head);
    Ok(FileFingerprint {
        path: abs,
        bytes,
        head_hash: format!("{:016x}", h.finish()),
    })
}

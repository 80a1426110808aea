//! Run directories: one run at a time (an exclusive lock held for the run), never two runs'
//! files mixed (a directory holding another run's files is refused unless `--overwrite`), and
//! no temporary files left by a killed write.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The files a run writes; their presence means the directory holds a run.
pub const RUN_FILES: [&str; 5] = [
    "config.json",
    "metrics.csv",
    "metrics.json",
    "model.safetensors",
    CHECKPOINT,
];

/// Plots and reports a run may write (removed with the run's files on `--overwrite`).
const PLOTS: [&str; 6] = [
    "profile.csv",
    "loss.png",
    "accuracy.png",
    "confusion.png",
    "decision_regions.png",
    "fit.png",
];

/// The training checkpoint's file name.
pub const CHECKPOINT: &str = "checkpoint.safetensors";

const LOCK: &str = ".nabla.lock";

/// A run directory, locked for as long as this value lives.
pub struct RunDir {
    /// The directory.
    pub path: PathBuf,
    _lock: File,
}

/// How the directory is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// A new run: refuse another run's files unless `overwrite`, which removes them.
    New {
        /// `--overwrite` was given.
        overwrite: bool,
    },
    /// `--resume`: the run's own files are expected.
    Resume,
}

impl RunDir {
    /// Creates (if needed) and locks `path`, removes leftover temporary files, and applies
    /// `open`'s rule about existing files.
    pub fn open(path: &Path, open: Open) -> Result<RunDir> {
        std::fs::create_dir_all(path)
            .with_context(|| format!("{}: cannot create the run directory", path.display()))?;
        let lock_path = path.join(LOCK);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("{}: cannot open", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => bail!(
                "{}: another nabla run is using this directory (it holds {LOCK}'s lock)",
                path.display()
            ),
            Err(TryLockError::Error(e)) => {
                bail!("{}: cannot lock: {e}", lock_path.display())
            }
        }
        remove_temporaries(path)?;
        if let Open::New { overwrite } = open {
            let found: Vec<&str> = RUN_FILES
                .iter()
                .copied()
                .filter(|f| path.join(f).exists())
                .collect();
            if !found.is_empty() && !overwrite {
                bail!(
                    "{} holds another run's files ({}); use --overwrite to replace them, or \
                     --resume {} to continue that run",
                    path.display(),
                    found.join(", "),
                    path.display()
                );
            }
            // Only with --overwrite, and only the files a run writes.
            let owned = if overwrite {
                RUN_FILES.len() + PLOTS.len()
            } else {
                0
            };
            for f in RUN_FILES.iter().chain(&PLOTS).take(owned) {
                let p = path.join(f);
                if p.exists() {
                    std::fs::remove_file(&p)
                        .with_context(|| format!("{}: cannot remove", p.display()))?;
                }
            }
        }
        Ok(RunDir {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// A file in the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

/// Removes `.NAME.tmp-…` files: what a write killed mid-way leaves (`nabla::io::write_atomic`).
fn remove_temporaries(dir: &Path) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') && name.contains(".tmp-") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

//! The one error type of nabla.

use thiserror::Error;

/// Everything a user can get wrong returns one of these, never a panic.
///
/// Messages name the operation (or file) and the values involved, for example
/// `matmul: [128, 784] x [512, 256]: inner dimensions 784 and 512 differ`.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum Error {
    /// Operand shapes that the operation cannot combine.
    #[error("{op}: {msg}")]
    Shape {
        /// The operation that refused its operands.
        op: &'static str,
        /// What is wrong, with the shapes.
        msg: String,
    },
    /// An argument out of range: an axis, an index, a size, a tolerance.
    #[error("{op}: {msg}")]
    Argument {
        /// The operation that refused the argument.
        op: &'static str,
        /// What is wrong, with the value.
        msg: String,
    },
    /// A result too large to allocate (the size is computed with overflow checks first).
    #[error("{op}: {msg}")]
    Alloc {
        /// The operation whose result could not be allocated.
        op: &'static str,
        /// The size asked for, with the shape.
        msg: String,
    },
    /// A gradient was asked of a graph that cannot give it (non-scalar root, ...).
    #[error("{op}: {msg}")]
    Autograd {
        /// The operation (`backward`, `gradcheck`, ...).
        op: &'static str,
        /// What is wrong.
        msg: String,
    },
    /// A file that cannot be read, written or understood (checkpoints, data sets).
    #[error("{path}: {msg}")]
    File {
        /// The file.
        path: String,
        /// What is wrong with it.
        msg: String,
    },
    /// Training produced a non-finite loss, gradient or value: the message names the step,
    /// the first culprit and the last good checkpoint.
    #[error("{msg}")]
    Diverged {
        /// What happened, where.
        msg: String,
    },
    /// A checkpoint or configuration that does not match the model or optimizer.
    #[error("{what}: {msg}")]
    Mismatch {
        /// What was being matched (a file, a config).
        what: String,
        /// Every difference found.
        msg: String,
    },
}

impl Error {
    pub(crate) fn file(path: impl AsRef<std::path::Path>, msg: impl Into<String>) -> Self {
        Error::File {
            path: path.as_ref().display().to_string(),
            msg: msg.into(),
        }
    }
    pub(crate) fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Shape {
            op,
            msg: msg.into(),
        }
    }
    pub(crate) fn arg(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Argument {
            op,
            msg: msg.into(),
        }
    }
    pub(crate) fn alloc(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Alloc {
            op,
            msg: msg.into(),
        }
    }
    pub(crate) fn autograd(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Autograd {
            op,
            msg: msg.into(),
        }
    }
}

/// `Result` with nabla's [`Error`](enum@Error).
pub type Result<T> = std::result::Result<T, Error>;

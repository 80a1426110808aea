//! Element storage shared by a tensor and its views, with a version counter, and fallible
//! allocation of element buffers.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::shape::{checked_numel, fmt_shape};
use crate::error::{Error, Result};

/// A flat buffer of elements and the number of in-place writes it has seen. Its length never
/// changes after creation, which is what lets views check their bounds once.
pub(crate) struct Storage<T> {
    data: RwLock<Vec<T>>,
    version: AtomicU64,
}

impl<T> Storage<T> {
    pub(crate) fn new(data: Vec<T>) -> Self {
        Storage {
            data: RwLock::new(data),
            version: AtomicU64::new(0),
        }
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Vec<T>> {
        self.data.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Write access; bumps the version before the caller can change anything, so a graph that
    /// saved this storage can tell that it was modified.
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, Vec<T>> {
        let guard = self.data.write().unwrap_or_else(|e| e.into_inner());
        self.version.fetch_add(1, Ordering::AcqRel);
        guard
    }

    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub(crate) fn len(&self) -> usize {
        self.read().len()
    }
}

thread_local! {
    static LIMIT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Runs `f` with every tensor buffer allocated on this thread capped at `bytes`: a larger one
/// is an [`Error::Alloc`](crate::Error::Alloc), as if memory had run out. For services that
/// must bound what one request can allocate, and for fuzzing the error paths cheaply. The
/// previous limit is restored afterwards; limits nest (the smaller wins).
///
/// ```
/// use nabla::{tensor::with_allocation_limit, Tensor};
/// let r = with_allocation_limit(1 << 20, || Tensor::<f32>::zeros(&[1024, 1024]));
/// assert!(r.is_err()); // 4 MiB > 1 MiB
/// ```
pub fn with_allocation_limit<R>(bytes: usize, f: impl FnOnce() -> R) -> R {
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            LIMIT.with(|l| l.set(self.0));
        }
    }
    let previous = LIMIT.with(|l| l.replace(l.get().min(bytes)));
    let _restore = Restore(previous);
    f()
}

/// The allocation limit in force on this thread (`usize::MAX`: none).
pub(crate) fn allocation_limit() -> usize {
    LIMIT.with(|l| l.get())
}

fn alloc_error<T>(op: &'static str, shape: &[usize], n: usize) -> Error {
    Error::alloc(
        op,
        format!(
            "cannot allocate {} bytes for {n} values of shape {}",
            (n as u128) * std::mem::size_of::<T>() as u128,
            fmt_shape(shape)
        ),
    )
}

/// An empty buffer with room for the elements of `shape`; an impossible size is an `Err` naming
/// `op` and the shape, never an abort.
pub(crate) fn buffer<T>(op: &'static str, shape: &[usize]) -> Result<Vec<T>> {
    let n = checked_numel(op, shape)?;
    let limit = LIMIT.with(|l| l.get());
    if n.saturating_mul(std::mem::size_of::<T>()) > limit {
        return Err(Error::alloc(
            op,
            format!(
                "{} bytes for {n} values of shape {} exceed the limit of {limit} bytes set by \
                 with_allocation_limit",
                (n as u128) * std::mem::size_of::<T>() as u128,
                fmt_shape(shape)
            ),
        ));
    }
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| alloc_error::<T>(op, shape, n))?;
    Ok(v)
}

/// A buffer holding the elements of `shape`, all `value`. A large buffer is filled by all
/// threads, in place (a convolution's output of 12.8 MB took ~1.5 ms to zero on one thread
/// while the others waited).
pub(crate) fn filled<T: Copy + Send + Sync>(
    op: &'static str,
    shape: &[usize],
    value: T,
) -> Result<Vec<T>> {
    let n = checked_numel(op, shape)?;
    let mut v = buffer(op, shape)?;
    if n < 1 << 20 || crate::tensor::kernels::threads() < 2 {
        v.resize(n, value);
    } else {
        append_par(&mut v, n, |_, c| c.fill(std::mem::MaybeUninit::new(value)));
    }
    Ok(v)
}

/// A buffer of `shape`'s elements, every one written by `write` into uninitialised memory: for
/// the outputs that a kernel writes whole (a convolution's, a normalisation's, a pooling's), whose
/// zero-fill first was a pass over memory as long as the kernel's own (7% of a CNN's step).
///
/// # Safety
/// `write` writes every element of the slice it is given (an element left unwritten would be
/// read later as an uninitialised value). A panic inside it leaves nothing behind.
pub(crate) unsafe fn written<T>(
    op: &'static str,
    shape: &[usize],
    write: impl FnOnce(&mut [std::mem::MaybeUninit<T>]),
) -> Result<Vec<T>> {
    let n = checked_numel(op, shape)?;
    let mut v = buffer(op, shape)?;
    write(&mut v.spare_capacity_mut()[..n]);
    // SAFETY: `buffer` reserved room for the n elements and, by this function's contract,
    // `write` initialised all of them.
    unsafe { v.set_len(n) };
    Ok(v)
}

/// `out` with every element set to `value`, as an initialised slice (for a kernel that writes
/// only part of its output, or that reads it).
pub(crate) fn init_with<T: Copy>(out: &mut [std::mem::MaybeUninit<T>], value: T) -> &mut [T] {
    for o in out.iter_mut() {
        o.write(value);
    }
    // SAFETY: every element was written just above; `MaybeUninit<T>` has `T`'s layout.
    unsafe { &mut *(out as *mut [std::mem::MaybeUninit<T>] as *mut [T]) }
}

/// Values per chunk of [`append_par`].
pub(crate) const CHUNK: usize = 1 << 14;

/// Appends `n` values to `out`, written straight into its spare capacity by `fill(i, chunk)`
/// for the `i`-th chunk of [`CHUNK`] values, the chunks shared among the threads (no zeroing
/// pass first: for a 12.8 MB activation that pass cost as much as the op). `fill` writes every
/// value of its chunk; the length is set only after all chunks are done.
pub(crate) fn append_par<T: Copy + Send + Sync>(
    out: &mut Vec<T>,
    n: usize,
    fill: impl Fn(usize, &mut [std::mem::MaybeUninit<T>]) + Sync + Send,
) {
    use rayon::prelude::*;
    out.reserve(n);
    let start = out.len();
    out.spare_capacity_mut()[..n]
        .par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(i, chunk)| fill(i, chunk));
    // SAFETY: the capacity holds `n` more values and every chunk of them was written above
    // (each caller's `fill` writes its whole chunk); a panic in `fill` leaves the length as it was.
    unsafe { out.set_len(start + n) };
}

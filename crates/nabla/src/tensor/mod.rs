//! The tensor: a runtime shape over contiguous row-major storage, plus (when it was made by a
//! recorded operation) the [`Op`](crate::autograd::Op) that made it.
//!
//! The submodules `shape` and `kernels` are pure functions over slices; they know nothing of
//! autograd. The differentiable operations are methods in [`crate::ops`].

pub mod float;
pub(crate) mod kernels;
pub mod shape;

use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, Weak};

use crate::autograd::{self, Op};
use crate::error::{Error, Result};
use crate::rng::Rng;
pub use float::Float;
use shape::{checked_numel, fmt_shape, numel};

/// A tensor's identity: gradients are keyed by it. Clones of a tensor share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

impl TensorId {
    fn fresh() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        TensorId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

pub(crate) type Storage<T> = Arc<RwLock<Vec<T>>>;

struct Inner<T: Float> {
    id: TensorId,
    shape: Vec<usize>,
    storage: Storage<T>,
    op: Option<Op<T>>,
    requires_grad: bool,
}

/// An n-dimensional array of `f32` (default) or `f64`, cheap to clone (an `Arc`),
/// `Send + Sync`.
///
/// ```
/// use nabla::Tensor;
/// let x = Tensor::<f32>::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
/// let w = Tensor::<f32>::ones(&[2, 1]).requires_grad();
/// let loss = x.matmul(&w).unwrap().sum_all().unwrap();
/// let grads = loss.backward().unwrap();
/// assert_eq!(grads.get(&w).unwrap().to_vec(), vec![4.0, 6.0]);
/// ```
pub struct Tensor<T: Float = f32>(Arc<Inner<T>>);

impl<T: Float> Clone for Tensor<T> {
    fn clone(&self) -> Self {
        Tensor(Arc::clone(&self.0))
    }
}

/// A non-owning handle to a tensor, from [`Tensor::downgrade`]: it lets a caller observe when
/// a tensor (for example a forward activation held by a graph) has been freed.
pub struct WeakTensor<T: Float>(Weak<Inner<T>>);

impl<T: Float> WeakTensor<T> {
    /// The tensor, if something still holds it.
    pub fn upgrade(&self) -> Option<Tensor<T>> {
        self.0.upgrade().map(Tensor)
    }

    /// True while something still holds the tensor.
    pub fn is_alive(&self) -> bool {
        self.0.strong_count() > 0
    }
}

/// Read access to a tensor's elements (a read lock on its storage).
pub struct DataRef<'a, T>(RwLockReadGuard<'a, Vec<T>>);

impl<T> Deref for DataRef<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T: Float> Tensor<T> {
    pub(crate) fn from_parts(data: Vec<T>, shape: Vec<usize>, op: Option<Op<T>>) -> Self {
        debug_assert_eq!(data.len(), numel(&shape), "internal: data/shape mismatch");
        let requires_grad = op.is_some();
        Tensor(Arc::new(Inner {
            id: TensorId::fresh(),
            shape,
            storage: Arc::new(RwLock::new(data)),
            op,
            requires_grad,
        }))
    }

    /// The result of an operation: records `make_op()` only when gradients are enabled
    /// and one of `inputs` requires a gradient.
    pub(crate) fn from_op(
        data: Vec<T>,
        shape: Vec<usize>,
        inputs: &[&Tensor<T>],
        make_op: impl FnOnce() -> Op<T>,
    ) -> Self {
        let record = autograd::is_grad_enabled() && inputs.iter().any(|t| t.requires_grad_flag());
        if autograd::anomaly::is_detecting() {
            let op = make_op();
            autograd::anomaly::check_output(&op, &data, &shape);
            return Self::from_parts(data, shape, record.then_some(op));
        }
        Self::from_parts(data, shape, record.then(make_op))
    }

    /// A tensor sharing this one's storage under another shape (same element count).
    pub(crate) fn share_storage(&self, shape: Vec<usize>, op: Option<Op<T>>) -> Self {
        let requires_grad = op.is_some();
        Tensor(Arc::new(Inner {
            id: TensorId::fresh(),
            shape,
            storage: Arc::clone(&self.0.storage),
            op,
            requires_grad,
        }))
    }

    /// A tensor from row-major data and a shape; the element count must match.
    pub fn from_vec(data: Vec<T>, shape: &[usize]) -> Result<Self> {
        if data.len() != checked_numel("from_vec", shape)? {
            return Err(Error::shape(
                "from_vec",
                format!(
                    "{} values cannot fill shape {} ({} elements)",
                    data.len(),
                    fmt_shape(shape),
                    numel(shape)
                ),
            ));
        }
        Ok(Self::from_parts(data, shape.to_vec(), None))
    }

    /// A 0-dimensional tensor holding one value.
    pub fn scalar(v: T) -> Self {
        Self::from_parts(vec![v], vec![], None)
    }

    /// A tensor of the given shape with every element `v`.
    ///
    /// Like `vec![v; n]`, the infallible constructors (`full`, `zeros`, `ones`, the random
    /// ones) panic only if the element count overflows memory; use [`Tensor::from_vec`] for
    /// shapes that come from untrusted input.
    pub fn full(shape: &[usize], v: T) -> Self {
        Self::from_parts(vec![v; numel(shape)], shape.to_vec(), None)
    }

    /// All zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        Self::full(shape, T::ZERO)
    }

    /// All ones.
    pub fn ones(shape: &[usize]) -> Self {
        Self::full(shape, T::ONE)
    }

    /// `start, start + step, …` below `end` (above it for a negative step), as a 1-D tensor.
    pub fn arange(start: f64, end: f64, step: f64) -> Result<Self> {
        if step == 0.0 || !step.is_finite() || !start.is_finite() || !end.is_finite() {
            return Err(Error::arg(
                "arange",
                format!("start {start}, end {end}, step {step}: need finite values and step ≠ 0"),
            ));
        }
        let count = ((end - start) / step).ceil().max(0.0);
        if count > (1u64 << 40) as f64 {
            return Err(Error::arg(
                "arange",
                format!("start {start}, end {end}, step {step}: {count} elements is too many"),
            ));
        }
        let n = count as usize;
        let data: Vec<T> = (0..n)
            .map(|i| T::from_f64(start + step * i as f64))
            .collect();
        Ok(Self::from_parts(data, vec![n], None))
    }

    /// Uniform random values in [lo, hi), from a seed.
    pub fn rand_uniform(shape: &[usize], lo: f64, hi: f64, seed: u64) -> Self {
        Self::rand_uniform_with(shape, lo, hi, &mut Rng::new(seed))
    }

    /// Uniform random values in [lo, hi), drawn from `rng`.
    pub fn rand_uniform_with(shape: &[usize], lo: f64, hi: f64, rng: &mut Rng) -> Self {
        let data = (0..numel(shape))
            .map(|_| T::from_f64(rng.uniform_in(lo, hi)))
            .collect();
        Self::from_parts(data, shape.to_vec(), None)
    }

    /// Normal random values with the given mean and standard deviation, from a seed.
    pub fn randn(shape: &[usize], mean: f64, std: f64, seed: u64) -> Self {
        Self::randn_with(shape, mean, std, &mut Rng::new(seed))
    }

    /// Normal random values drawn from `rng`.
    pub fn randn_with(shape: &[usize], mean: f64, std: f64, rng: &mut Rng) -> Self {
        let data = (0..numel(shape))
            .map(|_| T::from_f64(mean + std * rng.normal()))
            .collect();
        Self::from_parts(data, shape.to_vec(), None)
    }

    /// This tensor as a leaf that asks for a gradient (a trainable parameter or an input
    /// to be checked). A tensor made by an operation is detached first.
    pub fn requires_grad(self) -> Self {
        self.set_requires_grad(true)
    }

    /// Sets whether this tensor, as a leaf, asks for a gradient. Keeps the storage, and keeps
    /// the id when nothing changes or no other clone of this handle exists; otherwise the result
    /// is a new leaf (a new id) sharing the storage.
    pub fn set_requires_grad(self, on: bool) -> Self {
        if self.is_leaf() && self.0.requires_grad == on {
            return self;
        }
        match Arc::try_unwrap(self.0) {
            Ok(mut inner) if inner.op.is_none() => {
                inner.requires_grad = on;
                Tensor(Arc::new(inner))
            }
            Ok(inner) => {
                let t = Tensor(Arc::new(inner));
                let mut d = t.share_storage(t.shape().to_vec(), None);
                Arc::get_mut(&mut d.0)
                    .expect("internal: fresh tensor is unique")
                    .requires_grad = on;
                d
            }
            Err(shared) => {
                let t = Tensor(shared);
                let mut d = t.share_storage(t.shape().to_vec(), None);
                Arc::get_mut(&mut d.0)
                    .expect("internal: fresh tensor is unique")
                    .requires_grad = on;
                d
            }
        }
    }

    /// A tensor with the same storage that is cut from the graph: no op, no gradient.
    pub fn detach(&self) -> Self {
        self.share_storage(self.shape().to_vec(), None)
    }

    /// Whether gradients flow to or through this tensor.
    pub fn requires_grad_flag(&self) -> bool {
        self.0.requires_grad
    }

    /// True for tensors not made by a recorded operation.
    pub fn is_leaf(&self) -> bool {
        self.0.op.is_none()
    }

    /// The identity under which gradients of this tensor are stored.
    pub fn id(&self) -> TensorId {
        self.0.id
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        numel(&self.0.shape)
    }

    /// Bytes of element storage.
    pub fn nbytes(&self) -> usize {
        self.numel() * std::mem::size_of::<T>()
    }

    /// The operation that made this tensor, if it was recorded.
    pub fn op(&self) -> Option<&Op<T>> {
        self.0.op.as_ref()
    }

    /// Read access to the elements, row-major.
    pub fn data(&self) -> DataRef<'_, T> {
        DataRef(self.0.storage.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Modifies the elements in place (optimizers use this). Every tensor sharing this storage
    /// (clones, reshapes, detached copies) sees the change.
    pub fn update_data<R>(&self, f: impl FnOnce(&mut [T]) -> R) -> R {
        let mut guard = self.0.storage.write().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// A pointer identifying the storage (views share it); used to count saved bytes once.
    pub(crate) fn storage_key(&self) -> usize {
        Arc::as_ptr(&self.0.storage) as *const () as usize
    }

    /// The elements, row-major, copied out.
    pub fn to_vec(&self) -> Vec<T> {
        self.data().to_vec()
    }

    /// The value of a one-element tensor.
    pub fn item(&self) -> Result<T> {
        if self.numel() != 1 {
            return Err(Error::shape(
                "item",
                format!(
                    "tensor of shape {} has {} elements, not 1",
                    fmt_shape(self.shape()),
                    self.numel()
                ),
            ));
        }
        Ok(self.data()[0])
    }

    /// A copy converted to another element type (not recorded in the graph).
    pub fn cast<U: Float>(&self) -> Tensor<U> {
        let data = self
            .data()
            .iter()
            .map(|&v| U::from_f64(v.to_f64()))
            .collect();
        Tensor::from_parts(data, self.shape().to_vec(), None)
    }

    /// A weak handle that does not keep this tensor (or the graph behind it) alive.
    pub fn downgrade(&self) -> WeakTensor<T> {
        WeakTensor(Arc::downgrade(&self.0))
    }

    /// True when every element is finite (no NaN, no ±∞).
    pub fn all_finite(&self) -> bool {
        self.data().iter().all(|v| v.is_finite())
    }
}

impl<T: Float> fmt::Debug for Tensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let data = self.data();
        let shown: Vec<String> = data.iter().take(8).map(|v| format!("{v}")).collect();
        let more = if data.len() > 8 { ", …" } else { "" };
        write!(
            f,
            "Tensor<{}>{} [{}{}]",
            T::DTYPE,
            fmt_shape(self.shape()),
            shown.join(", "),
            more
        )?;
        if let Some(op) = self.op() {
            write!(f, " ← {}", op.kind().name())?;
        } else if self.requires_grad_flag() {
            write!(f, " (requires grad)")?;
        }
        Ok(())
    }
}

impl<T: Float> Drop for Inner<T> {
    /// Dismantles the graph behind this tensor with an explicit stack: the default recursive
    /// drop would overflow the stack on a long chain of operations.
    fn drop(&mut self) {
        let Some(op) = self.op.take() else { return };
        let mut stack = vec![op];
        while let Some(op) = stack.pop() {
            for input in op.into_inputs() {
                if let Ok(mut inner) = Arc::try_unwrap(input.0) {
                    if let Some(op) = inner.op.take() {
                        stack.push(op);
                    }
                }
            }
        }
    }
}

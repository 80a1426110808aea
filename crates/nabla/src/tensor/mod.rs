//! The tensor: a [`Layout`] (offset, shape, strides) over shared storage, plus (when it was
//! made by a recorded operation) a graph node that the autograd layer reads.
//!
//! This module knows nothing of autograd: the node is an opaque `GraphNode` implemented
//! above it. The submodules `shape`, `view` and `kernels` are pure functions; the
//! differentiable operations are methods in `crate::ops`.

pub mod float;
pub(crate) mod kernels;
pub mod shape;
pub(crate) mod storage;
pub mod view;

use std::any::Any;
use std::fmt;
use std::ops::{Deref, Range};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLockReadGuard, Weak};

use crate::error::{Error, Result};
use crate::rng::Rng;
pub use float::Float;
use shape::{checked_numel, fmt_shape, numel};
pub use storage::with_allocation_limit;
use storage::Storage;
pub use view::Layout;

/// A tensor's identity: gradients are keyed by it. Clones of a tensor share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl TensorId {
    fn fresh() -> Self {
        TensorId(NEXT_ID.fetch_add(1, Ordering::Relaxed))
    }

    /// The id the next tensor will get: every tensor made before this call has a smaller id.
    pub(crate) fn next() -> Self {
        TensorId(NEXT_ID.load(Ordering::Relaxed))
    }
}

/// What a tensor made by a recorded operation remembers about how it was made. Implemented by
/// the autograd layer; the tensor only needs to reach the inputs (to dismantle long graphs
/// without recursion) and a name (for printing).
pub(crate) trait GraphNode<T: Float>: Send + Sync + 'static {
    /// The tensors the operation read.
    fn inputs(&self) -> Vec<&Tensor<T>>;
    /// Moves the inputs out, dropping the rest.
    fn into_inputs(self: Box<Self>) -> Vec<Tensor<T>>;
    /// The operation's name.
    fn name(&self) -> &'static str;
    /// For the autograd layer to get its own type back.
    fn as_any(&self) -> &dyn Any;
}

struct Inner<T: Float> {
    id: TensorId,
    layout: Layout,
    storage: Arc<Storage<T>>,
    node: Option<Box<dyn GraphNode<T>>>,
    requires_grad: bool,
}

/// An n-dimensional array of `f32` (default) or `f64`, cheap to clone (an `Arc`),
/// `Send + Sync`: a shared storage read through a [`Layout`] (offset, shape, strides), so
/// transposes, permutations, narrowing and broadcasting are views that copy nothing.
///
/// ```
/// use nabla::Tensor;
/// # fn main() -> nabla::Result<()> {
/// let x = Tensor::<f32>::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2])?;
/// let w = Tensor::<f32>::ones(&[2, 1])?.requires_grad();
/// let loss = x.matmul(&w)?.sum_all()?;
/// let grads = loss.backward()?;
/// assert_eq!(grads.get(&w).unwrap().to_vec()?, vec![4.0, 6.0]);
/// # Ok(()) }
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

enum DataInner<'a, T> {
    Borrowed(RwLockReadGuard<'a, Vec<T>>, Range<usize>),
    Owned(Vec<T>),
}

/// Read access to a tensor's elements in row-major order: a read lock on the storage when the
/// tensor is contiguous, otherwise a copy.
pub struct DataRef<'a, T>(DataInner<'a, T>);

impl<T> Deref for DataRef<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match &self.0 {
            DataInner::Borrowed(g, r) => &g[r.clone()],
            DataInner::Owned(v) => v,
        }
    }
}

/// The whole storage under a read lock, with the layout to read it through (for kernels that
/// read strided inputs directly).
pub(crate) struct Strided<'a, T> {
    pub(crate) data: RwLockReadGuard<'a, Vec<T>>,
    pub(crate) layout: &'a Layout,
}

impl<T: Float> Tensor<T> {
    pub(crate) fn from_parts(
        data: Vec<T>,
        shape: Vec<usize>,
        node: Option<Box<dyn GraphNode<T>>>,
    ) -> Self {
        assert_eq!(data.len(), numel(&shape), "internal: data/shape mismatch");
        let requires_grad = node.is_some();
        Tensor(Arc::new(Inner {
            id: TensorId::fresh(),
            layout: Layout::contiguous(shape),
            storage: Arc::new(Storage::new(data)),
            node,
            requires_grad,
        }))
    }

    /// A tensor reading this one's storage through another layout (a view).
    pub(crate) fn view_parts(&self, layout: Layout, node: Option<Box<dyn GraphNode<T>>>) -> Self {
        let fits = layout
            .span_end()
            .is_some_and(|end| end <= self.0.storage.len());
        assert!(fits, "internal: view {layout:?} outside its storage");
        let requires_grad = node.is_some();
        Tensor(Arc::new(Inner {
            id: TensorId::fresh(),
            layout,
            storage: Arc::clone(&self.0.storage),
            node,
            requires_grad,
        }))
    }

    /// A tensor from row-major data and a shape; the element count must match.
    pub fn from_vec(data: Vec<T>, shape: &[usize]) -> Result<Self> {
        let n = checked_numel("from_vec", shape)?;
        if data.len() != n {
            return Err(Error::shape(
                "from_vec",
                format!(
                    "{} values cannot fill shape {} ({n} elements)",
                    data.len(),
                    fmt_shape(shape),
                ),
            ));
        }
        Ok(Self::from_parts(data, shape.to_vec(), None))
    }

    /// A 0-dimensional tensor holding one value.
    pub fn scalar(v: T) -> Self {
        Self::from_parts(vec![v], vec![], None)
    }

    /// A tensor of the given shape with every element `v`. A shape whose size overflows or
    /// cannot be allocated is an `Err`.
    pub fn full(shape: &[usize], v: T) -> Result<Self> {
        let data = storage::filled("full", shape, v)?;
        Ok(Self::from_parts(data, shape.to_vec(), None))
    }

    /// All zeros.
    pub fn zeros(shape: &[usize]) -> Result<Self> {
        Self::full(shape, T::ZERO)
    }

    /// All ones.
    pub fn ones(shape: &[usize]) -> Result<Self> {
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
        let mut data = storage::buffer("arange", &[n])?;
        data.extend((0..n).map(|i| T::from_f64(start + step * i as f64)));
        Ok(Self::from_parts(data, vec![n], None))
    }

    /// Uniform random values in [lo, hi), from a seed.
    pub fn rand_uniform(shape: &[usize], lo: f64, hi: f64, seed: u64) -> Result<Self> {
        Self::rand_uniform_with(shape, lo, hi, &mut Rng::new(seed))
    }

    /// Uniform random values in [lo, hi), drawn from `rng`.
    pub fn rand_uniform_with(shape: &[usize], lo: f64, hi: f64, rng: &mut Rng) -> Result<Self> {
        let mut data = storage::buffer("rand_uniform", shape)?;
        let n = data.capacity();
        data.extend((0..n).map(|_| T::from_f64(rng.uniform_in(lo, hi))));
        Ok(Self::from_parts(data, shape.to_vec(), None))
    }

    /// Normal random values with the given mean and standard deviation, from a seed.
    pub fn randn(shape: &[usize], mean: f64, std: f64, seed: u64) -> Result<Self> {
        Self::randn_with(shape, mean, std, &mut Rng::new(seed))
    }

    /// Normal random values drawn from `rng`.
    pub fn randn_with(shape: &[usize], mean: f64, std: f64, rng: &mut Rng) -> Result<Self> {
        let n = checked_numel("randn", shape)?;
        let mut data = storage::buffer("randn", shape)?;
        data.extend((0..n).map(|_| T::from_f64(mean + std * rng.normal())));
        Ok(Self::from_parts(data, shape.to_vec(), None))
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
        let leaf = match Arc::try_unwrap(self.0) {
            Ok(mut inner) if inner.node.is_none() => {
                inner.requires_grad = on;
                return Tensor(Arc::new(inner));
            }
            Ok(inner) => Tensor(Arc::new(inner)).detach(),
            Err(shared) => Tensor(shared).detach(),
        };
        let mut leaf = leaf;
        Arc::get_mut(&mut leaf.0)
            .expect("internal: fresh tensor is unique")
            .requires_grad = on;
        leaf
    }

    /// A tensor with the same storage and layout that is cut from the graph: no op, no
    /// gradient.
    pub fn detach(&self) -> Self {
        self.view_parts(self.0.layout.clone(), None)
    }

    /// Whether gradients flow to or through this tensor.
    pub fn requires_grad_flag(&self) -> bool {
        self.0.requires_grad
    }

    /// True for tensors not made by a recorded operation.
    pub fn is_leaf(&self) -> bool {
        self.0.node.is_none()
    }

    pub(crate) fn node(&self) -> Option<&dyn GraphNode<T>> {
        self.0.node.as_deref()
    }

    /// The identity under which gradients of this tensor are stored.
    pub fn id(&self) -> TensorId {
        self.0.id
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        self.0.layout.shape()
    }

    /// How this tensor reads its storage: offset, shape and strides.
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }

    /// Element strides, one per axis (0 along a broadcast axis).
    pub fn strides(&self) -> &[usize] {
        self.0.layout.strides()
    }

    /// True when the elements are stored row-major without gaps (no copy needed to read them
    /// as a slice).
    pub fn is_contiguous(&self) -> bool {
        self.0.layout.is_contiguous()
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape().len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.0.layout.numel()
    }

    /// Bytes of the elements this tensor addresses (`numel × element size`; a view may
    /// address fewer or, broadcast, more elements than its storage holds).
    pub fn nbytes(&self) -> usize {
        self.numel().saturating_mul(std::mem::size_of::<T>())
    }

    /// Bytes of the storage behind this tensor, shared with its views.
    pub fn storage_bytes(&self) -> usize {
        self.0.storage.len() * std::mem::size_of::<T>()
    }

    /// The number of in-place writes the storage has seen (through this tensor or any view or
    /// clone sharing it). Backward compares it with the value recorded in the forward pass.
    pub fn version(&self) -> u64 {
        self.0.storage.version()
    }

    /// Read access to the elements in row-major order: borrowed when the tensor is contiguous,
    /// otherwise copied (an `Err` if the copy cannot be allocated, e.g. for a huge broadcast).
    pub fn data(&self) -> Result<DataRef<'_, T>> {
        let guard = self.0.storage.read();
        if let Some(r) = self.0.layout.contiguous_range() {
            return Ok(DataRef(DataInner::Borrowed(guard, r)));
        }
        drop(guard);
        Ok(DataRef(DataInner::Owned(self.copy_out("data")?)))
    }

    /// The elements in row-major order, copied into a new buffer allocated for `op`.
    pub(crate) fn copy_out(&self, op: &'static str) -> Result<Vec<T>> {
        let mut out = storage::buffer(op, self.shape())?;
        kernels::layout::strided_copy(&self.0.storage.read(), &self.0.layout, &mut out);
        Ok(out)
    }

    /// The storage under a read lock with this tensor's layout, for kernels that read strides.
    pub(crate) fn strided(&self) -> Strided<'_, T> {
        Strided {
            data: self.0.storage.read(),
            layout: &self.0.layout,
        }
    }

    /// Modifies the elements in place, handing `f` the elements in row-major order (optimizers
    /// and checkpoint loads use this). Every tensor sharing this storage (clones, views,
    /// detached copies) sees the change, and the storage's [version](Tensor::version) goes up,
    /// so a recorded graph that saved it refuses to run backward rather than give a wrong
    /// gradient. A broadcast view, whose elements alias each other, is refused.
    pub fn update_data<R>(&self, f: impl FnOnce(&mut [T]) -> R) -> Result<R> {
        let layout = &self.0.layout;
        if layout.has_overlap() {
            return Err(Error::arg(
                "update_data",
                format!(
                    "the tensor of shape {} is a broadcast view (strides {:?}): several of its \
                     elements are one stored value; write to the tensor it was broadcast from",
                    fmt_shape(self.shape()),
                    layout.strides()
                ),
            ));
        }
        if let Some(r) = layout.contiguous_range() {
            let mut guard = self.0.storage.write();
            return Ok(f(&mut guard[r]));
        }
        let mut tmp = storage::buffer("update_data", self.shape())?;
        let mut guard = self.0.storage.write();
        kernels::layout::strided_copy(&guard, layout, &mut tmp);
        let r = f(&mut tmp);
        kernels::layout::strided_scatter(&tmp, &mut guard, layout);
        Ok(r)
    }

    /// A pointer identifying the storage (views share it); used to count saved bytes once.
    pub(crate) fn storage_key(&self) -> usize {
        Arc::as_ptr(&self.0.storage) as *const () as usize
    }

    /// The elements, row-major, copied out.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        Ok(self.data()?.to_vec())
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
        Ok(self.0.storage.read()[self.0.layout.offset()])
    }

    /// Visits the elements in row-major order without copying.
    pub(crate) fn for_each(&self, mut f: impl FnMut(T)) {
        self.visit(self.layout(), |v| {
            f(v);
            true
        });
    }

    /// Visits the stored values this tensor addresses, each once (a broadcast view's repeats
    /// are skipped), until `f` returns false.
    pub(crate) fn for_each_distinct_while(&self, f: impl FnMut(T) -> bool) {
        self.visit(&self.layout().distinct(), f);
    }

    fn visit(&self, layout: &Layout, mut f: impl FnMut(T) -> bool) {
        let data = self.0.storage.read();
        layout
            .for_each_row_while(|start, len, stride| (0..len).all(|j| f(data[start + j * stride])));
    }

    /// A copy converted to another element type (not recorded in the graph).
    pub fn cast<U: Float>(&self) -> Result<Tensor<U>> {
        let mut data = storage::buffer("cast", self.shape())?;
        self.for_each(|v| data.push(U::from_f64(v.to_f64())));
        Ok(Tensor::from_parts(data, self.shape().to_vec(), None))
    }

    /// A weak handle that does not keep this tensor (or the graph behind it) alive.
    pub fn downgrade(&self) -> WeakTensor<T> {
        WeakTensor(Arc::downgrade(&self.0))
    }

    /// `self + other` for two tensors of the same shape, written into the storage of one of
    /// them that nothing else can see — its only handle (no clone, view or weak handle), it
    /// records no op and needs no gradient, and it is contiguous over its whole storage — and
    /// computed as [`Tensor::add`] otherwise: always where either operand needs a gradient
    /// (a sum under `create_graph` must record its dependence on both) or anomaly detection
    /// is on (it checks every op's output). The same values either way (addition commutes):
    /// for backward's gradient sums, which thereby skip a fresh buffer and a pass over memory.
    pub(crate) fn add_owned(mut self, mut other: Tensor<T>) -> Result<Tensor<T>> {
        let plain = !self.0.requires_grad
            && !other.0.requires_grad
            && !crate::autograd::anomaly::is_detecting();
        if plain && self.shape() == other.shape() {
            if self.add_in_place(&other)? {
                return Ok(self);
            }
            if other.add_in_place(&self)? {
                return Ok(other);
            }
        }
        self.add(&other)
    }

    /// `scale·self`, detached, written into this tensor's storage where nothing else can see
    /// it (as for [`add_owned`](Tensor::add_owned): its only handle and its storage's, no
    /// recorded op, no gradient needed, contiguous); a fresh `self.detach().mul_scalar(scale)`
    /// otherwise. The same values either way: for gradient clipping, which thereby skips a
    /// buffer and a pass per gradient.
    pub(crate) fn scaled_owned(mut self, scale: f64) -> Result<Tensor<T>> {
        let unique = !self.0.requires_grad
            && !crate::autograd::anomaly::is_detecting()
            && Arc::get_mut(&mut self.0)
                .is_some_and(|i| i.node.is_none() && Arc::get_mut(&mut i.storage).is_some());
        if !unique || !self.is_contiguous() {
            return self.detach().mul_scalar(scale);
        }
        let s = T::from_f64(scale);
        self.update_data(|dst| {
            kernels::for_each_run(dst, 1 << 14, |_, out| {
                crate::isa::vectorized(
                    #[inline(always)]
                    || out.iter_mut().for_each(|v| *v *= s),
                )
            })
        })?;
        Ok(self)
    }

    /// `self += other` where [`add_owned`](Tensor::add_owned) may write into `self` (this is
    /// its only handle and its storage's, it records no op, it is contiguous), through
    /// [`Tensor::update_data`]; whether it did.
    fn add_in_place(&mut self, other: &Tensor<T>) -> Result<bool> {
        let unique = Arc::get_mut(&mut self.0)
            .is_some_and(|i| i.node.is_none() && Arc::get_mut(&mut i.storage).is_some());
        if !unique || !self.is_contiguous() {
            return Ok(false);
        }
        let src = other.data()?;
        self.update_data(|dst| {
            kernels::for_each_run_above(dst, 1 << 14, kernels::ELEMENTWISE_THRESHOLD, |i, out| {
                let from = &src[i << 14..][..out.len()];
                crate::isa::vectorized(
                    #[inline(always)]
                    || {
                        for (o, &v) in out.iter_mut().zip(from) {
                            *o += v;
                        }
                    },
                )
            })
        })?;
        Ok(true)
    }

    /// True when every element is finite (no NaN, no ±∞). Stops at the first that is not, and
    /// reads each stored value of a broadcast view once.
    pub fn all_finite(&self) -> bool {
        if let Some(r) = self.0.layout.contiguous_range() {
            // Blocks of 1,024 checked without a branch per value (vector compares), stopping
            // at the first block that holds one: a value-by-value early exit ran ~20× slower.
            let data = self.0.storage.read();
            return data[r].chunks(1024).all(|c| {
                crate::isa::vectorized(
                    #[inline(always)]
                    || c.iter().fold(true, |ok, v| ok & v.is_finite()),
                )
            });
        }
        let mut ok = true;
        self.for_each_distinct_while(|v| {
            ok = v.is_finite();
            ok
        });
        ok
    }
}

impl<T: Float> fmt::Debug for Tensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown: Vec<String> = Vec::new();
        self.visit(self.layout(), |v| {
            shown.push(format!("{v}"));
            shown.len() < 8
        });
        let more = if self.numel() > 8 { ", …" } else { "" };
        write!(
            f,
            "Tensor<{}>{} [{}{}]",
            T::DTYPE,
            fmt_shape(self.shape()),
            shown.join(", "),
            more
        )?;
        if let Some(node) = self.node() {
            write!(f, " ← {}", node.name())?;
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
        let Some(node) = self.node.take() else { return };
        let mut stack = vec![node];
        while let Some(node) = stack.pop() {
            for input in node.into_inputs() {
                if let Ok(mut inner) = Arc::try_unwrap(input.0) {
                    if let Some(op) = inner.node.take() {
                        stack.push(op);
                    }
                }
            }
        }
    }
}

//! A container that applies modules in order.

use std::collections::BTreeMap;

use std::sync::Arc;

use crate::autograd::{checkpoint, is_grad_enabled, scope_arc};
use crate::error::{Error, Result};
use crate::nn::{prefixed, under, Activation, Conv2d, MaxPool2d, Module, SharedForward};
use crate::ops::pool::ConvPooled;
use crate::tensor::{Float, Tensor};

/// Modules applied one after the other. Parameters are named `{index}.{name}`, as in
/// PyTorch's `nn.Sequential`.
///
/// A ReLU ([`Activation::Relu`]) directly followed by a [`MaxPool2d`] runs as the pooling
/// followed by the ReLU: the same values and the same gradients, on the smaller pooled tensor
/// (outside checkpointed segments, which run as written).
///
/// With [`Sequential::set_checkpoint_every`], the forward pass runs each group of `k` modules as
/// one [checkpointed](crate::autograd::checkpoint) segment: only the segments' inputs are kept
/// for backward, which recomputes each segment when it reaches it.
pub struct Sequential<T: Float = f32> {
    layers: Vec<Box<dyn Module<T>>>,
    checkpoint_every: Option<usize>,
    /// Where checkpointed segments start (ascending, from 0), when checkpointing is on.
    segments: Option<Vec<usize>>,
    scopes: ScopeNames,
}

/// The [scope](crate::autograd::scope) names of a container's children (`outer.index`), made
/// once per outer scope so that recording a forward pass allocates no names.
#[derive(Default)]
pub(crate) struct ScopeNames(std::sync::Mutex<ScopeCache>);

/// The outer scope the names were made under, and the names.
type ScopeCache = (Option<Arc<str>>, Vec<Arc<str>>);

impl ScopeNames {
    /// The name of child `i` under the current scope.
    pub(crate) fn get(&self, i: usize) -> Arc<str> {
        let outer = crate::autograd::current_scope();
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if cache.0 != outer {
            *cache = (outer, Vec::new());
        }
        while cache.1.len() <= i {
            let k = cache.1.len();
            let name = match &cache.0 {
                Some(o) => format!("{o}.{k}"),
                None => k.to_string(),
            };
            cache.1.push(Arc::from(name));
        }
        cache.1[i].clone()
    }
}

impl<T: Float> Default for Sequential<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Float> Sequential<T> {
    /// An empty container.
    pub fn new() -> Self {
        Sequential {
            layers: Vec::new(),
            checkpoint_every: None,
            segments: None,
            scopes: ScopeNames::default(),
        }
    }

    /// Appends a module (builder style).
    pub fn with(mut self, layer: impl Module<T> + 'static) -> Self {
        self.layers.push(Box::new(layer));
        self
    }

    /// Appends a module.
    pub fn push(&mut self, layer: Box<dyn Module<T>>) {
        self.layers.push(layer);
    }

    /// The modules, in order.
    pub fn layers(&self) -> &[Box<dyn Module<T>>] {
        &self.layers
    }

    /// Number of modules.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Gradient checkpointing: `Some(k)` runs every `k` consecutive modules as one checkpointed
    /// segment (memory for the segment inputs plus one segment's activations, for one extra
    /// forward pass; `k ≈ √L` balances the two), `None` keeps every activation. Results and
    /// gradients are the same either way (dropout replays its masks). An error when `k` is 0 or
    /// a module cannot be checkpointed ([`Module::shared_forward`] is `None`).
    ///
    /// ```
    /// use nabla::nn::{Activation, Init, Linear, Module, Sequential};
    /// use nabla::{Rng, Tensor};
    /// let mut rng = Rng::new(0);
    /// let mut net = Sequential::<f32>::new();
    /// for _ in 0..4 {
    ///     net.push(Box::new(Linear::new(8, 8, true, Init::XavierUniform, &mut rng).unwrap()));
    ///     net.push(Box::new(Activation::Tanh));
    /// }
    /// let x = Tensor::rand_uniform(&[2, 8], -1.0, 1.0, 1).unwrap();
    /// let full = net.forward(&x).unwrap().sum_all().unwrap();
    /// let g_full = full.backward().unwrap();
    /// net.set_checkpoint_every(Some(4)).unwrap();
    /// let ckpt = net.forward(&x).unwrap().sum_all().unwrap();
    /// assert!(ckpt.graph_stats().saved_bytes < full.graph_stats().saved_bytes);
    /// let g_ckpt = ckpt.backward().unwrap();
    /// for p in net.parameters() {
    ///     assert_eq!(g_full.get(&p).unwrap().to_vec().unwrap(), g_ckpt.get(&p).unwrap().to_vec().unwrap());
    /// }
    /// ```
    pub fn set_checkpoint_every(&mut self, k: Option<usize>) -> Result<()> {
        if k == Some(0) {
            return Err(Error::arg(
                "Sequential::set_checkpoint_every",
                "a segment needs at least one module (k = 0)",
            ));
        }
        let starts = k.map(|k| (0..self.layers.len().max(1)).step_by(k).collect());
        self.set_checkpoint_segments(starts)?;
        self.checkpoint_every = k;
        Ok(())
    }

    /// Gradient checkpointing by segments that start at the given module indices (ascending,
    /// the first 0); `None` turns it off. An error when the starts are not ascending from 0 or
    /// a module cannot be checkpointed ([`Module::shared_forward`] is `None`).
    pub fn set_checkpoint_segments(&mut self, starts: Option<Vec<usize>>) -> Result<()> {
        if let Some(st) = &starts {
            if st.first() != Some(&0) || st.windows(2).any(|w| w[0] >= w[1]) {
                return Err(Error::arg(
                    "Sequential::set_checkpoint_segments",
                    format!("segment starts {st:?} must ascend from 0"),
                ));
            }
            if let Some((i, l)) = self
                .layers
                .iter()
                .enumerate()
                .find(|(_, l)| l.shared_forward().is_none())
            {
                return Err(Error::arg(
                    "Sequential::set_checkpoint_every",
                    format!(
                        "module {i} ({}) cannot be checkpointed: it does not implement \
                         Module::shared_forward",
                        l.describe()
                    ),
                ));
            }
        }
        self.checkpoint_every = None;
        self.segments = starts;
        Ok(())
    }

    /// The checkpoint segment length, if checkpointing is on.
    pub fn checkpoint_every(&self) -> Option<usize> {
        self.checkpoint_every
    }

    /// Whether modules `i` and `i + 1` are ReLU then max pooling, which the forward pass runs as
    /// max pooling then ReLU: on the pooled output, a quarter of the values for 2×2 windows,
    /// and never materialising the full-size ReLU output nor its gradient. The two orders give
    /// the same values (a zero's sign aside) and the same gradient bits: `relu(max x) =
    /// max relu(x)`; where
    /// a window's maximum is positive, ReLU leaves it and every value at or above it unchanged,
    /// so the first maximum (where the gradient goes) is the same element; where it is not
    /// positive, ReLU's derivative makes the window's gradient zero either way.
    fn relu_then_max_pool(&self, i: usize) -> bool {
        let kind = |i: usize| self.layers[i].as_any();
        let relu = kind(i)
            .and_then(|a| a.downcast_ref::<Activation>())
            .is_some_and(|a| matches!(a, Activation::Relu));
        relu && kind(i + 1).is_some_and(|b| b.is::<MaxPool2d>())
    }

    /// Modules `i` and `i + 1` as a 2-D convolution then max pooling (or `i..=i + 2` as
    /// convolution, ReLU, max pooling: the ReLU then runs after the pooling, as
    /// [`relu_then_max_pool`](Self::relu_then_max_pool) says) computed in one pass — each
    /// sample pooled while its convolution output is still in cache — and recorded as the ops
    /// the modules would record, each in its module's scope: the output and the index of the
    /// next module. `None` where the modules are something else or the one-pass kernels do
    /// not apply (the modules then run one by one, and report any error).
    fn conv_then_max_pool(
        &self,
        i: usize,
        h: &Tensor<T>,
        scoped: bool,
    ) -> Result<Option<(Tensor<T>, usize)>> {
        let kind = |i: usize| self.layers.get(i).and_then(|l| l.as_any());
        let Some(conv) = kind(i).and_then(|a| a.downcast_ref::<Conv2d<T>>()) else {
            return Ok(None);
        };
        let relu = i + 2 < self.layers.len() && self.relu_then_max_pool(i + 1);
        let at = if relu { i + 2 } else { i + 1 };
        let Some(pool) = kind(at).and_then(|a| a.downcast_ref::<MaxPool2d>()) else {
            return Ok(None);
        };
        let (w, b) = (&conv.weight, conv.bias.as_ref());
        let Some(r) = h.conv2d_max_pool2d_raw(w, b, conv.opts, pool.opts)? else {
            return Ok(None);
        };
        let ConvPooled {
            conv: y,
            shape,
            pooled,
            arg,
            pool: g,
        } = r;
        let in_scope = |j: usize, f: &mut dyn FnMut() -> Result<Tensor<T>>| match scoped {
            true => scope_arc(self.scopes.get(j), f),
            false => f(),
        };
        let mut y = Some(y);
        let y = in_scope(i, &mut || {
            let y = y.take().unwrap_or_default();
            Ok(h.record_conv2d(w, b, conv.opts, y, &shape))
        })?;
        let mut out = Some((pooled, arg));
        let mut p = in_scope(at, &mut || {
            let (pooled, arg) = out.take().unwrap_or_default();
            y.record_max_pool2d(&g, pooled, arg)
        })?;
        if relu {
            p = in_scope(i + 1, &mut || self.layers[i + 1].forward(&p))?;
        }
        Ok(Some((p, at + 1)))
    }

    /// `layers` composed into one owned function, if each can be.
    fn compose(layers: &[Box<dyn Module<T>>]) -> Option<SharedForward<T>> {
        let fs: Vec<SharedForward<T>> = layers
            .iter()
            .map(|l| l.shared_forward())
            .collect::<Option<_>>()?;
        Some(Arc::new(move |x: &Tensor<T>| {
            let mut h = x.clone();
            for f in &fs {
                h = f(&h)?;
            }
            Ok(h)
        }))
    }
}

impl<T: Float> Module<T> for Sequential<T> {
    fn forward_cached(
        &self,
        x: &Tensor<T>,
        cache: &mut crate::nn::KvCache<T>,
    ) -> Result<Tensor<T>> {
        let mut h = x.clone();
        for layer in &self.layers {
            h = layer.forward_cached(&h, cache)?;
        }
        Ok(h)
    }
    fn forward(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        let mut h = x.clone();
        match &self.segments {
            Some(starts) if is_grad_enabled() => {
                let ends = starts.iter().skip(1).copied().chain([self.layers.len()]);
                for (a, b) in starts.iter().zip(ends) {
                    let segment = &self.layers[(*a).min(b)..b];
                    let f = Self::compose(segment).ok_or_else(|| {
                        Error::arg("Sequential", "a module cannot be checkpointed")
                    })?;
                    h = checkpoint(move |xs| f(&xs[0]), &[h])?;
                }
            }
            _ => {
                let scoped = is_grad_enabled();
                let run = |i: usize, h: &Tensor<T>| match scoped {
                    true => scope_arc(self.scopes.get(i), || self.layers[i].forward(h)),
                    false => self.layers[i].forward(h),
                };
                let mut i = 0;
                while i < self.layers.len() {
                    if let Some((y, next)) = self.conv_then_max_pool(i, &h, scoped)? {
                        (h, i) = (y, next);
                    } else if i + 1 < self.layers.len() && self.relu_then_max_pool(i) {
                        h = run(i, &run(i + 1, &h)?)?;
                        i += 2;
                    } else {
                        h = run(i, &h)?;
                        i += 1;
                    }
                }
            }
        }
        Ok(h)
    }

    fn shared_forward(&self) -> Option<SharedForward<T>> {
        Self::compose(&self.layers)
    }

    fn set_checkpoint_blocks(&mut self, k: Option<usize>) -> Result<()> {
        self.set_checkpoint_every(k)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor<T>)> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| prefixed::<_, Vec<_>>(&format!("{i}."), l.named_parameters()))
            .collect()
    }

    fn named_buffers(&self) -> Vec<(String, Tensor<T>)> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| prefixed::<_, Vec<_>>(&format!("{i}."), l.named_buffers()))
            .collect()
    }

    fn set_training(&mut self, training: bool) {
        for l in &mut self.layers {
            l.set_training(training);
        }
    }

    fn describe(&self) -> String {
        let inner: Vec<String> = self.layers.iter().map(|l| l.describe()).collect();
        format!("Sequential({})", inner.join(", "))
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let mut s = input.to_vec();
        for l in &self.layers {
            s = l.output_shape(&s)?;
        }
        Ok(s)
    }

    fn extra_state(&self) -> BTreeMap<String, String> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| prefixed::<_, Vec<_>>(&format!("{i}."), l.extra_state()))
            .collect()
    }

    /// All or nothing: when one layer refuses its state, the layers already loaded are put
    /// back.
    fn load_extra_state(&mut self, state: &BTreeMap<String, String>) -> Result<()> {
        let before = self.extra_state();
        let load = |layers: &mut Vec<Box<dyn Module<T>>>, state: &BTreeMap<String, String>| {
            for (i, l) in layers.iter_mut().enumerate() {
                l.load_extra_state(&under(&format!("{i}."), state))?;
            }
            Ok(())
        };
        let result = load(&mut self.layers, state);
        if result.is_err() {
            let _ = load(&mut self.layers, &before);
        }
        result
    }
}

//! Backpropagation that hands over gradients as soon as they are final: what data-parallel
//! training uses to send a layer's gradients while backward still runs on the layers before it
//! (the "buckets" of PyTorch's DDP and Horovod).

use std::collections::{HashMap, HashSet};

use super::graph::ReversePass;
use super::GradStore;
use crate::error::{Error, Result};
use crate::tensor::shape::fmt_shape;
use crate::tensor::{Float, Tensor, TensorId};

/// What [`Tensor::backward_hooked`] tells while the reverse pass runs.
pub trait BackwardHook<T: Float> {
    /// The gradient of `watch[index]` is final: no op left in the pass can add to it. `None`:
    /// the loss does not depend on it. Called once per watched tensor, in the order their
    /// gradients become final (for a network: last layer first).
    fn ready(&mut self, index: usize, grad: Option<&Tensor<T>>) -> Result<()>;
    /// Called after every op's rule (e.g. to let communication started earlier make progress).
    fn after_op(&mut self) -> Result<()> {
        Ok(())
    }
}

impl<T: Float> Tensor<T> {
    /// [`Tensor::backward`] that calls `hook.ready(i, …)` for each tensor of `watch` as soon
    /// as its gradient is final — when the pass has run every op that uses it — instead of
    /// only at the end. Returns the same gradients as `backward`, bit for bit.
    ///
    /// ```
    /// use nabla::autograd::BackwardHook;
    /// use nabla::Tensor;
    /// # fn main() -> nabla::Result<()> {
    /// let w1 = Tensor::from_vec(vec![0.5f32, -1.0], &[2, 1])?.requires_grad();
    /// let w2 = Tensor::from_vec(vec![2.0f32], &[1, 1])?.requires_grad();
    /// let x = Tensor::from_vec(vec![1.0f32, 3.0], &[1, 2])?;
    /// let loss = x.matmul(&w1)?.relu()?.matmul(&w2)?.sum_all()?;
    ///
    /// struct Order(Vec<usize>);
    /// impl BackwardHook<f32> for Order {
    ///     fn ready(&mut self, i: usize, _g: Option<&Tensor<f32>>) -> nabla::Result<()> {
    ///         self.0.push(i);
    ///         Ok(())
    ///     }
    /// }
    /// let mut order = Order(Vec::new());
    /// let grads = loss.backward_hooked(&[w1.clone(), w2.clone()], &mut order)?;
    /// assert_eq!(order.0, vec![1, 0]); // the last layer's gradient is final first
    /// assert_eq!(grads.get(&w1).unwrap().to_vec()?, loss.backward()?.get(&w1).unwrap().to_vec()?);
    /// # Ok(()) }
    /// ```
    pub fn backward_hooked(
        &self,
        watch: &[Tensor<T>],
        hook: &mut dyn BackwardHook<T>,
    ) -> Result<GradStore<T>> {
        if self.numel() != 1 {
            return Err(Error::autograd(
                "backward_hooked",
                format!(
                    "the loss must have one element, got shape {}",
                    fmt_shape(self.shape())
                ),
            ));
        }
        self.check_requires_grad("backward_hooked")?;
        let keep: HashSet<TensorId> = watch.iter().map(|t| t.id()).collect();
        let seed = Tensor::ones(self.shape())?;
        let mut pass = ReversePass::new(&[(self.clone(), seed)], false, HashSet::new(), keep)?;
        let due = due_positions(pass.order(), watch);
        // Watched tensors by the position after which they are final, latest first.
        let mut queue: Vec<usize> = (0..watch.len()).collect();
        queue.sort_by_key(|&i| std::cmp::Reverse(due[i]));
        let mut head = 0;
        loop {
            let more = pass.step(&mut ())?;
            let next = if more { pass.position() } else { 0 };
            while head < queue.len() && due[queue[head]] >= next {
                let i = queue[head];
                hook.ready(i, pass.grad(watch[i].id()))?;
                head += 1;
            }
            if !more {
                break;
            }
            hook.after_op()?;
        }
        Ok(GradStore::from_map(pass.into_grads()))
    }
}

/// For each watched tensor, the lowest position in `order` of an op that uses it (its gradient
/// is final once the pass has gone below it); `usize::MAX` (final at once) when none does or
/// it needs no gradient.
fn due_positions<T: Float>(order: &[Tensor<T>], watch: &[Tensor<T>]) -> Vec<usize> {
    let index: HashMap<TensorId, usize> =
        watch.iter().enumerate().map(|(i, t)| (t.id(), i)).collect();
    let mut due = vec![usize::MAX; watch.len()];
    for (pos, node) in order.iter().enumerate() {
        let Some(n) = node.node() else { continue };
        for input in n.inputs() {
            if let Some(&i) = index.get(&input.id()) {
                if due[i] == usize::MAX && input.requires_grad_flag() {
                    due[i] = pos;
                }
            }
        }
    }
    due
}

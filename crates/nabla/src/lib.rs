//! # nabla
//!
//! Tensors and reverse-mode automatic differentiation (backpropagation) on the CPU.
//!
//! ## The ideas
//!
//! * A **linear model** `O = X·W + b` maps `n` samples of `d` features (`X` is n×d) to `p`
//!   outputs: `W` is d×p, one weight per input→output connection, and `b` has `p` entries,
//!   broadcast over the rows. In nabla: `x.matmul(&w)?.add(&b)?`.
//! * **Softmax** turns a row of outputs into probabilities, `softmax(o)ᵢ = e^(oᵢ − m) / Σⱼ
//!   e^(oⱼ − m)` with `m = maxⱼ oⱼ` subtracted so nothing overflows; the prediction is the
//!   one-hot vector of the arg-max ([`Tensor::softmax`], [`Tensor::one_hot_argmax`]).
//! * **Backpropagation**: a loss `L` is built from operations; each records its inputs. The
//!   chain rule, `∂L/∂x = Σ_y (∂L/∂y)(∂y/∂x)` over the outputs `y` that use `x`, is applied
//!   from the loss back to every leaf, in reverse order of the forward pass
//!   ([`Tensor::backward`]). Each rule needs forward values (a product needs its other
//!   factor), so the graph keeps them alive until it is dropped: training costs more memory
//!   than inference, and [`Tensor::graph_stats`] reports how much. Under [`no_grad`] nothing
//!   is recorded and nothing is kept.
//! * **Gradient checking**: the analytic gradient must match central finite differences,
//!   `(f(x + ε) − f(x − ε)) / 2ε`, element by element ([`testing::gradcheck`]).
//!
//! ## Example
//!
//! ```
//! use nabla::Tensor;
//! # fn main() -> nabla::Result<()> {
//! let x = Tensor::<f32>::randn(&[4, 3], 0.0, 1.0, 0);
//! let w = Tensor::<f32>::randn(&[3, 2], 0.0, 0.1, 1).requires_grad();
//! let b = Tensor::<f32>::zeros(&[2]).requires_grad();
//! let o = x.matmul(&w)?.add(&b)?;          // O = X·W + b, shape [4, 2]
//! let loss = o.square().sum_all()?;        // L = Σ O²
//! let grads = loss.backward()?;
//! assert_eq!(grads.get(&w).unwrap().shape(), &[3, 2]);   // ∂L/∂W = 2·Xᵀ·O
//! assert_eq!(grads.get(&b).unwrap().shape(), &[2]);      // ∂L/∂b = 2·Σ_rows O
//! # Ok(()) }
//! ```
//!
//! ## Conventions
//!
//! Row-major contiguous storage; NumPy broadcasting; relu′(0) = 0, |x|′(0) = 0; gradients go to
//! the first maximal element of a `max`. Errors, not panics, for anything a caller can get
//! wrong: the message names the operation and the shapes.

#![warn(missing_docs)]

pub mod autograd;
pub mod data;
pub mod error;
pub mod io;
pub mod nn;
mod ops;
pub mod optim;
pub mod rng;
pub mod tensor;
pub mod testing;

/// The README's code examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

pub use autograd::{is_grad_enabled, no_grad, GradStore, GraphStats, NoGradGuard, Op, OpKind};
pub use error::{Error, Result};
pub use rng::Rng;
pub use tensor::{DataRef, Float, Tensor, TensorId, WeakTensor};

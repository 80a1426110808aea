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
//! * **Linearity, and why activations matter.** A map `f` is linear when
//!   `f(a·x + b·y) = a·f(x) + b·f(y)`. Linear layers stacked without anything between them
//!   collapse into one: `(x·W₁ + b₁)·W₂ + b₂ = x·(W₁W₂) + (b₁W₂ + b₂)`. An element-wise
//!   non-linearity σ (ReLU `max(x, 0)`, tanh, …) between layers breaks this, so an MLP
//!   `σ(x·W₁ + b₁)·W₂ + b₂` can bend its decision boundaries. Shown by
//!   `examples/linear_vs_mlp.rs`.
//! * **Universal approximation.** One hidden layer, `Σᵢ vᵢ·σ(wᵢx + bᵢ)`, approximates any
//!   continuous function on an interval as closely as wanted given enough units; the error
//!   falls as the width grows (`examples/universal_approximation.rs`).
//! * **Depth.** Composing layers composes functions: a ReLU layer can double the number of
//!   linear pieces, so depth k reaches 2ᵏ pieces with a few units per layer where one hidden
//!   layer needs a unit per piece — though gradient descent does not always find such
//!   solutions (`examples/depth_vs_width.rs`).
//! * **Losses.** L2, `(ŷ − y)²`, is the negative log-likelihood of Gaussian noise; its gradient
//!   `2(ŷ − y)` grows with the residual. L1, `|ŷ − y|`, is the negative log-likelihood of
//!   Laplace noise; its gradient `sign(ŷ − y)` has the same size for every point, which makes
//!   it robust to outliers. Cross-entropy `−Σⱼ tⱼ log softmax(z)ⱼ` has the gradient
//!   `softmax(z) − t` (`examples/l1_vs_l2.rs`, `examples/softmax_onehot.rs`).
//! * **Memory.** Backward needs the forward values, so training keeps every layer's outputs
//!   until `backward` has run: memory grows with depth × batch, while a `no_grad` forward
//!   keeps only the current layer's input and output. Gradient checkpointing
//!   ([`autograd::checkpoint`]) keeps only every k-th layer's input and recomputes the rest
//!   during backward: with k ≈ √L, memory grows like √L for one more forward pass
//!   (`examples/backprop_memory.rs`, measured with a counting allocator).
//! * **Gradients of gradients.** Backward rules are themselves made of differentiable
//!   operations, so [`autograd::grad`] with `create_graph` returns gradients that carry a
//!   graph: Hessian-vector products `H·v = ∇(∇f·v)` ([`autograd::hvp`]), Hessians, Jacobians,
//!   Jacobian-vector products, gradient penalties (`examples/newton.rs`), checked against
//!   finite differences of the first derivative ([`testing::gradgradcheck`]).
//! * **Convolutions** share one small weight across every position of an image:
//!   `y[o][i][j] = Σ_c Σ_ki Σ_kj x[c][i·s + ki][j·s + kj] · w[o][c][ki][kj]` — far fewer
//!   weights than a linear layer over all pixels, and the same feature found wherever it is.
//!   Pooling summarises neighbourhoods; batch normalisation standardises each channel over the
//!   batch. Ops named like `torch.nn.functional` ([`Tensor::conv2d`], [`Tensor::max_pool2d`],
//!   [`Tensor::batch_norm`]; options in [`ops`]) and layers in [`nn`]
//!   (`examples/cnn.rs`).
//! * **Gradient descent** and its descendants update every weight against its gradient:
//!   `w ← w − η·∂L/∂w` (SGD), with momentum, or with Adam's per-weight step sizes
//!   ([`optim`]).
//!
//! Every example in `examples/` runs with `cargo run --release --example NAME`; their measured
//! tables are in `examples/README.md`.
//!
//! ## Example
//!
//! ```
//! use nabla::Tensor;
//! # fn main() -> nabla::Result<()> {
//! let x = Tensor::<f32>::randn(&[4, 3], 0.0, 1.0, 0)?;
//! let w = Tensor::<f32>::randn(&[3, 2], 0.0, 0.1, 1)?.requires_grad();
//! let b = Tensor::<f32>::zeros(&[2])?.requires_grad();
//! let o = x.matmul(&w)?.add(&b)?;          // O = X·W + b, shape [4, 2]
//! let loss = o.square()?.sum_all()?;       // L = Σ O²
//! let grads = loss.backward()?;
//! assert_eq!(grads.get(&w).unwrap().shape(), &[3, 2]);   // ∂L/∂W = 2·Xᵀ·O
//! assert_eq!(grads.get(&b).unwrap().shape(), &[2]);      // ∂L/∂b = 2·Σ_rows O
//! # Ok(()) }
//! ```
//!
//! ## Training with checkpoints and resume
//!
//! [`train::Trainer`] runs the loop `nabla train` runs (batches, optimizer, schedule,
//! evaluation, checkpoints, the NaN/∞ sentinel, clipping, early stopping, Ctrl-C):
//!
//! ```
//! use nabla::data::{synthetic, TaskData};
//! use nabla::nn::MlpConfig;
//! use nabla::optim::AdamConfig;
//! use nabla::train::{OptimizerConfig, TrainConfig, Trainer};
//! # fn main() -> nabla::Result<()> {
//! let (train, test) = TaskData::Class(synthetic::spiral(100, 3, 0.1, 0)?).split(0.2, 1)?;
//! let model = MlpConfig::new(&[2, 32, 32, 3]);
//! let mut config = TrainConfig::new(model, OptimizerConfig::Adam(AdamConfig::adam(0.01)));
//! config.epochs = 10;
//! config.checkpoint_every = Some(20);
//! let ckpt = std::env::temp_dir().join("nabla_crate_doc.safetensors");
//! let mut trainer = Trainer::new(config.clone(), train.clone())?.with_test(test.clone()).with_checkpoint(&ckpt);
//! trainer.fit(&mut ())?;
//!
//! config.epochs = 12; // continue the same run for two more epochs
//! let mut resumed = Trainer::new(config, train)?.with_test(test).with_checkpoint(&ckpt);
//! resumed.resume(&ckpt)?;
//! resumed.fit(&mut ())?;
//! assert_eq!(resumed.history().len(), 12);
//! # Ok(()) }
//! ```
//!
//! ## Conventions
//!
//! Strided storage (views share it; see [`tensor::Layout`]); NumPy broadcasting; NaN in, NaN
//! out; relu′(0) = 0, |x|′(0) = 0; gradients go to
//! the first maximal element of a `max`. Errors, not panics, for anything a caller can get
//! wrong: the message names the operation and the shapes.

#![warn(missing_docs)]

pub mod alloc;
pub mod autograd;
pub mod data;
#[cfg(feature = "mpi")]
pub mod dist;
pub mod error;
pub mod io;
pub mod isa;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod profile;
pub mod rng;
pub mod tensor;
pub mod testing;
pub mod threads;
pub mod train;

/// The README's code examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

/// The code examples of the guides in `docs/`, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/library.md")]
struct LibraryGuideDoctests;

/// The model guide's code examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/models.md")]
struct ModelGuideDoctests;

pub use autograd::{is_grad_enabled, no_grad, GradStore, GraphStats, NoGradGuard, Op, OpKind};
pub use error::{Error, Result};
pub use rng::Rng;
pub use tensor::{DataRef, Float, Tensor, TensorId, WeakTensor};

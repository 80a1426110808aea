//! Gradients of gradients (`grad` with `create_graph`, `hvp`, `hessian`, `jacobian`, `jvp`) and
//! gradient checkpointing.

use nabla::autograd::{checkpoint, grad, hessian, hvp, jacobian, jvp, GradOptions};
use nabla::nn::loss::{self, Reduction, Target};
use nabla::nn::{Activation, Mlp, MlpConfig, Module};
use nabla::testing::assert_close;
use nabla::Tensor;

fn graph() -> GradOptions<f64> {
    GradOptions {
        create_graph: true,
        ..Default::default()
    }
}

fn mlp(dropout: f64, activation: Activation) -> Mlp<f64> {
    let mut cfg = MlpConfig::new(&[3, 8, 8, 8, 8, 2]);
    cfg.dropout = dropout;
    cfg.activation = activation;
    cfg.seed = 5;
    Mlp::new(&cfg).unwrap()
}

fn batch() -> (Tensor<f64>, Vec<usize>) {
    let x = Tensor::rand_uniform(&[6, 3], -1.0, 1.0, 9).unwrap();
    (x, vec![0, 1, 1, 0, 1, 0])
}

fn loss_of(model: &Mlp<f64>, x: &Tensor<f64>, y: &[usize]) -> Tensor<f64> {
    let logits = model.forward(x).unwrap();
    loss::cross_entropy(&logits, Target::Classes(y), 0.0, Reduction::Mean).unwrap()
}

fn grads_of(model: &Mlp<f64>, l: &Tensor<f64>) -> Vec<Vec<f64>> {
    let g = l.backward().unwrap();
    model
        .parameters()
        .iter()
        .map(|p| g.get(p).unwrap().to_vec().unwrap())
        .collect()
}

#[test]
fn grad_returns_exactly_the_requested_gradients_and_checks_its_arguments() {
    let x = Tensor::<f64>::from_vec(vec![1.0, 2.0], &[2])
        .unwrap()
        .requires_grad();
    let h = x.square().unwrap(); // an intermediate tensor
    let y = h.sum_all().unwrap();
    let g = grad(
        std::slice::from_ref(&y),
        &[h.clone(), x.clone()],
        GradOptions::default(),
    )
    .unwrap();
    assert_eq!(g[0].to_vec().unwrap(), [1.0, 1.0]);
    assert_eq!(g[1].to_vec().unwrap(), [2.0, 4.0]);

    let err = |r: nabla::Result<Vec<Tensor<f64>>>| r.unwrap_err().to_string();
    let e = err(grad(
        std::slice::from_ref(&h),
        std::slice::from_ref(&x),
        GradOptions::default(),
    ));
    assert!(e.contains("grad_outputs") && e.contains("[2]"), "{e}");
    let unused = Tensor::<f64>::ones(&[3]).unwrap().requires_grad();
    let e = err(grad(
        std::slice::from_ref(&y),
        std::slice::from_ref(&unused),
        GradOptions::default(),
    ));
    assert!(e.contains("not used") && e.contains("allow_unused"), "{e}");
    let opts = GradOptions {
        allow_unused: true,
        ..Default::default()
    };
    let z = grad(std::slice::from_ref(&y), &[unused], opts).unwrap();
    assert_eq!(z[0].to_vec().unwrap(), [0.0; 3]);
    let constant = Tensor::<f64>::ones(&[2]).unwrap();
    let e = err(grad(
        std::slice::from_ref(&y),
        &[constant],
        GradOptions::default(),
    ));
    assert!(e.contains("does not require a gradient"), "{e}");
    let opts = GradOptions {
        grad_outputs: Some(vec![Tensor::ones(&[3]).unwrap()]),
        ..Default::default()
    };
    let e = err(grad(&[h], &[x], opts));
    assert!(e.contains("[3]") && e.contains("[2]"), "{e}");
}

#[test]
fn plain_backward_after_create_graph_is_unchanged() {
    let model = mlp(0.0, Activation::Tanh);
    let (x, y) = batch();
    let l = loss_of(&model, &x, &y);
    let before = grads_of(&model, &l);
    let g = grad(std::slice::from_ref(&l), &model.parameters(), graph()).unwrap();
    assert!(g.iter().all(|g| g.requires_grad_flag()));
    assert_eq!(grads_of(&model, &l), before);
    // the recorded gradients have the same values as the plain ones
    for (g, b) in g.iter().zip(&before) {
        assert_eq!(&g.to_vec().unwrap(), b);
    }
}

#[test]
fn hvp_of_an_mlp_loss_matches_finite_differences_of_the_gradient() {
    let model = mlp(0.0, Activation::Tanh);
    let (x, y) = batch();
    let params = model.parameters();
    let v: Vec<Tensor<f64>> = params
        .iter()
        .enumerate()
        .map(|(i, p)| Tensor::randn(p.shape(), 0.0, 1.0, 100 + i as u64).unwrap())
        .collect();
    let (_, hv) = hvp(|| Ok(loss_of(&model, &x, &y)), &params, &v).unwrap();
    // (∇L(θ + εv) − ∇L(θ − εv)) / 2ε
    let eps = 1e-5;
    let shifted = |sign: f64| -> Vec<Vec<f64>> {
        for (p, v) in params.iter().zip(&v) {
            p.update_data(|d| {
                for (a, b) in d.iter_mut().zip(v.to_vec().unwrap()) {
                    *a += sign * eps * b;
                }
            })
            .unwrap();
        }
        let g = grads_of(&model, &loss_of(&model, &x, &y));
        for (p, v) in params.iter().zip(&v) {
            p.update_data(|d| {
                for (a, b) in d.iter_mut().zip(v.to_vec().unwrap()) {
                    *a -= sign * eps * b;
                }
            })
            .unwrap();
        }
        g
    };
    let (plus, minus) = (shifted(1.0), shifted(-1.0));
    for (i, h) in hv.iter().enumerate() {
        let fd: Vec<f64> = plus[i]
            .iter()
            .zip(&minus[i])
            .map(|(a, b)| (a - b) / (2.0 * eps))
            .collect();
        let fd = Tensor::from_vec(fd, h.shape()).unwrap();
        assert_close(h, &fd, 1e-7, 1e-5).unwrap();
    }
}

#[test]
fn hessian_jacobian_and_jvp_agree_with_each_other_and_with_formulas() {
    // f(x) = Σ sin-free smooth mix: x₀·x₁² + exp(x₂)·x₀
    let f = |x: &Tensor<f64>| {
        let (a, b, c) = (x.narrow(0, 0, 1)?, x.narrow(0, 1, 1)?, x.narrow(0, 2, 1)?);
        a.mul(&b.square()?)?.add(&c.exp()?.mul(&a)?)?.sum_all()
    };
    let x = Tensor::<f64>::from_vec(vec![0.7, -1.3, 0.4], &[3]).unwrap();
    let h = hessian(f, &x).unwrap().to_vec().unwrap();
    let (a, b, c) = (0.7f64, -1.3f64, 0.4f64);
    let want = [
        0.0,
        2.0 * b,
        c.exp(),
        2.0 * b,
        2.0 * a,
        0.0,
        c.exp(),
        0.0,
        a * c.exp(),
    ];
    for (g, w) in h.iter().zip(want) {
        assert!((g - w).abs() < 1e-12, "{h:?} vs {want:?}");
    }
    // Jacobian of a vector function against J·t from jvp, for every basis tangent
    let g = |x: &Tensor<f64>| x.tanh()?.mul(&x.exp()?)?.cumulative_free_mix();
    let j = jacobian(g, &x).unwrap();
    for k in 0..3 {
        let mut t = vec![0.0; 3];
        t[k] = 1.0;
        let t = Tensor::from_vec(t, &[3]).unwrap();
        let (_, jt) = jvp(g, &x, &t).unwrap();
        let col: Vec<f64> = (0..j.shape()[0])
            .map(|r| j.to_vec().unwrap()[r * 3 + k])
            .collect();
        assert_close(
            &jt,
            &Tensor::from_vec(col, jt.shape()).unwrap(),
            1e-12,
            1e-12,
        )
        .unwrap();
    }
}

/// A vector function whose Jacobian is dense: y = [Σx, x₀·x₂, x₁].
trait Mix {
    fn cumulative_free_mix(&self) -> nabla::Result<Tensor<f64>>;
}

impl Mix for Tensor<f64> {
    fn cumulative_free_mix(&self) -> nabla::Result<Tensor<f64>> {
        let s = self.sum(&[0], true)?;
        let p = self.narrow(0, 0, 1)?.mul(&self.narrow(0, 2, 1)?)?;
        Tensor::concat(&[&s, &p, &self.narrow(0, 1, 1)?], 0)
    }
}

#[test]
fn a_long_chain_differentiates_twice_without_overflowing_the_stack() {
    let x = Tensor::<f64>::from_vec(vec![0.3], &[1])
        .unwrap()
        .requires_grad();
    let mut h = x.clone();
    for _ in 0..5000 {
        h = h.sigmoid().unwrap();
    }
    let g = grad(&[h.sum_all().unwrap()], std::slice::from_ref(&x), graph())
        .unwrap()
        .remove(0);
    let gg = grad(&[g.sum_all().unwrap()], &[x], GradOptions::default()).unwrap();
    assert!(gg[0].to_vec().unwrap()[0].is_finite());
}

#[test]
fn checkpointed_mlp_with_dropout_is_bit_identical_and_keeps_less() {
    for k in [1, 2, 3] {
        let (plain, mut ckpt) = (mlp(0.3, Activation::Relu), mlp(0.3, Activation::Relu));
        ckpt.set_checkpoint_every(Some(k)).unwrap();
        let (x, y) = batch();
        for step in 0..3 {
            let (lp, lc) = (loss_of(&plain, &x, &y), loss_of(&ckpt, &x, &y));
            assert_eq!(lp.item().unwrap(), lc.item().unwrap(), "k {k} step {step}");
            let saved = |l: &Tensor<f64>| l.graph_stats().saved_bytes;
            assert!(
                saved(&lc) < saved(&lp),
                "k {k}: {} vs {}",
                saved(&lc),
                saved(&lp)
            );
            assert_eq!(
                grads_of(&plain, &lp),
                grads_of(&ckpt, &lc),
                "k {k} step {step}"
            );
        }
    }
}

#[test]
fn second_derivatives_flow_through_checkpoints() {
    let (plain, mut ckpt) = (mlp(0.0, Activation::Tanh), mlp(0.0, Activation::Tanh));
    ckpt.set_checkpoint_every(Some(2)).unwrap();
    let (x, y) = batch();
    let v: Vec<Tensor<f64>> = plain
        .parameters()
        .iter()
        .map(|p| Tensor::ones(p.shape()).unwrap())
        .collect();
    let (_, a) = hvp(|| Ok(loss_of(&plain, &x, &y)), &plain.parameters(), &v).unwrap();
    let (_, b) = hvp(|| Ok(loss_of(&ckpt, &x, &y)), &ckpt.parameters(), &v).unwrap();
    for (a, b) in a.iter().zip(&b) {
        assert_close(a, b, 1e-14, 1e-12).unwrap();
    }
}

#[test]
fn checkpoint_refuses_weights_edited_before_backward_and_nondeterministic_functions() {
    let w = Tensor::<f64>::from_vec(vec![1.0, 2.0], &[2])
        .unwrap()
        .requires_grad();
    let x = Tensor::<f64>::from_vec(vec![3.0, 4.0], &[2]).unwrap();
    let w2 = w.clone();
    let y = checkpoint(
        move |xs| xs[0].mul(&w2)?.sum_all(),
        std::slice::from_ref(&x),
    )
    .unwrap();
    w.update_data(|d| d[0] = 5.0).unwrap();
    let e = y.backward().unwrap_err().to_string();
    assert!(
        e.contains("checkpoint") && e.contains("modified in place"),
        "{e}"
    );

    let calls = std::sync::atomic::AtomicUsize::new(0);
    let calls = std::sync::Arc::new(calls);
    let c = calls.clone();
    let x = x.requires_grad();
    let y = checkpoint(
        move |xs| {
            let n = c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if n == 0 {
                xs[0].sum_all()
            } else {
                xs[0].narrow(0, 0, 1)
            }
        },
        &[x],
    )
    .unwrap();
    let e = y.backward().unwrap_err().to_string();
    assert!(e.contains("deterministic"), "{e}");
}

#[test]
fn checkpoint_guards_captured_constants_and_counts_repeated_inputs_once() {
    // a captured constant edited in place before backward: an error, as without checkpointing
    let x = Tensor::<f64>::from_vec(vec![1.0, 2.0], &[2])
        .unwrap()
        .requires_grad();
    let c = Tensor::<f64>::from_vec(vec![3.0, 4.0], &[2]).unwrap();
    let c2 = c.clone();
    let y = checkpoint(
        move |xs| xs[0].mul(&c2)?.sum_all(),
        std::slice::from_ref(&x),
    )
    .unwrap();
    c.update_data(|d| d[0] = 100.0).unwrap();
    let e = y.backward().unwrap_err().to_string();
    assert!(
        e.contains("checkpoint") && e.contains("modified in place"),
        "{e}"
    );

    // the same tensor passed twice: d(x·x)/dx = 2x, not 4x
    let y = checkpoint(|xs| xs[0].mul(&xs[1])?.sum_all(), &[x.clone(), x.clone()]).unwrap();
    let g = y.backward().unwrap();
    assert_eq!(g.get(&x).unwrap().to_vec().unwrap(), [2.0, 4.0]);

    // a captured weight returned as it is still gets its gradient
    let w = Tensor::<f64>::from_vec(vec![5.0, 6.0], &[2])
        .unwrap()
        .requires_grad();
    let w2 = w.clone();
    let y = checkpoint(move |_| Ok(w2.clone()), std::slice::from_ref(&x)).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(&w).unwrap().to_vec().unwrap(), [1.0, 1.0]);
}

#[test]
fn nested_seed_requests_and_empty_batches_are_not_panics() {
    let s = nabla::autograd::replayable_seed(|| nabla::autograd::replayable_seed(|| 7).unwrap());
    assert_eq!(s.unwrap(), 7);
    // double backward of max over an empty batch
    let x = Tensor::<f64>::zeros(&[0, 3]).unwrap().requires_grad();
    let y = x.max(&[1], false).unwrap().sum_all().unwrap();
    let g = grad(&[y], std::slice::from_ref(&x), graph())
        .unwrap()
        .remove(0);
    let opts = GradOptions {
        allow_unused: true,
        ..Default::default()
    };
    let h = grad(&[g.sum_all().unwrap()], &[x], opts).unwrap();
    assert_eq!(h[0].shape(), &[0, 3]);
}

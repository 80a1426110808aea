//! The backpropagation engine: recording rules, accumulation, repeatability, deep graphs,
//! memory accounting, and a hand-derived gradient.

use nabla::testing::assert_close;
use nabla::{no_grad, NoGradGuard, OpKind, Tensor};

#[test]
fn linear_model_gradient_matches_hand_derivation() {
    // L = Σ (XW + b)⊙(XW + b)  ⇒  ∂L/∂W = 2·Xᵀ(XW + b),  ∂L/∂b = 2·Σ_rows (XW + b)
    let x = Tensor::<f64>::randn(&[6, 4], 0.0, 1.0, 1).unwrap();
    let w = Tensor::<f64>::randn(&[4, 3], 0.0, 1.0, 2)
        .unwrap()
        .requires_grad();
    let b = Tensor::<f64>::randn(&[3], 0.0, 1.0, 3)
        .unwrap()
        .requires_grad();
    let o = x.matmul(&w).unwrap().add(&b).unwrap();
    let loss = o.mul(&o).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();

    let o_val = o.detach();
    let expect_w = x
        .t()
        .unwrap()
        .matmul(&o_val)
        .unwrap()
        .mul_scalar(2.0)
        .unwrap();
    let expect_b = o_val.sum(&[0], false).unwrap().mul_scalar(2.0).unwrap();
    assert_close(grads.get(&w).unwrap(), &expect_w, 1e-12, 1e-12).unwrap();
    assert_close(grads.get(&b).unwrap(), &expect_b, 1e-12, 1e-12).unwrap();
    // and by hand, element (0,0) of dW: 2 Σ_i X[i,0]·O[i,0]
    let xs = x.to_vec().unwrap();
    let os = o_val.to_vec().unwrap();
    let dw00: f64 = (0..6).map(|i| 2.0 * xs[i * 4] * os[i * 3]).sum();
    assert!((grads.get(&w).unwrap().to_vec().unwrap()[0] - dw00).abs() < 1e-12);
}

#[test]
fn reused_tensor_gets_the_sum_of_contributions() {
    // L = Σ (x·x + 3x) ⇒ dL/dx = 2x + 3
    let x = Tensor::<f64>::from_vec(vec![1.0, -2.0, 0.5], &[3])
        .unwrap()
        .requires_grad();
    let loss = x
        .mul(&x)
        .unwrap()
        .add(&x.mul_scalar(3.0).unwrap())
        .unwrap()
        .sum_all()
        .unwrap();
    let g = loss.backward().unwrap();
    assert_eq!(g.get(&x).unwrap().to_vec().unwrap(), vec![5.0, -1.0, 4.0]);
}

#[test]
fn backward_twice_gives_identical_results() {
    let x = Tensor::<f32>::randn(&[8, 5], 0.0, 1.0, 4).unwrap();
    let w = Tensor::<f32>::randn(&[5, 3], 0.0, 1.0, 5)
        .unwrap()
        .requires_grad();
    let loss = x
        .matmul(&w)
        .unwrap()
        .tanh()
        .unwrap()
        .log_softmax(1)
        .unwrap()
        .mean_all()
        .unwrap();
    let a = loss.backward().unwrap();
    let b = loss.backward().unwrap();
    assert_eq!(a.get(&w).unwrap().to_vec(), b.get(&w).unwrap().to_vec());
    assert_eq!(
        a.len(),
        1,
        "only the leaf that requires a gradient is stored"
    );
}

#[test]
fn ten_thousand_op_chain_backward_and_drop() {
    let x = Tensor::<f64>::from_vec(vec![0.5, -0.25], &[2])
        .unwrap()
        .requires_grad();
    let mut y = x.clone();
    for _ in 0..10_000 {
        y = y.mul_scalar(1.0001).unwrap().add_scalar(-0.00001).unwrap();
    }
    let loss = y.sum_all().unwrap();
    assert_eq!(loss.graph_stats().ops, 20_001);
    let g = loss.backward().unwrap();
    let expect = 1.0001f64.powi(10_000);
    for v in g.get(&x).unwrap().to_vec().unwrap() {
        assert!((v - expect).abs() < 1e-9 * expect, "{v} vs {expect}");
    }
    drop(y);
    drop(loss); // iterative drop: must not overflow the stack either
}

#[test]
fn no_grad_and_detach_record_nothing() {
    let w = Tensor::<f32>::ones(&[3]).unwrap().requires_grad();
    let y = no_grad(|| w.exp().unwrap().sum_all().unwrap());
    assert!(y.is_leaf() && !y.requires_grad_flag());
    {
        let _g = NoGradGuard::new();
        assert!(!nabla::is_grad_enabled());
        assert!(w.mul(&w).unwrap().is_leaf());
    }
    assert!(nabla::is_grad_enabled());
    let d = w.detach();
    assert!(!d.requires_grad_flag());
    assert!(d.mul_scalar(2.0).unwrap().is_leaf());
    // inputs without requires_grad record nothing either
    let c = Tensor::<f32>::ones(&[3]).unwrap();
    assert!(c.exp().unwrap().is_leaf());
    // backward on an unrecorded tensor is an error, not a panic
    assert!(y.backward().is_err());
}

#[test]
fn backward_needs_a_scalar_or_a_seed() {
    let w = Tensor::<f64>::ones(&[2, 2]).unwrap().requires_grad();
    let y = w.mul_scalar(3.0).unwrap();
    let err = y.backward().unwrap_err().to_string();
    assert!(err.contains("[2, 2]"), "{err}");
    let seed = Tensor::<f64>::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
    let g = y.backward_with(&seed).unwrap();
    assert_eq!(
        g.get(&w).unwrap().to_vec().unwrap(),
        vec![3.0, 6.0, 9.0, 12.0]
    );
    assert!(y.backward_with(&Tensor::ones(&[4]).unwrap()).is_err());
}

#[test]
fn gradients_skip_inputs_that_do_not_need_them() {
    let x = Tensor::<f32>::randn(&[4, 3], 0.0, 1.0, 6).unwrap(); // data: no gradient
    let w = Tensor::<f32>::randn(&[3, 2], 0.0, 1.0, 7)
        .unwrap()
        .requires_grad();
    let g = x.matmul(&w).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(g.get(&x).is_none());
    assert!(g.get(&w).is_some());
}

#[test]
fn graph_memory_is_reported_and_freed_on_drop() {
    let x = Tensor::<f32>::randn(&[64, 100], 0.0, 1.0, 8).unwrap();
    let w1 = Tensor::<f32>::randn(&[100, 50], 0.0, 0.1, 9)
        .unwrap()
        .requires_grad();
    let w2 = Tensor::<f32>::randn(&[50, 10], 0.0, 0.1, 10)
        .unwrap()
        .requires_grad();
    let h = x.matmul(&w1).unwrap();
    let a = h.relu().unwrap();
    let o = a.matmul(&w2).unwrap();
    let loss = o.square().unwrap().sum_all().unwrap();
    let stats = loss.graph_stats();
    // saved: h [64,50], a [64,50], o [64,10], o² [64,10], loss (1) — all f32
    assert_eq!(stats.saved_bytes, 4 * (64 * 50 * 2 + 64 * 10 * 2 + 1));
    assert_eq!(stats.leaf_bytes, 4 * (64 * 100 + 100 * 50 + 50 * 10));
    assert_eq!(stats.ops, 5);
    assert_eq!(stats.op_counts[&OpKind::Matmul], 2);

    let inference = no_grad(|| x.matmul(&w1).unwrap().relu().unwrap().matmul(&w2).unwrap());
    assert_eq!(inference.graph_stats().saved_bytes, 0);

    let weak = h.downgrade();
    drop((h, a, o));
    assert!(
        weak.is_alive(),
        "the graph keeps forward tensors for backward"
    );
    drop(loss);
    assert!(!weak.is_alive(), "dropping the graph frees them");
}

/// GELU's forward pass keeps its slope for plain backward; `create_graph` backward and a
/// strided input (no slope kept) compute it again. All three give the same bits, and the slope
/// is counted in the memory the graph holds.
fn gelu_paths_agree<T: nabla::Float>() {
    use nabla::autograd::{grad, GradOptions};
    // Values across GELU's range, including where tanh saturates and tiny ones.
    let x = Tensor::<T>::randn(&[70, 1003], 0.0, 4.0, 5).unwrap();
    let up = Tensor::<T>::randn(&[70, 1003], 0.0, 1.0, 6).unwrap();
    let loss = |x: &Tensor<T>| x.gelu().unwrap().mul(&up).unwrap().sum_all().unwrap();
    let xg = x.clone().requires_grad();
    let plain = loss(&xg)
        .backward()
        .unwrap()
        .get(&xg)
        .unwrap()
        .to_vec()
        .unwrap();
    let opts = GradOptions {
        create_graph: true,
        ..GradOptions::default()
    };
    let graphed = grad(&[loss(&xg)], std::slice::from_ref(&xg), opts).unwrap();
    assert_eq!(graphed[0].to_vec().unwrap(), plain, "create_graph backward");
    // The same values read through a transposed view: the slope is not kept there.
    let xt = x.t().unwrap().contiguous().unwrap().requires_grad();
    let l = xt
        .t()
        .unwrap()
        .gelu()
        .unwrap()
        .mul(&up)
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = l.backward().unwrap();
    let strided = grads.get(&xt).unwrap().t().unwrap().contiguous().unwrap();
    let strided = strided.to_vec().unwrap();
    assert_eq!(strided, plain, "strided input");
    // Memory: y, its slope, y·up and the loss.
    let e = std::mem::size_of::<T>();
    assert_eq!(loss(&xg).graph_stats().saved_bytes, e * (3 * 70 * 1003 + 1));
    assert_eq!(
        l.graph_stats().saved_bytes,
        e * (2 * 70 * 1003 + 1),
        "no slope for a strided input"
    );
}

#[test]
fn gelu_backward_gives_the_same_bits_with_and_without_the_kept_slope() {
    gelu_paths_agree::<f32>();
    gelu_paths_agree::<f64>();
}

#[test]
fn tensors_are_send_and_sync_and_cheap_to_clone() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Tensor<f32>>();
    assert_send_sync::<Tensor<f64>>();
    let t = Tensor::<f32>::zeros(&[1000]).unwrap();
    let c = t.clone();
    assert_eq!(t.id(), c.id());
    let h = std::thread::spawn(move || c.sum_all().unwrap().item().unwrap());
    assert_eq!(h.join().unwrap(), 0.0);
}

#[test]
fn in_place_updates_are_seen_by_all_handles() {
    let w = Tensor::<f32>::ones(&[2, 2]).unwrap().requires_grad();
    let r = w.reshape(&[4]).unwrap();
    w.update_data(|d| d.iter_mut().for_each(|v| *v -= 0.5))
        .unwrap();
    assert_eq!(r.to_vec().unwrap(), vec![0.5; 4]);
    assert!(w.requires_grad_flag());
}

#[test]
fn anomaly_detection_names_the_first_non_finite_op_in_forward_order() {
    use nabla::autograd::detect_anomaly;
    let x = Tensor::<f32>::from_vec(vec![1.0, 2.0, -3.0, 4.0], &[2, 2]).unwrap();
    let w = Tensor::<f32>::from_vec(vec![1.0, 0.0, 0.0, 1.0], &[2, 2])
        .unwrap()
        .requires_grad();
    // log of a negative number inside the model; later ops propagate the NaN
    let (loss, anomaly) = detect_anomaly(|| {
        x.matmul(&w)
            .unwrap()
            .log()
            .unwrap()
            .exp()
            .unwrap()
            .sum_all()
            .unwrap()
    });
    assert!(loss.item().unwrap().is_nan());
    let a = anomaly.expect("an anomaly");
    assert_eq!(a.op, "log");
    assert_eq!(a.shape, vec![2, 2]);
    assert_eq!(a.non_finite, 1);
    assert_eq!((a.inputs[0].min, a.inputs[0].max), (-3.0, 4.0));
    assert!(
        a.to_string()
            .starts_with("log produced 1 non-finite of 4 values"),
        "{a}"
    );
    // off by default, and nothing is left behind for the next detection
    let (_, none) = detect_anomaly(|| x.matmul(&w).unwrap().relu());
    assert!(none.is_none());
    assert!(!nabla::autograd::anomaly::is_detecting());
}

#[test]
fn anomaly_detection_names_gelu_backward_not_the_kept_slope() {
    use nabla::autograd::detect_anomaly;
    // At 1e20 GELU is finite (x) but its slope is 0·∞ = NaN in f32.
    let x = Tensor::<f32>::from_vec(vec![1e20, 1.0], &[2])
        .unwrap()
        .requires_grad();
    let (grads, anomaly) = detect_anomaly(|| x.gelu().unwrap().sum_all().unwrap().backward());
    let g = grads.unwrap().get(&x).unwrap().to_vec().unwrap();
    assert!(g[0].is_nan() && g[1].is_finite(), "{g:?}");
    assert_eq!(anomaly.expect("an anomaly").op, "gelu_backward");
}

/// Records what `backward_hooked` hands over, with how many ops had run by then.
#[derive(Default)]
struct Handed {
    ops: usize,
    ready: Vec<(usize, usize, Option<Vec<f64>>)>,
}

impl nabla::autograd::BackwardHook<f64> for Handed {
    fn ready(&mut self, i: usize, g: Option<&Tensor<f64>>) -> nabla::Result<()> {
        let g = g.map(|g| g.to_vec()).transpose()?;
        self.ready.push((i, self.ops, g));
        Ok(())
    }
    fn after_op(&mut self) -> nabla::Result<()> {
        self.ops += 1;
        Ok(())
    }
}

#[test]
fn hooked_backward_hands_each_gradient_over_once_final_and_early() {
    let x = Tensor::<f64>::randn(&[5, 3], 0.0, 1.0, 1).unwrap();
    let shared = Tensor::<f64>::randn(&[3, 3], 0.0, 1.0, 2)
        .unwrap()
        .requires_grad();
    let w = Tensor::<f64>::randn(&[3, 2], 0.0, 1.0, 3)
        .unwrap()
        .requires_grad();
    let b = Tensor::<f64>::randn(&[2], 0.0, 1.0, 4)
        .unwrap()
        .requires_grad();
    let unused = Tensor::<f64>::zeros(&[4]).unwrap().requires_grad();
    // `shared` is used twice: its gradient is final only after the first use's rule ran.
    let h = x.matmul(&shared).unwrap().tanh().unwrap();
    let h = h.matmul(&shared).unwrap().relu().unwrap();
    let loss = h.matmul(&w).unwrap().add(&b).unwrap().sum_all().unwrap();
    let watch = [
        shared.clone(),
        w.clone(),
        b.clone(),
        unused.clone(),
        x.clone(),
    ];
    let mut hook = Handed::default();
    let grads = loss.backward_hooked(&watch, &mut hook).unwrap();
    let plain = loss.backward().unwrap();

    let order: Vec<usize> = hook.ready.iter().map(|r| r.0).collect();
    // Not in the graph (unused, and x which needs no gradient) at once; then b, w, shared.
    assert_eq!(order, vec![3, 4, 2, 1, 0]);
    for (i, _, g) in &hook.ready {
        let want = plain.get(&watch[*i]).map(|g| g.to_vec().unwrap());
        assert_eq!(g, &want, "tensor {i}: handed over before it was final");
        assert_eq!(grads.get(&watch[*i]).map(|g| g.to_vec().unwrap()), want);
    }
    let at = |i: usize| hook.ready.iter().find(|r| r.0 == i).unwrap().1;
    assert!(at(2) < at(1) && at(1) < at(0), "{:?}", hook.ready);
    assert!(at(2) <= 2, "b is final right after its add rule: {}", at(2));

    let err = x.sum_all().unwrap().backward_hooked(&watch, &mut hook);
    assert!(err
        .unwrap_err()
        .to_string()
        .contains("does not require a gradient"));
    let err = h.backward_hooked(&watch, &mut hook);
    assert!(err.unwrap_err().to_string().contains("one element"));
}

/// x·w and a linear layer whose two gradients (each 96·200·150 = 2.9M multiply-adds, above the
/// threshold at which backward runs them side by side) both count.
fn product_loss(x: &Tensor<f32>, w: &Tensor<f32>, b: &Tensor<f32>) -> Tensor<f32> {
    let lin = x.linear(w, b).unwrap().tanh().unwrap();
    let mm = x.matmul(w).unwrap();
    lin.mul(&mm).unwrap().sum_all().unwrap()
}

fn product_leaves() -> [Tensor<f32>; 3] {
    [
        Tensor::randn(&[96, 200], 0.0, 1.0, 3).unwrap(),
        Tensor::randn(&[200, 150], 0.0, 0.1, 4).unwrap(),
        Tensor::randn(&[150], 0.0, 1.0, 5).unwrap(),
    ]
    .map(|t| t.requires_grad())
}

#[test]
fn side_by_side_product_gradients_equal_one_threads_bit_for_bit() {
    let [x, w, b] = product_leaves();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let g = product_loss(&x, &w, &b).backward().unwrap();
            [&x, &w, &b].map(|t| g.get(t).unwrap().to_vec().unwrap())
        })
    };
    let one = run(1);
    for threads in [2, 3, 4] {
        for (i, (a, b)) in one.iter().zip(run(threads)).enumerate() {
            assert!(
                a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()),
                "gradient {i} differs on {threads} threads"
            );
        }
    }
    // The recorded (create_graph) path runs the products one after the other: same values.
    let loss = product_loss(&x, &w, &b);
    let opts = nabla::autograd::GradOptions {
        create_graph: true,
        ..Default::default()
    };
    let g = nabla::autograd::grad(&[loss], &[x.clone(), w.clone()], opts).unwrap();
    assert_eq!(g[0].to_vec().unwrap(), one[0]);
    assert_eq!(g[1].to_vec().unwrap(), one[1]);
}

#[test]
fn an_allocation_limit_holds_for_products_run_on_another_thread() {
    // Large enough (123M multiply-adds per product) that the idle thread wakes up and takes
    // the second gradient while this one computes the first.
    let x = Tensor::<f32>::randn(&[256, 800], 0.0, 1.0, 3)
        .unwrap()
        .requires_grad();
    let w = Tensor::<f32>::randn(&[800, 600], 0.0, 0.1, 4)
        .unwrap()
        .requires_grad();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    // Forward values (614,400 bytes) and x's gradient (819,200) fit; w's (1,920,000 bytes),
    // computed beside it, does not, whichever thread computes it.
    for _ in 0..5 {
        let r = pool.install(|| {
            nabla::tensor::with_allocation_limit(1_500_000, || {
                x.matmul(&w)?.sum_all()?.backward().map(|_| ())
            })
        });
        let e = r.expect_err("the limit must hold on every thread backward uses");
        assert!(e.to_string().contains("1920000 bytes"), "{e}");
    }
}

/// Backward adds a tensor's gradient contributions into one of them in place when nothing else
/// holds it: a seed the caller keeps, the same gradient handed to two inputs, a narrow's
/// scattered rows and a view of a shared gradient must all stay as they were, and every sum
/// must equal the one computed out of place.
#[test]
fn in_place_gradient_sums_never_write_into_a_tensor_someone_holds() {
    let x = Tensor::<f64>::randn(&[3, 4], 0.0, 1.0, 21)
        .unwrap()
        .requires_grad();
    // y = x + x: both inputs get the seed itself; the caller holds it.
    let seed = Tensor::<f64>::randn(&[3, 4], 0.0, 1.0, 22).unwrap();
    let before = seed.to_vec().unwrap();
    let y = x.add(&x).unwrap();
    let g = y.backward_with(&seed).unwrap();
    assert_eq!(seed.to_vec().unwrap(), before, "the seed was written");
    let twice: Vec<f64> = before.iter().map(|v| v + v).collect();
    assert_eq!(g.get(&x).unwrap().to_vec().unwrap(), twice);

    // Three narrows of x plus x itself, through a reshape view: the contributions are
    // fresh (summed in place) or shared with the seed (not).
    let z = x
        .narrow(1, 0, 2)
        .unwrap()
        .sum_all()
        .unwrap()
        .add(
            &x.narrow(1, 1, 3)
                .unwrap()
                .square()
                .unwrap()
                .sum_all()
                .unwrap(),
        )
        .unwrap()
        .add(
            &x.narrow(0, 2, 1)
                .unwrap()
                .mul_scalar(3.0)
                .unwrap()
                .sum_all()
                .unwrap(),
        )
        .unwrap()
        .add(&x.reshape(&[12]).unwrap().sum_all().unwrap())
        .unwrap();
    let g = z.backward().unwrap();
    let xv = x.to_vec().unwrap();
    let want: Vec<f64> = (0..12)
        .map(|i| {
            let (r, c) = (i / 4, i % 4);
            let mut d = 1.0; // the reshape's sum
            if c < 2 {
                d += 1.0;
            }
            if c >= 1 {
                d += 2.0 * xv[i];
            }
            if r == 2 {
                d += 3.0;
            }
            d
        })
        .collect();
    assert_close(
        g.get(&x).unwrap(),
        &Tensor::from_vec(want, &[3, 4]).unwrap(),
        1e-14,
        1e-14,
    )
    .unwrap();
    // The same sums out of place (a recorded backward keeps every gradient as an op's
    // output): the same bits.
    let opts = nabla::autograd::GradOptions {
        create_graph: true,
        ..Default::default()
    };
    let recorded = nabla::autograd::grad(&[z], std::slice::from_ref(&x), opts).unwrap();
    assert_eq!(
        recorded[0].to_vec().unwrap(),
        g.get(&x).unwrap().to_vec().unwrap()
    );
    // ... and keep their graph: one contribution is a constant (the narrows' and the
    // reshape's), one depends on x (the square's), and the sum must record both.
    assert!(recorded[0].requires_grad_flag());
    let second = nabla::autograd::grad(
        &[recorded[0].sum_all().unwrap()],
        std::slice::from_ref(&x),
        Default::default(),
    )
    .unwrap();
    let want: Vec<f64> = (0..12)
        .map(|i| if i % 4 >= 1 { 2.0 } else { 0.0 })
        .collect();
    assert_eq!(second[0].to_vec().unwrap(), want);

    // A view sharing a caller's storage through its own handle: y = x·1 + 2x, both reshaped
    // to [12], seeded with a tensor the caller keeps; x's first contribution is a view of
    // the seed's storage.
    let seed = Tensor::<f64>::randn(&[12], 0.0, 1.0, 23).unwrap();
    let before = seed.to_vec().unwrap();
    let y = x
        .reshape(&[12])
        .unwrap()
        .add(&x.mul_scalar(2.0).unwrap().reshape(&[12]).unwrap())
        .unwrap();
    let g = y.backward_with(&seed).unwrap();
    assert_eq!(seed.to_vec().unwrap(), before, "the seed was written");
    let thrice: Vec<f64> = before.iter().map(|v| v + 2.0 * v).collect();
    assert_eq!(g.get(&x).unwrap().to_vec().unwrap(), thrice);
}

/// The cross-entropy's gradient in one pass per row (plain backward) has the bits of the
/// composed ops it replaces (softmax, mass, difference, product: the path `create_graph`
/// records), for one-hot targets, soft targets whose rows do not sum to 1, uneven per-row
/// output gradients and rows long enough to be shared among threads.
#[test]
fn the_fused_cross_entropy_gradient_has_the_composed_ops_bits() {
    for (n, k, soft) in [
        (7, 5, false),
        (9, 3, true),
        (700, 84, false),
        (600, 90, true),
    ] {
        let z = Tensor::<f32>::randn(&[n, k], 0.0, 3.0, 1)
            .unwrap()
            .requires_grad();
        let t = if soft {
            Tensor::<f32>::rand_uniform(&[n, k], 0.0, 0.3, 2).unwrap()
        } else {
            let hot: Vec<f32> = (0..n * k)
                .map(|i| if i % k == (i / k) % k { 1.0 } else { 0.0 })
                .collect();
            Tensor::from_vec(hot, &[n, k]).unwrap()
        };
        let w = Tensor::<f32>::rand_uniform(&[n], 0.5, 2.0, 3).unwrap();
        let loss = || {
            z.softmax_cross_entropy(&t)
                .unwrap()
                .mul(&w)
                .unwrap()
                .sum_all()
                .unwrap()
        };
        let plain = loss()
            .backward()
            .unwrap()
            .get(&z)
            .unwrap()
            .to_vec()
            .unwrap();
        let opts = nabla::autograd::GradOptions {
            create_graph: true,
            ..Default::default()
        };
        let composed = nabla::autograd::grad(&[loss()], std::slice::from_ref(&z), opts).unwrap();
        let composed = composed[0].to_vec().unwrap();
        assert_eq!(plain.len(), composed.len());
        for (i, (a, b)) in plain.iter().zip(&composed).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "n {n} k {k} soft {soft} at {i}: {a} vs {b}"
            );
        }
    }
}

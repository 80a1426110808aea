//! Optimizers against values computed by hand from the published update rules; schedules;
//! clipping; state snapshots.

use nabla::optim::{clip_grad_norm, Adam, AdamConfig, LrSchedule, Optimizer, Sgd, SgdConfig};
use nabla::{GradStore, Tensor};

/// Runs `steps` updates of `opt` on f(w) = (w − 3)², starting from the optimizer's parameter.
fn minimise(opt: &mut dyn Optimizer<f64>, w: &Tensor<f64>, steps: usize) -> Vec<f64> {
    (0..steps)
        .map(|_| {
            let loss = w
                .add_scalar(-3.0)
                .unwrap()
                .square()
                .unwrap()
                .sum_all()
                .unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
            w.to_vec().unwrap()[0]
        })
        .collect()
}

fn param(v: f64) -> Tensor<f64> {
    Tensor::from_vec(vec![v], &[1]).unwrap().requires_grad()
}

#[test]
fn three_adam_steps_match_the_paper() {
    // By hand (Kingma & Ba, Algorithm 1) with η = 0.1, β = (0.9, 0.999), ε = 1e-8:
    // step 1: g = −6, m̂ = −6, v̂ = 36 → w = 0.1·6/(6 + ε) ≈ 0.0999999998
    let w = param(0.0);
    let mut adam = Adam::new(vec![("w".into(), w.clone())], AdamConfig::adam(0.1)).unwrap();
    let got = minimise(&mut adam, &w, 3);
    let want = [
        0.09999999983333335,
        0.19989729258521102,
        0.29961847654925267,
    ];
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
    }
    assert_eq!(adam.steps(), 3);
}

#[test]
fn adamw_decouples_weight_decay() {
    let w = param(0.0);
    let cfg = AdamConfig {
        weight_decay: 0.1,
        ..AdamConfig::adamw(0.1)
    };
    let mut opt = Adam::new(vec![("w".into(), w.clone())], cfg).unwrap();
    let got = minimise(&mut opt, &w, 3);
    assert!((got[2] - 0.29663115153344133).abs() < 1e-12, "{got:?}");
}

#[test]
fn sgd_momentum_and_nesterov_by_hand() {
    // μ = 0.9, η = 0.1: b₀ = g₀ = −6 → w = 0.6; g₁ = −4.8, b₁ = −10.2 → w = 1.62;
    // g₂ = −2.76, b₂ = −11.94 → w = 2.814
    let w = param(0.0);
    let cfg = SgdConfig {
        momentum: 0.9,
        ..SgdConfig::new(0.1)
    };
    let mut sgd = Sgd::new(vec![("w".into(), w.clone())], cfg.clone()).unwrap();
    let got = minimise(&mut sgd, &w, 3);
    assert!((got[0] - 0.6).abs() < 1e-12 && (got[1] - 1.62).abs() < 1e-12);
    assert!((got[2] - 2.814).abs() < 1e-12, "{got:?}");

    let w = param(0.0);
    let nesterov = SgdConfig {
        nesterov: true,
        ..cfg
    };
    let mut sgd = Sgd::new(vec![("w".into(), w.clone())], nesterov).unwrap();
    let got = minimise(&mut sgd, &w, 3);
    assert!((got[2] - 3.3250560000000005).abs() < 1e-12, "{got:?}");

    // plain SGD with weight decay λ: w ← w − η(g + λw)
    let w = param(1.0);
    let decay = SgdConfig {
        weight_decay: 0.5,
        ..SgdConfig::new(0.1)
    };
    let mut sgd = Sgd::new(vec![("w".into(), w.clone())], decay).unwrap();
    let got = minimise(&mut sgd, &w, 1);
    assert!((got[0] - (1.0 - 0.1 * (-4.0 + 0.5))).abs() < 1e-12);
}

#[test]
fn bad_hyper_parameters_are_errors() {
    let p = || vec![("w".to_string(), param(0.0))];
    assert!(Sgd::new(p(), SgdConfig::new(-1.0)).is_err());
    assert!(Sgd::new(p(), SgdConfig::new(f64::NAN)).is_err());
    let nesterov_without_momentum = SgdConfig {
        nesterov: true,
        ..SgdConfig::new(0.1)
    };
    assert!(Sgd::new(p(), nesterov_without_momentum).is_err());
    let bad_beta = AdamConfig {
        beta1: 1.0,
        ..AdamConfig::adam(0.1)
    };
    assert!(Adam::new(p(), bad_beta).is_err());
}

#[test]
fn parameters_without_gradients_are_left_alone() {
    let (a, b) = (param(1.0), param(2.0));
    let mut opt = Adam::new(
        vec![("a".into(), a.clone()), ("b".into(), b.clone())],
        AdamConfig::adam(0.1),
    )
    .unwrap();
    let g = a.square().unwrap().sum_all().unwrap().backward().unwrap();
    opt.step(&g).unwrap();
    assert_ne!(a.to_vec().unwrap()[0], 1.0);
    assert_eq!(b.to_vec().unwrap()[0], 2.0);
    let st = opt.state();
    assert_eq!(
        st.buffers.len(),
        2,
        "moments only for the updated parameter"
    );
}

#[test]
fn state_snapshot_restores_exactly() {
    let make =
        |w: &Tensor<f64>| Adam::new(vec![("w".into(), w.clone())], AdamConfig::adam(0.05)).unwrap();
    let w1 = param(0.0);
    let mut straight = make(&w1);
    minimise(&mut straight, &w1, 6);

    let w2 = param(0.0);
    let mut first = make(&w2);
    minimise(&mut first, &w2, 3);
    let snapshot = first.state();
    assert_eq!(snapshot.kind, "adam");
    assert!(
        snapshot.config.contains("\"lr\":0.05"),
        "{}",
        snapshot.config
    );
    let w3 = Tensor::from_vec(w2.to_vec().unwrap(), &[1])
        .unwrap()
        .requires_grad();
    let mut resumed = make(&w3);
    resumed.load_state(&snapshot).unwrap();
    minimise(&mut resumed, &w3, 3);
    assert_eq!(w3.to_vec(), w1.to_vec(), "bit-identical after resuming");

    let mut sgd = Sgd::new(vec![("w".into(), w3.clone())], SgdConfig::new(0.1)).unwrap();
    assert!(sgd.load_state(&snapshot).is_err(), "adam state into sgd");
    let mut other = Adam::new(vec![("v".into(), w3)], AdamConfig::adam(0.1)).unwrap();
    let err = other.load_state(&snapshot).unwrap_err().to_string();
    assert!(err.contains("exp_avg.w"), "{err}");
}

#[test]
fn schedules_by_hand() {
    let step = LrSchedule::Step {
        every: 10,
        gamma: 0.5,
    };
    assert_eq!(step.lr_at(1.0, 9), 1.0);
    assert_eq!(step.lr_at(1.0, 10), 0.5);
    assert_eq!(step.lr_at(1.0, 25), 0.25);
    let cos = LrSchedule::Cosine {
        total: 100,
        min_lr: 0.1,
    };
    assert_eq!(cos.lr_at(1.0, 0), 1.0);
    assert!((cos.lr_at(1.0, 50) - 0.55).abs() < 1e-12);
    assert!((cos.lr_at(1.0, 100) - 0.1).abs() < 1e-12);
    assert!((cos.lr_at(1.0, 500) - 0.1).abs() < 1e-12);
    let warm = LrSchedule::Warmup {
        steps: 4,
        then: Box::new(LrSchedule::Constant),
    };
    let lrs: Vec<f64> = (0..6).map(|s| warm.lr_at(0.8, s)).collect();
    assert_eq!(lrs, vec![0.2, 0.4, 0.6000000000000001, 0.8, 0.8, 0.8]);
    assert!(LrSchedule::Step {
        every: 0,
        gamma: 0.5
    }
    .validate()
    .is_err());
    assert!(LrSchedule::Cosine {
        total: 0,
        min_lr: 0.0
    }
    .validate()
    .is_err());
    let json = serde_json_roundtrip(&warm);
    assert_eq!(json, warm);
}

fn serde_json_roundtrip(s: &LrSchedule) -> LrSchedule {
    // schedules are plain data: they serialise for checkpoints and configs
    let text = serde_json::to_string(s).unwrap();
    assert!(text.contains("warmup"), "{text}");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn clipping_by_global_norm() {
    let a = Tensor::<f64>::from_vec(vec![3.0, 0.0], &[2])
        .unwrap()
        .requires_grad();
    let b = Tensor::<f64>::from_vec(vec![4.0], &[1])
        .unwrap()
        .requires_grad();
    // L = ½Σa² + ½Σb² → grads are a and b, global norm 5
    let loss = a
        .square()
        .unwrap()
        .sum_all()
        .unwrap()
        .add(&b.square().unwrap().sum_all().unwrap())
        .unwrap()
        .mul_scalar(0.5)
        .unwrap();
    let mut g: GradStore<f64> = loss.backward().unwrap();
    let norm = clip_grad_norm(&mut g, &[a.clone(), b.clone()], 1.0).unwrap();
    assert!((norm - 5.0).abs() < 1e-12);
    let ga = g.get(&a).unwrap().to_vec().unwrap();
    let gb = g.get(&b).unwrap().to_vec().unwrap();
    assert!((ga[0] - 0.6).abs() < 1e-6 && (gb[0] - 0.8).abs() < 1e-6);
    // below the threshold nothing changes
    let norm2 = clip_grad_norm(&mut g, &[a, b], 10.0).unwrap();
    assert!((norm2 - 1.0).abs() < 1e-5);
    assert!(clip_grad_norm(&mut g, &[], 0.0).is_err());
}

#[test]
fn adam_flushes_what_would_be_subnormal_and_nothing_else() {
    let w = Tensor::from_vec(vec![1.0f32, 1.0, -2.0, 1e-20], &[4])
        .unwrap()
        .requires_grad();
    let mut opt = Adam::new(vec![("w".into(), w.clone())], AdamConfig::adam(1e-3)).unwrap();
    // g² · (1 − β₂) is subnormal for the first (flushed: v stays 0); the others are normal.
    let g = [1e-30f32, 1e-3, 0.5, 1e-3];
    let mut store = GradStore::new();
    store.insert(&w, Tensor::from_vec(g.to_vec(), &[4]).unwrap());
    opt.step(&store).unwrap();
    let state = opt.state();
    let buf = |name: &str| {
        let t = &state.buffers.iter().find(|(n, _)| n == name).unwrap().1;
        t.to_vec().unwrap()
    };
    let (m, v) = (buf("exp_avg.w"), buf("exp_avg_sq.w"));
    let (one_b1, one_b2) = ((1.0f64 - 0.9) as f32, (1.0f64 - 0.999) as f32);
    for i in 0..4 {
        assert_eq!(m[i], one_b1 * g[i], "m[{i}]: normal, exact");
    }
    assert_eq!(v[0], 0.0, "(1 − β₂)·g² = 1e-63 flushed, not a subnormal");
    for i in 1..4 {
        assert_eq!(v[i], one_b2 * g[i] * g[i], "v[{i}]: normal, exact");
    }
    assert!(v.iter().chain(&m).all(|x| *x == 0.0 || x.is_normal()));
    // The step is the published rule wherever nothing was flushed.
    let got = w.to_vec().unwrap();
    for i in 1..4 {
        let (mh, vh) = (m[i] / (1.0 - 0.9), v[i] / (1.0 - 0.999));
        let want = [1.0f32, 1.0, -2.0, 1e-20][i] - 1e-3 * mh / (vh.sqrt() + 1e-8);
        let tol = 2e-5 * want.abs().max(1e-3); // f32, bias corrections folded differently
        assert!((got[i] - want).abs() <= tol, "w[{i}] {} vs {want}", got[i]);
    }
}

#[test]
fn clipping_scales_in_place_only_gradients_nobody_else_holds() {
    let w = Tensor::<f32>::from_vec(vec![3.0, 4.0], &[2])
        .unwrap()
        .requires_grad();
    let grads = || w.square().unwrap().sum_all().unwrap().backward().unwrap(); // 2w
                                                                               // A gradient the caller also holds is replaced by a scaled copy, never written into.
    let mut shared = grads();
    let kept = shared.get(&w).unwrap().clone();
    let norm = clip_grad_norm(&mut shared, std::slice::from_ref(&w), 1.0).unwrap();
    assert_eq!(norm, 10.0);
    assert_eq!(kept.to_vec().unwrap(), [6.0, 8.0]);
    // One nobody else holds is scaled where it lies: the same values, bit for bit.
    let mut own = grads();
    clip_grad_norm(&mut own, std::slice::from_ref(&w), 1.0).unwrap();
    let (a, b) = (shared.get(&w).unwrap(), own.get(&w).unwrap());
    assert_eq!(a.to_vec().unwrap(), b.to_vec().unwrap());
    assert!((a.to_vec().unwrap()[0] - 0.6).abs() < 1e-6);
    let after = nabla::optim::grad_norm(&own, std::slice::from_ref(&w)).unwrap();
    assert!((after - 1.0).abs() < 1e-6, "{after}");
}

/// Parameters of a few shapes (some larger than an update's parallel split) with gradients of
/// a loss whose global norm is far above 1, and the gradients.
fn clipped_problem(seed: u64) -> (Vec<(String, Tensor<f32>)>, GradStore<f32>) {
    let shapes: [&[usize]; 3] = [&[300, 200], &[7], &[129, 3]];
    let params: Vec<(String, Tensor<f32>)> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let t = Tensor::<f32>::randn(s, 0.0, 1.0, seed + i as u64).unwrap();
            (format!("p{i}"), t.requires_grad())
        })
        .collect();
    let mut loss = Tensor::<f32>::zeros(&[]).unwrap();
    for (_, p) in &params {
        loss = loss.add(&p.square().unwrap().sum_all().unwrap()).unwrap();
    }
    let grads = loss.mul_scalar(3.0).unwrap().backward().unwrap();
    (params, grads)
}

#[test]
fn a_scaled_step_is_the_step_on_clipped_gradients_bit_for_bit() {
    // `step_scaled` (what the Trainer runs) against `clip_grad_norm` then `step`, for Adam,
    // AdamW and SGD with momentum, over three steps.
    type Make = fn(Vec<(String, Tensor<f32>)>) -> Box<dyn Optimizer<f32>>;
    let makers: [Make; 3] = [
        |p| Box::new(Adam::new(p, AdamConfig::adam(1e-2)).unwrap()),
        |p| Box::new(Adam::new(p, AdamConfig::adamw(1e-2)).unwrap()),
        |p| {
            let c = SgdConfig {
                momentum: 0.9,
                ..SgdConfig::new(1e-2)
            };
            Box::new(Sgd::new(p, c).unwrap())
        },
    ];
    for make in makers {
        let (pa, _) = clipped_problem(7);
        let (pb, _) = clipped_problem(7);
        let (mut a, mut b) = (make(pa.clone()), make(pb.clone()));
        for _ in 0..3 {
            let grads_of = |ps: &[(String, Tensor<f32>)]| {
                let mut loss = Tensor::<f32>::zeros(&[]).unwrap();
                for (_, p) in ps {
                    loss = loss.add(&p.square().unwrap().sum_all().unwrap()).unwrap();
                }
                loss.mul_scalar(3.0).unwrap().backward().unwrap()
            };
            let tensors = |ps: &[(String, Tensor<f32>)]| -> Vec<Tensor<f32>> {
                ps.iter().map(|(_, p)| p.clone()).collect()
            };
            let mut ga = grads_of(&pa);
            let norm = clip_grad_norm(&mut ga, &tensors(&pa), 1.0).unwrap();
            a.step(&ga).unwrap();
            let gb = grads_of(&pb);
            let norm_b = nabla::optim::grad_norm(&gb, &tensors(&pb)).unwrap();
            assert_eq!(norm, norm_b);
            assert!(norm > 1.0, "{norm}: the test must clip");
            b.step_scaled(&gb, 1.0 / (norm_b + 1e-6)).unwrap();
            for ((_, x), (_, y)) in pa.iter().zip(&pb) {
                assert_eq!(x.to_vec().unwrap(), y.to_vec().unwrap());
            }
        }
    }
}

/// An optimizer that only implements what the trait requires (its `step_scaled` is the
/// trait's default), delegating to SGD.
struct Plain(Sgd<f32>);

impl Optimizer<f32> for Plain {
    fn step(&mut self, grads: &GradStore<f32>) -> nabla::Result<()> {
        self.0.step(grads)
    }
    fn lr(&self) -> f64 {
        self.0.lr()
    }
    fn set_lr(&mut self, lr: f64) {
        self.0.set_lr(lr)
    }
    fn steps(&self) -> u64 {
        self.0.steps()
    }
    fn params(&self) -> &[(String, Tensor<f32>)] {
        self.0.params()
    }
    fn state(&self) -> nabla::optim::OptimizerState<f32> {
        self.0.state()
    }
    fn load_state(&mut self, state: &nabla::optim::OptimizerState<f32>) -> nabla::Result<()> {
        self.0.load_state(state)
    }
}

#[test]
fn the_default_scaled_step_scales_copies_as_the_fused_one_scales_values() {
    let config = SgdConfig {
        momentum: 0.9,
        ..SgdConfig::new(1e-2)
    };
    let (pa, ga) = clipped_problem(5);
    let (pb, gb) = clipped_problem(5);
    let mut fused = Sgd::new(pa.clone(), config.clone()).unwrap();
    let mut plain = Plain(Sgd::new(pb.clone(), config).unwrap());
    let kept = gb.get(&pb[0].1).unwrap().to_vec().unwrap();
    fused.step_scaled(&ga, 0.3).unwrap();
    plain.step_scaled(&gb, 0.3).unwrap();
    for ((_, x), (_, y)) in pa.iter().zip(&pb) {
        assert_eq!(x.to_vec().unwrap(), y.to_vec().unwrap());
    }
    // The caller's gradients are left as they were.
    assert_eq!(gb.get(&pb[0].1).unwrap().to_vec().unwrap(), kept);
}

#[test]
fn the_global_norm_is_the_same_bits_on_any_thread_count() {
    let (params, grads) = clipped_problem(11);
    let ps: Vec<Tensor<f32>> = params.iter().map(|(_, p)| p.clone()).collect();
    let norms: Vec<f64> = (1..=3)
        .map(|t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
                .install(|| nabla::optim::grad_norm(&grads, &ps).unwrap())
        })
        .collect();
    assert!(norms.iter().all(|&n| n == norms[0]), "{norms:?}");
    // Σ of each parameter's sum of squares, in parameter order.
    let want: f64 = ps
        .iter()
        .map(|p| {
            let g = grads.get(p).unwrap().to_vec().unwrap();
            g.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>()
        })
        .sum::<f64>()
        .sqrt();
    assert!(
        (norms[0] - want).abs() <= 1e-12 * want,
        "{} vs {want}",
        norms[0]
    );
}

/// Adam's update written plainly, one value at a time, in the order of operations `Adam`
/// documents (its constants rounded from f64 as it rounds them): three steps from `w`; the
/// weights, then both moments.
fn adam_reference(c: &AdamConfig, w: &[f32], g: &[f32], scale: f32) -> Vec<f32> {
    let n = w.len();
    let (mut w, mut m, mut v) = (w.to_vec(), vec![0f32; n], vec![0f32; n]);
    for t in 1..=3 {
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        let step_size = (c.lr / bc1) as f32;
        let (b1, b2) = (c.beta1 as f32, c.beta2 as f32);
        let (one_b1, one_b2) = ((1.0 - c.beta1) as f32, (1.0 - c.beta2) as f32);
        let (inv, eps) = ((1.0 / bc2_sqrt) as f32, c.eps as f32);
        let (wd, decay) = (c.weight_decay as f32, (1.0 - c.lr * c.weight_decay) as f32);
        let flush = |x: f32, below: f32| if x.abs() < below { 0.0 } else { x };
        let tiny = f32::MIN_POSITIVE;
        let (g_sq_min, g_m_min) = ((tiny / one_b2).sqrt(), tiny / one_b1);
        let (m_min, v_min, step_m_min) = (tiny / b1, tiny / b2, tiny / step_size);
        for i in 0..n {
            let gi = g[i] * scale;
            let gi = if c.decoupled {
                w[i] *= decay;
                gi
            } else {
                gi + wd * w[i]
            };
            let gv = flush(gi, g_sq_min);
            m[i] = b1 * flush(m[i], m_min) + one_b1 * flush(gi, g_m_min);
            v[i] = b2 * flush(v[i], v_min) + one_b2 * gv * gv;
            w[i] -= step_size * flush(m[i], step_m_min) / (v[i].sqrt() * inv + eps);
        }
    }
    [w, m, v].concat()
}

/// SGD's update written plainly, one value at a time, as `Sgd` documents it: three steps; the
/// weights, then the momentum (if any).
fn sgd_reference(c: &SgdConfig, w: &[f32], g: &[f32], scale: f32) -> Vec<f32> {
    let n = w.len();
    let (mut w, mut b) = (w.to_vec(), vec![0f32; n]);
    let (lr, mu, wd) = (c.lr as f32, c.momentum as f32, c.weight_decay as f32);
    for step in 0..3 {
        for i in 0..n {
            let mut d = g[i] * scale + wd * w[i];
            if c.momentum > 0.0 {
                b[i] = if step == 0 { d } else { mu * b[i] + d };
                d = if c.nesterov { d + mu * b[i] } else { b[i] };
            }
            w[i] -= lr * d;
        }
    }
    if c.momentum > 0.0 {
        w.extend(b);
    }
    w
}

/// Every update kind gives the bits of its plain reference loop (above) — weights and state
/// buffers — on a parameter below
/// and one above the size from which updates are split across threads, with gradients from
/// 1e4 down to below the flush thresholds and a clipping scale: the loops written for the
/// compiler to vectorise compute the same values.
#[test]
fn updates_give_the_bits_of_a_plain_reference_loop() {
    for n in [37usize, 70_001] {
        let g: Vec<f32> = (0..n)
            .map(|i| {
                let sign = if i % 2 == 0 { 1.0 } else { -1.0 };
                sign * (1.0 + (i % 7) as f32 * 0.1) * 10f32.powi((i % 50) as i32 - 45)
            })
            .collect();
        let w0: Vec<f32> = (0..n)
            .map(|i| (i * 7919 % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let scale = 0.75f32;
        // The weights after three steps, then the optimizer's buffers in their order.
        let run = |opt: &mut dyn Optimizer<f32>, w: &Tensor<f32>| -> Vec<u32> {
            let gt = Tensor::<f32>::from_vec(g.clone(), &[n]).unwrap();
            let mut grads = GradStore::new();
            grads.insert(w, gt);
            for _ in 0..3 {
                opt.step_scaled(&grads, f64::from(scale)).unwrap();
            }
            let buffers = opt.state().buffers.into_iter().map(|(_, t)| t);
            std::iter::once(w.clone())
                .chain(buffers)
                .flat_map(|t| t.to_vec().unwrap())
                .map(f32::to_bits)
                .collect()
        };
        let bits = |v: Vec<f32>| -> Vec<u32> { v.into_iter().map(f32::to_bits).collect() };
        let mut l2 = AdamConfig::adam(1e-2);
        l2.weight_decay = 1e-2;
        for c in [AdamConfig::adam(1e-2), l2, AdamConfig::adamw(1e-2)] {
            let w = Tensor::<f32>::from_vec(w0.clone(), &[n]).unwrap();
            let mut opt = Adam::new(vec![("w".into(), w.clone())], c.clone()).unwrap();
            let want = bits(adam_reference(&c, &w0, &g, scale));
            assert!(run(&mut opt, &w) == want, "{c:?}, {n} values");
        }
        for (momentum, nesterov) in [(0.0, false), (0.9, false), (0.9, true)] {
            let mut c = SgdConfig::new(0.1);
            (c.momentum, c.nesterov, c.weight_decay) = (momentum, nesterov, 1e-2);
            let w = Tensor::<f32>::from_vec(w0.clone(), &[n]).unwrap();
            let mut opt = Sgd::new(vec![("w".into(), w.clone())], c.clone()).unwrap();
            let want = bits(sgd_reference(&c, &w0, &g, scale));
            assert!(run(&mut opt, &w) == want, "{c:?}, {n} values");
        }
    }
}

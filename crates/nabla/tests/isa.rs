//! Every instruction-set tier this CPU runs (`nabla::isa`), held one after another in this
//! process: each tier's kernels agree with a plain f64 sum (products) or with the scalar tier
//! bit for bit (element-wise, reductions, softmax, optimizers), and training is bit-identical
//! across thread counts on each tier. One test function, so no other test in this binary sees
//! the tier change under it.

use nabla::data::synthetic::spiral;
use nabla::isa::{self, Isa};
use nabla::nn::loss::{self, Reduction, Target};
use nabla::nn::{Mlp, MlpConfig, Module};
use nabla::optim::{Adam, AdamConfig, Optimizer, Sgd, SgdConfig};
use nabla::GradStore;
use nabla::Tensor;

/// Runs `f` on a pool of `n` threads.
fn on<R: Send>(n: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap()
        .install(f)
}

/// The products of a small (our register-tile kernel), a thin, a transposed and a large
/// (`gemm`) case, in f32, against an f64 sum with each element's own tolerance.
fn check_products(tier: Isa) {
    let shapes = [
        (32, 64, 3, false, false),
        (13, 33, 31, false, true),
        (300, 200, 10, true, false),
        (128, 300, 257, false, false),
        (70, 520, 300, true, true),
    ];
    for (i, &(m, k, n, ta, tb)) in shapes.iter().enumerate() {
        let a_shape = if ta { [k, m] } else { [m, k] };
        let b_shape = if tb { [n, k] } else { [k, n] };
        let a = Tensor::<f32>::randn(&a_shape, 0.0, 1.0, 10 + i as u64).unwrap();
        let b = Tensor::<f32>::randn(&b_shape, 0.0, 1.0, 20 + i as u64).unwrap();
        let got = a.matmul_t(&b, ta, tb).unwrap().to_vec().unwrap();
        let (av, bv) = (a.to_vec().unwrap(), b.to_vec().unwrap());
        let at = |r: usize, c: usize| f64::from(if ta { av[c * m + r] } else { av[r * k + c] });
        let bt = |r: usize, c: usize| f64::from(if tb { bv[c * k + r] } else { bv[r * n + c] });
        for r in 0..m {
            for c in 0..n {
                let (mut want, mut size) = (0.0, 0.0);
                for p in 0..k {
                    want += at(r, p) * bt(p, c);
                    size += (at(r, p) * bt(p, c)).abs();
                }
                let g = f64::from(got[r * n + c]);
                assert!(
                    (g - want).abs() <= 2.0 * k as f64 * f64::from(f32::EPSILON) * size + 1e-6,
                    "{tier}: ({m},{k},{n}) ta {ta} tb {tb} at ({r},{c}): {g} vs {want}"
                );
            }
        }
        // f64 on the same tier.
        let wide = |t: &Tensor<f32>, shape: &[usize]| {
            let v = t.to_vec().unwrap().into_iter().map(f64::from).collect();
            Tensor::<f64>::from_vec(v, shape).unwrap()
        };
        let (a64, b64) = (wide(&a, &a_shape), wide(&b, &b_shape));
        let g64 = a64.matmul_t(&b64, ta, tb).unwrap().to_vec().unwrap();
        for (x, y) in g64.iter().zip(&got) {
            assert!(
                (x - f64::from(*y)).abs() <= 1e-3 * (1.0 + x.abs()),
                "{tier} f64: {x} vs {y}"
            );
        }
    }
}

/// Element-wise maps, broadcasting, reductions and softmax: the bits they give.
fn elementwise_bits() -> Vec<u32> {
    let x = Tensor::<f32>::randn(&[64, 300], 0.0, 2.0, 5).unwrap();
    let b = Tensor::<f32>::randn(&[300], 0.0, 1.0, 6).unwrap();
    let y = x.add(&b).unwrap().mul(&x).unwrap().relu().unwrap();
    let z = x.tanh().unwrap().sub(&x.sigmoid().unwrap()).unwrap();
    let s = x.softmax(1).unwrap();
    let r = y.sum(&[0], false).unwrap();
    [y, z, s, r]
        .iter()
        .flat_map(|t| t.to_vec().unwrap())
        .map(f32::to_bits)
        .collect()
}

/// Three steps of each optimizer update (Adam with L2 decay, AdamW, SGD plain, with momentum
/// and Nesterov's) on a parameter large enough to be split across threads, of an odd length
/// (a tail after the vector blocks), with a clipping scale: the final weights' bits.
fn optimizer_bits() -> Vec<u32> {
    let n = 70_001;
    let g = Tensor::<f32>::randn(&[n], 0.0, 1.0, 8).unwrap();
    let mut bits = Vec::new();
    for kind in 0..5 {
        let w = Tensor::<f32>::randn(&[n], 0.0, 1.0, 9).unwrap();
        let mut grads = GradStore::new();
        grads.insert(&w, g.clone());
        let params = vec![("w".to_string(), w.clone())];
        let sgd = |momentum: f64, nesterov: bool| {
            let mut c = SgdConfig::new(0.1);
            (c.momentum, c.nesterov, c.weight_decay) = (momentum, nesterov, 1e-2);
            Box::new(Sgd::new(params.clone(), c).unwrap()) as Box<dyn Optimizer<f32>>
        };
        let mut opt: Box<dyn Optimizer<f32>> = match kind {
            0 => {
                let mut c = AdamConfig::adam(1e-2);
                c.weight_decay = 1e-2;
                Box::new(Adam::new(params.clone(), c).unwrap())
            }
            1 => Box::new(Adam::new(params.clone(), AdamConfig::adamw(1e-2)).unwrap()),
            2 => sgd(0.0, false),
            3 => sgd(0.9, false),
            _ => sgd(0.9, true),
        };
        for _ in 0..3 {
            opt.step_scaled(&grads, 0.75).unwrap();
        }
        bits.extend(w.to_vec().unwrap().into_iter().map(f32::to_bits));
    }
    bits
}

/// Twenty Adam steps of a 2-64-64-3 MLP on spiral batches of 32 (the `tiny` benchmark's
/// model): the losses' and the final weights' bits.
fn train_bits() -> Vec<u32> {
    let data = spiral(200, 3, 0.2, 0).unwrap();
    let m = Mlp::<f32>::new(&MlpConfig::new(&[2, 64, 64, 3])).unwrap();
    let mut opt = Adam::new(m.named_parameters(), AdamConfig::adam(1e-2)).unwrap();
    let mut bits = Vec::new();
    for s in 0..20 {
        let idx: Vec<usize> = (0..32).map(|i| (s * 37 + i * 11) % data.len()).collect();
        let x = data.x.index_select(0, &idx).unwrap();
        let y: Vec<usize> = idx.iter().map(|&i| data.labels[i]).collect();
        let l = loss::cross_entropy(
            &m.forward(&x).unwrap(),
            Target::Classes(&y),
            0.0,
            Reduction::Mean,
        )
        .unwrap();
        bits.push(l.item().unwrap().to_bits());
        opt.step(&l.backward().unwrap()).unwrap();
    }
    for (_, p) in m.named_parameters() {
        bits.extend(p.to_vec().unwrap().into_iter().map(f32::to_bits));
    }
    bits
}

#[test]
fn every_tier_runs_agrees_and_is_bit_identical_across_threads() {
    let widest = isa::detected();
    let tiers: Vec<Isa> = Isa::ALL.into_iter().filter(|&t| t <= widest).collect();
    if tiers.len() < Isa::ALL.len() {
        let missing: Vec<&str> = Isa::ALL[tiers.len()..].iter().map(|t| t.name()).collect();
        eprintln!("skipped tiers this CPU lacks: {}", missing.join(", "));
    }
    let mut scalar_bits = None;
    let mut scalar_updates = None;
    for &tier in &tiers {
        assert_eq!(isa::set_max(Some(tier)), tier);
        check_products(tier);
        let e = on(2, elementwise_bits);
        assert_eq!(
            e,
            on(1, elementwise_bits),
            "{tier}: element-wise bits on 1 vs 2 threads"
        );
        match &scalar_bits {
            None => scalar_bits = Some(e),
            Some(s) => assert!(
                *s == e,
                "{tier}: element-wise bits differ from the scalar tier"
            ),
        }
        let o = on(2, optimizer_bits);
        assert!(
            o == on(1, optimizer_bits),
            "{tier}: optimizer bits on 1 vs 2 threads"
        );
        match &scalar_updates {
            None => scalar_updates = Some(o),
            Some(s) => assert!(
                *s == o,
                "{tier}: optimizer bits differ from the scalar tier"
            ),
        }
        let one = on(1, train_bits);
        for n in [2, 3] {
            assert!(
                one == on(n, train_bits),
                "{tier}: training on {n} threads vs 1"
            );
        }
    }
    assert_eq!(isa::set_max(None), widest);
}

#[test]
fn the_names_of_the_tiers_are_checked() {
    // Reading a tier never changes the one in force (this binary's other test sets it).
    assert!("avx2".parse::<Isa>().is_ok());
    let e = "sse9".parse::<Isa>().unwrap_err().to_string();
    assert!(
        e.contains("sse9") && e.contains("scalar, avx2 or avx512"),
        "{e}"
    );
}

//! The image layers as modules: PyTorch's names, buffers (saved, loaded, resumed bit-exactly,
//! switched by train/eval mode, never touched by an optimizer), every parameter learning from
//! the first step, and gradient checkpointing that moves the running statistics once.

use std::collections::BTreeMap;

use nabla::io::{
    load_training_state, load_weights, save_training_state, save_weights, TrainingState,
};
use nabla::nn::loss::{self, Reduction, Target};
use nabla::nn::{
    Activation, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Flatten, Init, Linear, MaxPool2d,
    Module, Sequential,
};
use nabla::ops::Conv2dOptions;
use nabla::optim::{Adam, AdamConfig, Optimizer};
use nabla::{Rng, Tensor};

mod scratch;
use scratch::Scratch;

/// conv–BN2d–relu–maxpool–conv–relu–avgpool–flatten–linear–BN1d–relu–linear, 8×8 inputs.
fn model(seed: u64) -> Sequential<f32> {
    let mut rng = Rng::new(seed);
    let pad1 = Conv2dOptions {
        padding: (1, 1),
        ..Default::default()
    };
    let init = Init::KaimingUniform;
    Sequential::new()
        .with(Conv2d::new(1, 4, (3, 3), pad1, true, init, &mut rng).unwrap())
        .with(BatchNorm2d::new(4).unwrap())
        .with(Activation::Relu)
        .with(MaxPool2d::new((2, 2)))
        .with(Conv2d::new(4, 6, (3, 3), pad1, true, init, &mut rng).unwrap())
        .with(Activation::Relu)
        .with(AvgPool2d::new((2, 2)))
        .with(Flatten::new())
        .with(Linear::new(24, 8, true, init, &mut rng).unwrap())
        .with(BatchNorm1d::new(8).unwrap())
        .with(Activation::Relu)
        .with(Linear::new(8, 3, true, init, &mut rng).unwrap())
}

fn batch(seed: u64) -> (Tensor<f32>, Vec<usize>) {
    let x = Tensor::rand_uniform(&[6, 1, 8, 8], -1.0, 1.0, seed).unwrap();
    let labels = (0..6).map(|i| (i + seed as usize) % 3).collect();
    (x, labels)
}

fn step(m: &Sequential<f32>, opt: &mut Adam<f32>, seed: u64) -> f32 {
    let (x, y) = batch(seed);
    let l = loss::cross_entropy(
        &m.forward(&x).unwrap(),
        Target::Classes(&y),
        0.0,
        Reduction::Mean,
    )
    .unwrap();
    opt.step(&l.backward().unwrap()).unwrap();
    l.item().unwrap()
}

fn values(named: Vec<(String, Tensor<f32>)>) -> BTreeMap<String, Vec<f32>> {
    named
        .into_iter()
        .map(|(n, t)| (n, t.to_vec().unwrap()))
        .collect()
}

#[test]
fn names_follow_pytorch_and_buffers_are_separate_from_parameters() {
    let m = model(0);
    let params: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(&params[..4], ["0.weight", "0.bias", "1.weight", "1.bias"]);
    let buffers: Vec<String> = m.named_buffers().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        buffers,
        [
            "1.running_mean",
            "1.running_var",
            "1.num_batches_tracked",
            "9.running_mean",
            "9.running_var",
            "9.num_batches_tracked"
        ]
    );
    assert!(m
        .named_buffers()
        .iter()
        .all(|(_, b)| !b.requires_grad_flag()));
    assert_eq!(m.output_shape(&[6, 1, 8, 8]).unwrap(), [6, 3]);
    assert!(
        m.describe().contains("Conv2d(1 → 4, 3×3, padding (1, 1))"),
        "{}",
        m.describe()
    );
}

#[test]
fn after_one_step_every_parameter_has_a_nonzero_gradient_and_moved() {
    let m = model(1);
    let before = values(m.named_parameters());
    let (x, y) = batch(7);
    let l = loss::cross_entropy(
        &m.forward(&x).unwrap(),
        Target::Classes(&y),
        0.0,
        Reduction::Mean,
    )
    .unwrap();
    let grads = l.backward().unwrap();
    for (name, p) in m.named_parameters() {
        let g = grads
            .get(&p)
            .unwrap_or_else(|| panic!("{name} has no gradient"));
        assert!(
            g.to_vec().unwrap().iter().any(|v| *v != 0.0),
            "{name}: gradient all zero"
        );
    }
    let mut opt = Adam::new(m.named_parameters(), AdamConfig::adam(1e-2)).unwrap();
    opt.step(&grads).unwrap();
    let after = values(m.named_parameters());
    for (name, v) in &before {
        assert!(
            v.iter().zip(&after[name]).any(|(a, b)| a != b),
            "{name} did not move"
        );
    }
}

#[test]
fn buffers_track_in_training_stay_in_evaluation_and_no_optimizer_touches_them() {
    let mut m = model(2);
    let mut opt = Adam::new(m.named_parameters(), AdamConfig::adam(1e-2)).unwrap();
    assert!(opt
        .state()
        .buffers
        .iter()
        .all(|(n, _)| !n.contains("running") && !n.contains("tracked")));
    let fresh = values(m.named_buffers());
    step(&m, &mut opt, 3);
    let trained = values(m.named_buffers());
    assert_ne!(fresh["1.running_mean"], trained["1.running_mean"]);
    assert_eq!(trained["1.num_batches_tracked"], [1.0]);
    m.set_training(false);
    let (x, _) = batch(4);
    let a = m.forward(&x).unwrap().to_vec().unwrap();
    assert_eq!(
        values(m.named_buffers()),
        trained,
        "evaluation does not update buffers"
    );
    // evaluation uses the running statistics: one sample alone gives its row of the batch
    let one = m
        .forward(&x.narrow(0, 2, 1).unwrap())
        .unwrap()
        .to_vec()
        .unwrap();
    assert_eq!(&a[6..9], &one[..]);
}

#[test]
fn weights_files_carry_buffers_and_training_state_resumes_bit_exactly() {
    let dir = Scratch::new("image-layers");
    let m = model(3);
    let mut opt = Adam::new(m.named_parameters(), AdamConfig::adam(1e-2)).unwrap();
    for s in 0..3 {
        step(&m, &mut opt, s);
    }
    let path = dir.join("w.safetensors");
    save_weights(&path, &m, &BTreeMap::new()).unwrap();
    let other = model(99);
    load_weights(&path, &other).unwrap();
    assert_eq!(values(other.named_buffers()), values(m.named_buffers()));
    assert_eq!(
        values(other.named_parameters()),
        values(m.named_parameters())
    );

    let state = dir.join("state.safetensors");
    save_training_state(&state, &m, &opt, &TrainingState::default()).unwrap();
    let losses: Vec<u32> = (3..6).map(|s| step(&m, &mut opt, s).to_bits()).collect();
    let mut resumed = model(42);
    let mut opt2 = Adam::new(resumed.named_parameters(), AdamConfig::adam(1e-2)).unwrap();
    load_training_state(&state, &mut resumed, &mut opt2).unwrap();
    let again: Vec<u32> = (3..6)
        .map(|s| step(&resumed, &mut opt2, s).to_bits())
        .collect();
    assert_eq!(losses, again);
    assert_eq!(values(resumed.named_buffers()), values(m.named_buffers()));
    assert_eq!(
        values(resumed.named_parameters()),
        values(m.named_parameters())
    );
}

#[test]
fn a_checkpointed_model_moves_running_statistics_once_per_step() {
    let plain = model(5);
    let mut ckpt = model(5);
    ckpt.set_checkpoint_every(Some(3)).unwrap();
    let (mut o1, mut o2) = (
        Adam::new(plain.named_parameters(), AdamConfig::adam(1e-2)).unwrap(),
        Adam::new(ckpt.named_parameters(), AdamConfig::adam(1e-2)).unwrap(),
    );
    for s in 0..2 {
        assert_eq!(
            step(&plain, &mut o1, s).to_bits(),
            step(&ckpt, &mut o2, s).to_bits()
        );
    }
    assert_eq!(values(plain.named_buffers()), values(ckpt.named_buffers()));
    assert_eq!(values(ckpt.named_buffers())["1.num_batches_tracked"], [2.0]);
}

/// `Sequential` runs ReLU followed by max pooling as max pooling followed by ReLU (on the
/// smaller pooled output): the values must equal those of the two ops in the written order
/// (a zero may change sign: −0 and +0 are equal), NaN where they have NaN, and the gradient
/// must be the same bits — on windows that are all negative, that tie at zero or at a positive
/// value, that hold a NaN, and with overlapping padded windows; with and without a graph.
#[test]
fn relu_then_max_pool_in_a_sequential_equals_the_two_ops_in_order() {
    fn check<T: nabla::Float>(kernel: (usize, usize), stride: (usize, usize), pad: (usize, usize)) {
        // 2 samples × 2 channels of 6×6, small integers (ties are common), zeros of both
        // signs, a NaN.
        let mut v: Vec<f64> = (0..144)
            .map(|i| ((i * 7919 + 13) % 9) as f64 - 5.0)
            .collect();
        v[3] = -0.0;
        v[40] = f64::NAN;
        v[77] = 0.0;
        let x = Tensor::<T>::from_vec(v.iter().map(|&a| T::from_f64(a)).collect(), &[2, 2, 6, 6])
            .unwrap()
            .requires_grad();
        let net = Sequential::<T>::new()
            .with(Activation::Relu)
            .with(MaxPool2d::with(kernel, stride, pad));
        let direct = x.relu().unwrap().max_pool2d(kernel, stride, pad).unwrap();
        let fused = net.forward(&x).unwrap();
        assert_eq!(fused.shape(), direct.shape());
        let same = |a: &[T], b: &[T]| {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|(p, q)| p == q || (p.is_nan() && q.is_nan()))
        };
        let (f, d) = (fused.to_vec().unwrap(), direct.to_vec().unwrap());
        assert!(
            same(&f, &d),
            "{kernel:?}/{stride:?}/{pad:?}: {f:?} vs {d:?}"
        );
        let no_graph = nabla::no_grad(|| net.forward(&x))
            .unwrap()
            .to_vec()
            .unwrap();
        assert!(same(&no_graph, &d));
        // A weighted sum, so that every output's gradient differs (dL/dy = w even where y is NaN).
        let wv: Vec<T> = d
            .iter()
            .enumerate()
            .map(|(i, _)| T::from_f64(1.0 + i as f64 / 8.0))
            .collect();
        let w = Tensor::from_vec(wv, direct.shape()).unwrap();
        let grad = |y: &Tensor<T>| {
            let g = y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
            let bits: Vec<f64> = g
                .get(&x)
                .unwrap()
                .to_vec()
                .unwrap()
                .iter()
                .map(|v| v.to_f64())
                .collect();
            bits.iter().map(|v| v.to_bits()).collect::<Vec<u64>>()
        };
        assert_eq!(grad(&fused), grad(&direct), "{kernel:?}/{stride:?}/{pad:?}");
    }
    for (k, s, p) in [
        ((2, 2), (2, 2), (0, 0)),
        ((3, 3), (2, 2), (1, 1)),
        ((3, 2), (1, 2), (0, 1)),
    ] {
        check::<f32>(k, s, p);
        check::<f64>(k, s, p);
    }
}

/// A `Sequential` runs a convolution followed by max pooling (directly, or with a ReLU
/// between them) in one pass, each sample pooled right after its convolution: the output must
/// be the bits of the ops in the written order (a zero's sign aside where ReLU runs after the
/// pooling), NaN where they have NaN, and the gradients of the input, weight and bias the same
/// bits — on odd sizes, ties, a NaN input, overlapping padded windows, groups, and a strided
/// convolution (which the one-pass kernels leave to the two ops); f32 (the one-pass kernels)
/// and f64 (the two ops); with and without a graph.
#[test]
fn conv_then_max_pool_in_a_sequential_equals_the_ops_in_order() {
    fn check<T: nabla::Float>(relu: bool, opts: Conv2dOptions, pool: [(usize, usize); 3]) {
        let (n, c, o, h, w) = (3, 4, 6, 9, 10);
        // Small integers, so that ties are common; one NaN.
        let ints = |len: usize, m: usize, k: usize| -> Vec<T> {
            (0..len)
                .map(|i| T::from_f64(((i * m + 7) % k) as f64 - (k / 2) as f64))
                .collect()
        };
        let mut xv = ints(n * c * h * w, 7919, 7);
        xv[100] = T::from_f64(f64::NAN);
        let x = Tensor::<T>::from_vec(xv, &[n, c, h, w])
            .unwrap()
            .requires_grad();
        let wt = Tensor::<T>::from_vec(
            ints(o * (c / opts.groups) * 9, 31, 5),
            &[o, c / opts.groups, 3, 3],
        )
        .unwrap()
        .requires_grad();
        let b = Tensor::<T>::from_vec(ints(o, 3, 3), &[o])
            .unwrap()
            .requires_grad();
        let conv = Conv2d::from_tensors(wt.clone(), Some(b.clone()), opts).unwrap();
        let [k, s, p] = pool;
        let mut net = Sequential::<T>::new().with(conv);
        if relu {
            net = net.with(Activation::Relu);
        }
        let net = net.with(MaxPool2d::with(k, s, p));
        let mut direct = x.conv2d(&wt, Some(&b), opts).unwrap();
        if relu {
            direct = direct.relu().unwrap();
        }
        let direct = direct.max_pool2d(k, s, p).unwrap();
        let fused = net.forward(&x).unwrap();
        let what = format!("{} relu {relu} {opts:?} {pool:?}", T::DTYPE);
        assert_eq!(fused.shape(), direct.shape(), "{what}");
        let same = |a: &[T], b: &[T]| {
            a.len() == b.len()
                && a.iter().zip(b).all(|(p, q)| {
                    p.to_f64().to_bits() == q.to_f64().to_bits()
                        || (relu && p == q)
                        || (p.is_nan() && q.is_nan())
                })
        };
        let d = direct.to_vec().unwrap();
        assert!(same(&fused.to_vec().unwrap(), &d), "{what}");
        let no_graph = nabla::no_grad(|| net.forward(&x)).unwrap();
        assert!(
            same(&no_graph.to_vec().unwrap(), &d),
            "{what}: without a graph"
        );
        // A weighted sum, so that every output's gradient differs.
        let wv: Vec<T> = (0..d.len())
            .map(|i| T::from_f64(1.0 + i as f64 / 8.0))
            .collect();
        let weights = Tensor::from_vec(wv, direct.shape()).unwrap();
        let grads = |y: &Tensor<T>| {
            let g = y
                .mul(&weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            [&x, &wt, &b].map(|t| {
                g.get(t)
                    .unwrap()
                    .to_vec()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_f64().to_bits())
                    .collect::<Vec<u64>>()
            })
        };
        assert_eq!(grads(&fused), grads(&direct), "{what}: gradients");
    }
    let conv = |padding: (usize, usize), stride: (usize, usize), groups: usize| Conv2dOptions {
        padding,
        stride,
        groups,
        ..Default::default()
    };
    let plain = [(2, 2), (2, 2), (0, 0)];
    let overlapping = [(3, 3), (2, 2), (1, 1)];
    for relu in [false, true] {
        for (opts, pool) in [
            (conv((1, 1), (1, 1), 1), plain),
            (conv((1, 1), (1, 1), 1), overlapping),
            (conv((0, 1), (1, 1), 2), plain),
            (conv((1, 1), (2, 2), 1), plain),
        ] {
            check::<f32>(relu, opts, pool);
            check::<f64>(relu, opts, pool);
        }
    }
}

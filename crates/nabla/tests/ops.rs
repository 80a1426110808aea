//! Forward values derived by hand, numerical stability, and error messages.

use nabla::{Error, Tensor};

fn t(data: &[f64], shape: &[usize]) -> Tensor<f64> {
    Tensor::from_vec(data.to_vec(), shape).unwrap()
}

#[test]
fn creation_and_readback() {
    let a = Tensor::<f32>::arange(0.0, 6.0, 1.0).unwrap();
    assert_eq!(a.to_vec().unwrap(), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    assert_eq!(Tensor::<f32>::arange(1.0, 0.0, -0.25).unwrap().numel(), 4);
    assert_eq!(
        Tensor::<f32>::full(&[2, 2], 7.0).unwrap().to_vec().unwrap(),
        vec![7.0; 4]
    );
    assert_eq!(Tensor::<f64>::scalar(3.5).item().unwrap(), 3.5);
    assert!(Tensor::<f64>::zeros(&[2]).unwrap().item().is_err());
    let r1 = Tensor::<f32>::rand_uniform(&[100], -2.0, 3.0, 42).unwrap();
    let r2 = Tensor::<f32>::rand_uniform(&[100], -2.0, 3.0, 42).unwrap();
    assert_eq!(r1.to_vec(), r2.to_vec(), "same seed, same values");
    assert!(r1
        .to_vec()
        .unwrap()
        .iter()
        .all(|&v| (-2.0..3.0).contains(&v)));
    let n = Tensor::<f64>::randn(&[20_000], 1.0, 2.0, 1).unwrap();
    let mean = n.mean_all().unwrap().item().unwrap();
    assert!((mean - 1.0).abs() < 0.05, "{mean}");
    assert_eq!(
        Tensor::<f32>::ones(&[2, 3])
            .unwrap()
            .cast::<f64>()
            .unwrap()
            .to_vec()
            .unwrap(),
        vec![1.0; 6]
    );
    assert!(Tensor::<f32>::arange(0.0, 1.0, 0.0).is_err());
}

#[test]
fn broadcasting_arithmetic_by_hand() {
    let a = t(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let col = t(&[10.0, 20.0], &[2, 1]);
    let row = t(&[1.0, 0.0, -1.0], &[3]);
    assert_eq!(
        a.add(&col).unwrap().to_vec().unwrap(),
        vec![11.0, 12.0, 13.0, 24.0, 25.0, 26.0]
    );
    assert_eq!(
        a.mul(&row).unwrap().to_vec().unwrap(),
        vec![1.0, 0.0, -3.0, 4.0, 0.0, -6.0]
    );
    assert_eq!(col.sub(&row).unwrap().shape(), &[2, 3]);
    assert_eq!(
        col.sub(&row).unwrap().to_vec().unwrap(),
        vec![9.0, 10.0, 11.0, 19.0, 20.0, 21.0]
    );
    assert_eq!(
        a.div(&t(&[2.0], &[])).unwrap().to_vec().unwrap(),
        vec![0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    );
    assert_eq!(a.pow_scalar(2.0).unwrap().to_vec().unwrap()[5], 36.0);
}

#[test]
fn matmul_by_hand_and_through_strides() {
    let a = t(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let b = t(&[7.0, 8.0, 9.0, 10.0, 11.0, 12.0], &[3, 2]);
    let c = a.matmul(&b).unwrap();
    assert_eq!(c.to_vec().unwrap(), vec![58.0, 64.0, 139.0, 154.0]);
    let at = a.t().unwrap();
    assert_eq!(at.matmul_t(&b, true, false).unwrap().to_vec(), c.to_vec());
    let bt = b.t().unwrap();
    assert_eq!(a.matmul_t(&bt, false, true).unwrap().to_vec(), c.to_vec());
    assert_eq!(at.matmul_t(&bt, true, true).unwrap().to_vec(), c.to_vec());
    // batched equals per-batch products; 3-D x 2-D shares the right matrix
    let x = Tensor::<f64>::randn(&[3, 2, 3], 0.0, 1.0, 1).unwrap();
    let y = x.matmul(&b).unwrap();
    for i in 0..3 {
        let xi = x.narrow(0, i, 1).unwrap().reshape(&[2, 3]).unwrap();
        let yi = y.narrow(0, i, 1).unwrap().reshape(&[2, 2]).unwrap();
        nabla::testing::assert_close(&yi, &xi.matmul(&b).unwrap(), 1e-12, 0.0).unwrap();
    }
}

#[test]
fn shape_errors_name_the_op_and_shapes() {
    let a = Tensor::<f32>::zeros(&[128, 784]).unwrap();
    let b = Tensor::<f32>::zeros(&[512, 256]).unwrap();
    let err = a.matmul(&b).unwrap_err();
    assert_eq!(
        err.to_string(),
        "matmul: [128, 784] x [512, 256]: inner dimensions 784 and 512 differ"
    );
    assert!(matches!(err, Error::Shape { op: "matmul", .. }));
    let e = Tensor::<f32>::zeros(&[2, 3])
        .unwrap()
        .add(&Tensor::zeros(&[4]).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("add: [2, 3] and [4]"), "{e}");
    let z = Tensor::<f32>::zeros(&[2, 3]).unwrap();
    for e in [
        z.reshape(&[4]).unwrap_err(),
        z.narrow(1, 2, 2).unwrap_err(),
        z.narrow(5, 0, 1).unwrap_err(),
        z.permute(&[0, 0]).unwrap_err(),
        z.index_select(0, &[2]).unwrap_err(),
        z.gather(1, &[0, 1, 2]).unwrap_err(),
        z.gather(1, &[3, 0]).unwrap_err(),
        z.sum(&[0, 0], false).unwrap_err(),
        z.sum(&[], false).unwrap_err(),
        z.softmax(2).unwrap_err(),
        z.broadcast_to(&[3, 3]).unwrap_err(),
        z.clamp(1.0, 0.0).unwrap_err(),
        z.pow_scalar(f64::NAN).unwrap_err(),
        z.matmul(&Tensor::zeros(&[3]).unwrap()).unwrap_err(),
        Tensor::<f32>::zeros(&[2, 3, 4])
            .unwrap()
            .matmul(&Tensor::zeros(&[3, 4, 5]).unwrap())
            .unwrap_err(),
        Tensor::<f32>::concat(&[&z, &Tensor::zeros(&[3, 3]).unwrap()], 1).unwrap_err(),
        Tensor::<f32>::concat(&[], 0).unwrap_err(),
        Tensor::<f32>::from_vec(vec![1.0], &[2]).unwrap_err(),
        Tensor::<f32>::one_hot(&[3], 3).unwrap_err(),
        z.argmax(2).unwrap_err(),
        Tensor::<f32>::zeros(&[2, 0])
            .unwrap()
            .max(&[1], false)
            .unwrap_err(),
    ] {
        let msg = e.to_string();
        assert!(msg.contains(": "), "message without op name: {msg}");
        assert!(!msg.contains("panicked"));
    }
}

#[test]
fn layout_ops_by_hand() {
    let a = t(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], &[2, 3]);
    assert_eq!(
        a.t().unwrap().to_vec().unwrap(),
        vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
    );
    assert_eq!(
        a.narrow(1, 1, 2).unwrap().to_vec().unwrap(),
        vec![1.0, 2.0, 4.0, 5.0]
    );
    assert_eq!(
        a.index_select(1, &[2, 0]).unwrap().to_vec().unwrap(),
        vec![2.0, 0.0, 5.0, 3.0]
    );
    assert_eq!(
        a.gather(1, &[2, 0]).unwrap().to_vec().unwrap(),
        vec![2.0, 3.0]
    );
    let c = Tensor::concat(&[&a, &a.narrow(1, 0, 1).unwrap()], 1).unwrap();
    assert_eq!(
        c.to_vec().unwrap(),
        vec![0.0, 1.0, 2.0, 0.0, 3.0, 4.0, 5.0, 3.0]
    );
    let b = t(&[1.0, 2.0], &[2, 1]).broadcast_to(&[2, 2, 3]).unwrap();
    assert_eq!(
        b.to_vec().unwrap(),
        vec![1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
    );
    let p = Tensor::<f64>::arange(0.0, 24.0, 1.0)
        .unwrap()
        .reshape(&[2, 3, 4])
        .unwrap()
        .permute(&[2, 0, 1])
        .unwrap();
    assert_eq!(p.shape(), &[4, 2, 3]);
    assert_eq!(p.to_vec().unwrap()[..6], [0.0, 4.0, 8.0, 12.0, 16.0, 20.0]);
    assert_eq!(a.unsqueeze(0).unwrap().shape(), &[1, 2, 3]);
}

#[test]
fn reductions_by_hand() {
    let a = t(&[1.0, 5.0, 3.0, 4.0, 2.0, 6.0], &[2, 3]);
    assert_eq!(
        a.sum(&[0], false).unwrap().to_vec().unwrap(),
        vec![5.0, 7.0, 9.0]
    );
    assert_eq!(a.sum(&[1], true).unwrap().shape(), &[2, 1]);
    assert_eq!(
        a.sum(&[1], true).unwrap().to_vec().unwrap(),
        vec![9.0, 12.0]
    );
    assert_eq!(a.sum_all().unwrap().item().unwrap(), 21.0);
    assert_eq!(a.mean(&[0, 1], false).unwrap().item().unwrap(), 3.5);
    assert_eq!(
        a.max(&[1], false).unwrap().to_vec().unwrap(),
        vec![5.0, 6.0]
    );
    assert_eq!(a.max(&[0, 1], false).unwrap().item().unwrap(), 6.0);
    assert_eq!(a.argmax(1).unwrap(), vec![1, 2]);
    assert_eq!(a.argmax(0).unwrap(), vec![1, 0, 1]);
}

#[test]
fn max_gradient_goes_to_the_first_maximum() {
    let x = t(&[3.0, 1.0, 3.0, 2.0], &[4]).requires_grad();
    let g = x.max(&[0], false).unwrap().backward().unwrap();
    assert_eq!(
        g.get(&x).unwrap().to_vec().unwrap(),
        vec![1.0, 0.0, 0.0, 0.0]
    );
}

#[test]
fn softmax_is_stable_for_huge_and_infinite_logits() {
    for scale in [1e4, 1e8] {
        for_both_dtypes(scale);
    }
    let x = t(&[f64::NEG_INFINITY, 0.0, 1.0, f64::NEG_INFINITY], &[1, 4]);
    let p = x.softmax(1).unwrap().to_vec().unwrap();
    assert_eq!(p[0], 0.0);
    assert_eq!(p[3], 0.0);
    assert!((p[1] + p[2] - 1.0).abs() < 1e-15);
    let lp = x.log_softmax(1).unwrap().to_vec().unwrap();
    assert_eq!(lp[0], f64::NEG_INFINITY);
    assert!(lp[1].is_finite() && lp[2].is_finite());
    // gradients through -inf entries stay finite
    let xr = x.requires_grad();
    let g = xr
        .log_softmax(1)
        .unwrap()
        .narrow(1, 1, 2)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(g.get(&xr).unwrap().all_finite());
}

fn for_both_dtypes(scale: f64) {
    let logits = [1.0, -1.0, 0.5, 2.0, -3.0, 0.0];
    let x32 = Tensor::<f32>::from_vec(logits.iter().map(|v| (v * scale) as f32).collect(), &[2, 3])
        .unwrap()
        .requires_grad();
    let x64 = t(&logits.map(|v| v * scale), &[2, 3]).requires_grad();
    let p32 = x32.softmax(1).unwrap();
    let lp32 = x32.log_softmax(1).unwrap();
    assert!(p32.all_finite() && lp32.all_finite(), "scale {scale}");
    let p64 = x64.softmax(1).unwrap();
    assert!(p64.all_finite() && x64.log_softmax(1).unwrap().all_finite());
    // rows sum to 1 and the largest logit takes (nearly) all the mass
    let rows = p64.sum(&[1], false).unwrap().to_vec().unwrap();
    assert!(rows.iter().all(|r| (r - 1.0).abs() < 1e-12));
    assert!(p64.to_vec().unwrap()[0] > 0.999 && p32.to_vec().unwrap()[3] > 0.999);
    let g = lp32.mean_all().unwrap().backward().unwrap();
    assert!(g.get(&x32).unwrap().all_finite());
    let g = p64
        .sum(&[0], false)
        .unwrap()
        .narrow(0, 0, 1)
        .unwrap()
        .sum_all()
        .unwrap();
    assert!(g.backward().unwrap().get(&x64).unwrap().all_finite());
}

#[test]
fn activations_by_hand_and_without_overflow() {
    let x = t(&[-1000.0, -1.0, 0.0, 1.0, 1000.0], &[5]);
    assert_eq!(
        x.relu().unwrap().to_vec().unwrap(),
        vec![0.0, 0.0, 0.0, 1.0, 1000.0]
    );
    assert_eq!(x.leaky_relu(0.1).unwrap().to_vec().unwrap()[1], -0.1);
    let s = x.sigmoid().unwrap().to_vec().unwrap();
    assert_eq!((s[0], s[2], s[4]), (0.0, 0.5, 1.0));
    assert!((s[3] - 1.0 / (1.0 + (-1.0f64).exp())).abs() < 1e-15);
    let sp = x.softplus().unwrap().to_vec().unwrap();
    assert_eq!((sp[0], sp[4]), (0.0, 1000.0));
    assert!((sp[2] - 2f64.ln()).abs() < 1e-15);
    let g = x.gelu().unwrap().to_vec().unwrap();
    assert_eq!((g[0], g[2], g[4]), (-0.0, 0.0, 1000.0));
    assert!((g[3] - 0.841_191_990_607_477_4).abs() < 1e-12);
    assert_eq!(x.tanh().unwrap().to_vec().unwrap()[4], 1.0);
    assert_eq!(
        x.clamp(-1.0, 1.0).unwrap().to_vec().unwrap(),
        vec![-1.0, -1.0, 0.0, 1.0, 1.0]
    );
    assert_eq!(x.abs().unwrap().to_vec().unwrap()[0], 1000.0);
}

#[test]
fn prediction_helpers() {
    let logits = t(&[0.1, 2.0, -1.0, 3.0, 0.0, 3.0], &[2, 3]);
    assert_eq!(logits.argmax(1).unwrap(), vec![1, 0]);
    assert_eq!(
        logits.one_hot_argmax().unwrap().to_vec().unwrap(),
        vec![0.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    );
    let oh = Tensor::<f32>::one_hot(&[2, 0], 3).unwrap();
    assert_eq!(oh.to_vec().unwrap(), vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
    let a = t(&[1.0, 2.0, 3.0], &[3]);
    let b = t(&[2.0], &[1]);
    assert_eq!(a.lt(&b).unwrap().to_vec().unwrap(), vec![1.0, 0.0, 0.0]);
    assert_eq!(a.le(&b).unwrap().to_vec().unwrap(), vec![1.0, 1.0, 0.0]);
    assert_eq!(a.gt(&b).unwrap().to_vec().unwrap(), vec![0.0, 0.0, 1.0]);
    assert_eq!(a.ge(&b).unwrap().to_vec().unwrap(), vec![0.0, 1.0, 1.0]);
    assert_eq!(a.eq(&b).unwrap().to_vec().unwrap(), vec![0.0, 1.0, 0.0]);
    assert_eq!(a.ne(&b).unwrap().to_vec().unwrap(), vec![1.0, 0.0, 1.0]);
    let w = a.requires_grad();
    assert!(w.gt(&b).unwrap().is_leaf(), "comparisons are not recorded");
}

#[test]
fn large_tensors_take_the_threaded_paths_and_agree() {
    // Above the threading threshold: same values as a scalar loop.
    let n = 300_000;
    let x = Tensor::<f32>::randn(&[n / 100, 100], 0.0, 1.0, 3).unwrap();
    let y = x.exp().unwrap();
    let xs = x.to_vec().unwrap();
    assert!(y
        .to_vec()
        .unwrap()
        .iter()
        .zip(&xs)
        .all(|(a, b)| *a == b.exp()));
    let bias = Tensor::<f32>::randn(&[100], 0.0, 1.0, 4).unwrap();
    let z = x.add(&bias).unwrap().to_vec().unwrap();
    let bs = bias.to_vec().unwrap();
    assert!(z.iter().enumerate().all(|(i, v)| *v == xs[i] + bs[i % 100]));
}

#[test]
fn absurd_sizes_are_errors_not_panics() {
    let z = Tensor::<f32>::zeros(&[2, 3]).unwrap();
    assert!(z.reshape(&[usize::MAX, 2]).is_err());
    assert!(Tensor::<f32>::from_vec(vec![], &[usize::MAX, usize::MAX]).is_err());
    assert!(Tensor::<f32>::arange(0.0, 1e30, 1.0).is_err());
    assert!(Tensor::<f32>::zeros(&[1])
        .unwrap()
        .broadcast_to(&[1 << 40, 1 << 30])
        .is_err());
}

/// The products of the wide and fashion MLPs (plain and transposed), odd sizes, and small and
/// thin ones, in f32 and f64, give the same bits on 1, 2, 3 and 4 threads: the kernels split
/// the output among threads (large products into row or column ranges of one `gemm` call
/// each, whichever side of the output is longer), never the sum over k.
#[test]
fn large_products_are_bit_identical_for_any_thread_count() {
    let shapes = [
        (512, 2048, 2048, false, false),
        (2048, 512, 2048, true, false),
        (512, 2048, 2048, false, true),
        (128, 784, 512, false, false),
        (784, 128, 512, true, false),
        (128, 256, 512, false, true),
        // Odd sizes: column ranges that do not fall on a tile.
        (131, 300, 203, true, true),
        (77, 1000, 1001, false, false),
        // Taller than wide, so cut into row ranges, with long sums (and a B copied row-major).
        (1001, 1500, 77, false, false),
        (700, 1200, 300, true, true),
        (2048, 2048, 512, false, false),
        // Parts that would be 64 or fewer rows and columns: the `gemm` crate sums k in other
        // blocks for those (k > 512) than for the whole product.
        (32, 1000, 128, false, false),
        (300, 700, 13, false, true),
        (130, 600, 40, true, false),
        // A short side of 1 or 2 (`gemm` sums such parts in SIMD lanes, 1,024 values at a time).
        (192, 2731, 2, false, true),
        (384, 2731, 1, false, false),
        (2, 2731, 192, false, true),
        (1, 4096, 700, false, true),
        // Small and thin products (nabla's own kernel where the CPU has AVX-512F; the thin
        // ones large enough to be split between threads).
        (32, 64, 64, false, true),
        (64, 32, 3, true, false),
        (512, 2048, 10, false, false),
        (2048, 512, 10, true, false),
    ];
    for (m, k, n, ta, tb) in shapes {
        same_bits_on_any_thread_count::<f32>(m, k, n, ta, tb);
        if m * k * n < 1 << 28 {
            same_bits_on_any_thread_count::<f64>(m, k, n, ta, tb);
        }
    }
}

fn same_bits_on_any_thread_count<T: nabla::Float>(
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
) {
    let a_shape = if ta { [k, m] } else { [m, k] };
    let b_shape = if tb { [n, k] } else { [k, n] };
    let a = Tensor::<T>::randn(&a_shape, 0.0, 1.0, 1).unwrap();
    let b = Tensor::<T>::randn(&b_shape, 0.0, 1.0, 2).unwrap();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| a.matmul_t(&b, ta, tb).unwrap().to_vec().unwrap())
    };
    let one = run(1);
    for threads in [2, 3, 4] {
        let same = one
            .iter()
            .zip(run(threads))
            .all(|(x, y)| x.to_f64().to_bits() == y.to_f64().to_bits());
        assert!(
            same,
            "({m},{k},{n}) ta={ta} tb={tb} {}: {threads} threads differ from 1",
            std::any::type_name::<T>()
        );
    }
}

/// `scatter_add` into zeros along the first, middle and last axis, repeated indices adding up,
/// positions no index names staying zero (the kernel writes its output whole, slice by slice),
/// against a loop written out here; an index past the length is an error.
#[test]
fn scatter_add_along_every_axis_matches_a_loop() {
    let shape = [3, 4, 2];
    let g: Vec<f64> = (0..24).map(|i| i as f64 + 1.0).collect();
    for axis in 0..3 {
        let len = 5;
        let idx: Vec<usize> = (0..24).map(|i| (i * 7 + axis) % 3).collect();
        let y = t(&g, &shape).scatter_add(axis, &idx, len).unwrap();
        let mut out_shape = shape;
        out_shape[axis] = len;
        assert_eq!(y.shape(), out_shape);
        let mut want = vec![0.0; out_shape.iter().product()];
        for (n, (&v, &at)) in g.iter().zip(&idx).enumerate() {
            let mut pos = [n / 8, (n / 2) % 4, n % 2];
            pos[axis] = at;
            want[(pos[0] * out_shape[1] + pos[1]) * out_shape[2] + pos[2]] += v;
        }
        assert_eq!(y.to_vec().unwrap(), want, "axis {axis}");
    }
    let e = t(&g, &shape).scatter_add(2, &[2; 24], 2).unwrap_err();
    assert!(
        e.to_string().contains("scatter_add") && e.to_string().contains("index 2"),
        "{e}"
    );
}

/// Products with two batch axes, read through a permuted view (the heads of an attention):
/// every entry equals the 2-D product of its matrices, on f32 (1 and 2 threads, the same bits)
/// and f64; an empty batch axis gives an empty result; batch axes that differ are an error
/// naming both shapes.
#[test]
fn products_with_several_batch_axes_read_views_entry_by_entry() {
    fn check<T: nabla::Float>() -> Vec<u64> {
        // [b, t, h, d] data viewed as [b, h, t, d].
        let q = Tensor::<T>::rand_uniform(&[3, 5, 4, 6], -1.0, 1.0, 7)
            .unwrap()
            .permute(&[0, 2, 1, 3])
            .unwrap();
        let k = Tensor::<T>::rand_uniform(&[3, 4, 7, 6], -1.0, 1.0, 8).unwrap();
        let y = q.matmul_t(&k, false, true).unwrap();
        assert_eq!(y.shape(), &[3, 4, 5, 7]);
        for b in 0..3 {
            for h in 0..4 {
                let entry = |x: &Tensor<T>, r: usize, c: usize| {
                    let e = x.narrow(0, b, 1).unwrap().narrow(1, h, 1).unwrap();
                    e.reshape(&[r, c]).unwrap()
                };
                let want = entry(&q, 5, 6)
                    .matmul_t(&entry(&k, 7, 6), false, true)
                    .unwrap();
                let got = entry(&y, 5, 7).to_vec().unwrap();
                assert!(
                    got.iter()
                        .zip(want.to_vec().unwrap())
                        .all(|(g, w)| g.to_f64().to_bits() == w.to_f64().to_bits()),
                    "{} entry ({b}, {h})",
                    T::DTYPE
                );
            }
        }
        y.to_vec()
            .unwrap()
            .iter()
            .map(|v| v.to_f64().to_bits())
            .collect()
    }
    check::<f64>();
    let pool = |n: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    assert_eq!(pool(1).install(check::<f32>), pool(2).install(check::<f32>));
    let empty = Tensor::<f32>::zeros(&[0, 2, 3, 4])
        .unwrap()
        .matmul(&Tensor::zeros(&[0, 2, 4, 5]).unwrap())
        .unwrap();
    assert_eq!(empty.shape(), &[0, 2, 3, 5]);
    let e = Tensor::<f32>::zeros(&[2, 3, 4, 5])
        .unwrap()
        .matmul(&Tensor::zeros(&[3, 2, 5, 4]).unwrap())
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "matmul: [2, 3, 4, 5] x [3, 2, 5, 4]: batch axes [2, 3] and [3, 2] differ"
    );
}

/// The f32 softmax, log-softmax and cross-entropy run their rows in 16-lane blocks and the
/// rest one value at a time: rows of every length around a block, with −∞ entries in a whole
/// block and in the rest, against the same computed in f64.
#[test]
fn f32_softmax_rows_of_any_length_match_f64() {
    for k in [1, 2, 15, 16, 17, 31, 33, 84, 100] {
        let n = 5;
        let mut z = Tensor::<f64>::randn(&[n, k], 0.0, 4.0, k as u64)
            .unwrap()
            .to_vec()
            .unwrap();
        if k > 1 {
            z[0] = f64::NEG_INFINITY; // row 0, first block
            z[2 * k - 1] = f64::NEG_INFINITY; // row 1, last value (the rest past 16·j)
        }
        let z64 = Tensor::from_vec(z.clone(), &[n, k]).unwrap();
        let z32 = Tensor::from_vec(z.iter().map(|&v| v as f32).collect(), &[n, k]).unwrap();
        let (p64, p32) = (z64.softmax(1).unwrap(), z32.softmax(1).unwrap());
        let (l64, l32) = (z64.log_softmax(1).unwrap(), z32.log_softmax(1).unwrap());
        let hot: Vec<f64> = (0..n * k).map(|i| f64::from(i % k == 0)).collect();
        let ce64 = z64
            .softmax_cross_entropy(&Tensor::from_vec(hot.clone(), &[n, k]).unwrap())
            .unwrap();
        let hot32 = hot.iter().map(|&v| v as f32).collect();
        let ce32 = z32
            .softmax_cross_entropy(&Tensor::from_vec(hot32, &[n, k]).unwrap())
            .unwrap();
        let pairs = [(p64, p32, 1e-6), (l64, l32, 2e-6), (ce64, ce32, 2e-6)];
        // Rows PyTorch makes NaN: all −∞, a +∞, a NaN (after a whole block where k > 16).
        for bad in [
            [f64::NEG_INFINITY; 2],
            [f64::INFINITY, 0.0],
            [0.0, f64::NAN],
        ] {
            let mut row = vec![0.5; k.max(2)];
            let n = row.len();
            if bad[0] == f64::NEG_INFINITY {
                row.iter_mut().for_each(|v| *v = f64::NEG_INFINITY);
            }
            row[n - 2..].copy_from_slice(&bad);
            let r32: Vec<f32> = row.iter().map(|&v| v as f32).collect();
            let p = Tensor::from_vec(r32, &[1, n]).unwrap().softmax(1).unwrap();
            let q = Tensor::from_vec(row, &[1, n]).unwrap().softmax(1).unwrap();
            assert!(
                p.to_vec().unwrap().iter().all(|v| v.is_nan()),
                "k {k} {bad:?}"
            );
            assert!(
                q.to_vec().unwrap().iter().all(|v| v.is_nan()),
                "k {k} {bad:?}"
            );
        }
        for (i, (a, b, tol)) in pairs.into_iter().enumerate() {
            let (a, b) = (a.to_vec().unwrap(), b.to_vec().unwrap());
            for (j, (&x, &y)) in a.iter().zip(&b).enumerate() {
                if !x.is_finite() || x == 0.0 {
                    // A −∞ logit: probability exactly 0, log-probability −∞ (and a target
                    // on it an infinite loss).
                    assert_eq!(f64::from(y), x, "k {k} output {i} at {j}");
                } else {
                    let err = (f64::from(y) - x).abs() / x.abs().max(1.0);
                    assert!(err <= tol, "k {k} output {i} at {j}: {y} vs {x}");
                }
            }
        }
    }
}

//! The image ops against straightforward reference loops (every path of the kernels: chunks
//! of samples, tiles of one large plane, 1×1, groups, stride, padding, dilation), the same bits
//! on 1–4 threads, and the errors a user gets for shapes that do not fit.

use nabla::ops::Conv2dOptions;
use nabla::{Float, Tensor};

/// `y[n][o][i][j] = b[o] + Σ x[n][g·cg + c][i·s + ki·d − p][j·s + kj·d − p] · w[o][c][ki][kj]`.
fn naive_conv(
    x: &[f64],
    xs: [usize; 4],
    w: &[f64],
    ws: [usize; 4],
    b: Option<&[f64]>,
    o: Conv2dOptions,
) -> (Vec<f64>, [usize; 4]) {
    let [n, c, h, wd] = xs;
    let [oc, cg, kh, kw] = ws;
    let (g, og) = (o.groups, oc / o.groups);
    let oh = (h + 2 * o.padding.0 - o.dilation.0 * (kh - 1) - 1) / o.stride.0 + 1;
    let ow = (wd + 2 * o.padding.1 - o.dilation.1 * (kw - 1) - 1) / o.stride.1 + 1;
    let mut y = vec![0.0; n * oc * oh * ow];
    for s in 0..n {
        for oo in 0..oc {
            let gi = oo / og;
            for i in 0..oh {
                for j in 0..ow {
                    let mut acc = b.map_or(0.0, |b| b[oo]);
                    for ci in 0..cg {
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let iy = (i * o.stride.0 + ki * o.dilation.0) as isize
                                    - o.padding.0 as isize;
                                let ix = (j * o.stride.1 + kj * o.dilation.1) as isize
                                    - o.padding.1 as isize;
                                if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= wd {
                                    continue;
                                }
                                let xv = x
                                    [((s * c + gi * cg + ci) * h + iy as usize) * wd + ix as usize];
                                acc += xv * w[((oo * cg + ci) * kh + ki) * kw + kj];
                            }
                        }
                    }
                    y[((s * oc + oo) * oh + i) * ow + j] = acc;
                }
            }
        }
    }
    let _ = c / g;
    (y, [n, oc, oh, ow])
}

fn opts(
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
    groups: usize,
) -> Conv2dOptions {
    Conv2dOptions {
        stride,
        padding,
        dilation,
        groups,
    }
}

/// (input, weight, options): small batches (one chunk), many samples (several chunks, the last
/// shorter), one sample with a plane larger than a column matrix (tiles), 1×1 (direct).
fn shapes() -> Vec<([usize; 4], [usize; 4], Conv2dOptions)> {
    vec![
        ([2, 3, 6, 6], [4, 3, 3, 3], opts((1, 1), (1, 1), (1, 1), 1)),
        (
            [23, 2, 20, 21],
            [3, 2, 3, 3],
            opts((1, 1), (1, 1), (1, 1), 1),
        ),
        (
            [1, 2, 70, 66],
            [2, 1, 3, 2],
            opts((1, 1), (1, 0), (2, 1), 2),
        ),
        (
            [2, 1, 90, 61],
            [2, 1, 3, 3],
            opts((1, 1), (0, 1), (1, 1), 1),
        ),
        ([5, 4, 7, 9], [6, 2, 2, 3], opts((2, 1), (1, 2), (1, 2), 2)),
        ([3, 4, 5, 5], [4, 4, 1, 1], opts((1, 1), (0, 0), (1, 1), 1)),
        ([9, 4, 5, 5], [8, 1, 1, 1], opts((1, 1), (0, 0), (1, 1), 4)),
        ([4, 3, 9, 9], [3, 1, 3, 3], opts((3, 2), (1, 1), (1, 1), 3)),
    ]
}

fn rand(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::rand_uniform(shape, -1.0, 1.0, seed).unwrap()
}

#[test]
fn conv2d_and_its_gradients_match_reference_loops_on_every_path() {
    for (i, (xs, ws, o)) in shapes().into_iter().enumerate() {
        let x = rand(&xs, 10 + i as u64).requires_grad();
        let w = rand(&ws, 20 + i as u64).requires_grad();
        let b = rand(&[ws[0]], 30 + i as u64).requires_grad();
        let y = x.conv2d(&w, Some(&b), o).unwrap();
        let (want, shape) = naive_conv(
            &x.to_vec().unwrap(),
            xs,
            &w.to_vec().unwrap(),
            ws,
            Some(&b.to_vec().unwrap()),
            o,
        );
        assert_eq!(y.shape(), shape, "case {i}");
        let got = y.to_vec().unwrap();
        for (k, (a, e)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - e).abs() <= 1e-12 * (1.0 + e.abs()),
                "case {i} y[{k}]: {a} vs {e}"
            );
        }
        // Gradients against the reference by linearity: d/dθ Σ y ⊙ gy is the reference's
        // directional derivative along unit vectors; checked along a few random directions.
        let gy = rand(y.shape(), 40 + i as u64);
        let grads = y.mul(&gy).unwrap().sum_all().unwrap().backward().unwrap();
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let gyv = gy.to_vec().unwrap();
        for dir in 0..3u64 {
            let vx = rand(&xs, 100 + dir).to_vec().unwrap();
            let vw = rand(&ws, 200 + dir).to_vec().unwrap();
            // conv is bilinear: ⟨gy, conv(vx, w)⟩ = ⟨dx, vx⟩ and ⟨gy, conv(x, vw)⟩ = ⟨dw, vw⟩
            let (yx, _) = naive_conv(&vx, xs, &w.to_vec().unwrap(), ws, None, o);
            let (yw, _) = naive_conv(&x.to_vec().unwrap(), xs, &vw, ws, None, o);
            let dx = grads.get(&x).unwrap().to_vec().unwrap();
            let dw = grads.get(&w).unwrap().to_vec().unwrap();
            let (a, e) = (dot(&dx, &vx), dot(&gyv, &yx));
            assert!(
                (a - e).abs() <= 1e-10 * (1.0 + e.abs()),
                "case {i} dx·v: {a} vs {e}"
            );
            let (a, e) = (dot(&dw, &vw), dot(&gyv, &yw));
            assert!(
                (a - e).abs() <= 1e-10 * (1.0 + e.abs()),
                "case {i} dw·v: {a} vs {e}"
            );
        }
    }
}

fn bits<T: Float>(t: &Tensor<T>) -> Vec<u64> {
    t.to_vec()
        .unwrap()
        .iter()
        .map(|v| v.to_f64().to_bits())
        .collect()
}

/// Forward, dx, dw, db and the pooled values with their gradient, as bits.
fn run_all<T: Float>(xs: [usize; 4], ws: [usize; 4], o: Conv2dOptions) -> Vec<Vec<u64>> {
    let x = Tensor::<T>::randn(&xs, 0.0, 1.0, 1)
        .unwrap()
        .requires_grad();
    let w = Tensor::<T>::randn(&ws, 0.0, 0.3, 2)
        .unwrap()
        .requires_grad();
    let b = Tensor::<T>::randn(&[ws[0]], 0.0, 0.3, 3)
        .unwrap()
        .requires_grad();
    let y = x.conv2d(&w, Some(&b), o).unwrap();
    let p = y
        .relu()
        .unwrap()
        .max_pool2d((2, 2), (2, 2), (0, 0))
        .unwrap();
    let q = y.avg_pool2d((3, 3), (2, 2), (1, 1)).unwrap();
    let gp = Tensor::<T>::randn(p.shape(), 0.0, 1.0, 4).unwrap();
    let gq = Tensor::<T>::randn(q.shape(), 0.0, 1.0, 5).unwrap();
    let l = p
        .mul(&gp)
        .unwrap()
        .sum_all()
        .unwrap()
        .add(&q.mul(&gq).unwrap().sum_all().unwrap())
        .unwrap();
    let g = l.backward().unwrap();
    vec![
        bits(&y),
        bits(&p),
        bits(&q),
        bits(g.get(&x).unwrap()),
        bits(g.get(&w).unwrap()),
        bits(g.get(&b).unwrap()),
    ]
}

#[test]
fn convolutions_and_pooling_give_the_same_bits_on_1_to_4_threads() {
    let cases = [
        (
            // 303,104 output values: the bias gradient's row sums are split among threads
            [37, 8, 16, 16],
            [32, 8, 3, 3],
            opts((1, 1), (1, 1), (1, 1), 1),
        ),
        (
            [3, 2, 72, 70],
            [4, 1, 3, 3],
            opts((1, 1), (1, 1), (1, 1), 2),
        ),
        (
            [64, 16, 8, 8],
            [32, 16, 1, 1],
            opts((1, 1), (0, 0), (1, 1), 1),
        ),
    ];
    for (xs, ws, o) in cases {
        for f64s in [false, true] {
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| {
                    if f64s {
                        run_all::<f64>(xs, ws, o)
                    } else {
                        run_all::<f32>(xs, ws, o)
                    }
                })
            };
            let one = run(1);
            for threads in [2, 3, 4] {
                let other = run(threads);
                for (k, (a, b)) in one.iter().zip(&other).enumerate() {
                    assert!(
                        a == b,
                        "{xs:?} {ws:?} f64={f64s}: output {k} differs on {threads} threads"
                    );
                }
            }
        }
    }
}

fn err<T: std::fmt::Debug>(r: nabla::Result<T>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn bad_shapes_and_options_are_errors_naming_the_op_and_the_shapes() {
    let x = Tensor::<f32>::zeros(&[2, 4, 5, 5]).unwrap();
    let w = Tensor::<f32>::zeros(&[6, 4, 7, 7]).unwrap();
    let e = err(x.conv2d(&w, None, Conv2dOptions::default()));
    assert!(
        e.starts_with("conv2d:")
            && e.contains("[2, 4, 5, 5]")
            && e.contains("larger than the padded input 5×5"),
        "{e}"
    );
    // padding makes it fit
    let fits = opts((1, 1), (1, 1), (1, 1), 1);
    assert_eq!(x.conv2d(&w, None, fits).unwrap().shape(), &[2, 6, 1, 1]);

    let w3 = Tensor::<f32>::zeros(&[6, 2, 3, 3]).unwrap();
    let e = err(x.conv2d(&w3, None, opts((1, 1), (0, 0), (1, 1), 3)));
    assert!(
        e.contains("conv2d") && e.contains("not divisible by groups 3"),
        "{e}"
    );
    let e = err(x.conv2d(&w3, None, opts((0, 1), (0, 0), (1, 1), 2)));
    assert!(e.contains("conv2d") && e.contains("stride (0, 1)"), "{e}");
    let e =
        err(Tensor::<f32>::zeros(&[4, 5, 5])
            .unwrap()
            .conv2d(&w3, None, Conv2dOptions::default()));
    assert!(
        e.contains("conv2d") && e.contains("[4, 5, 5]") && e.contains("4-D"),
        "{e}"
    );
    let e = err(x.conv2d(
        &Tensor::zeros(&[6, 4, 3, 3]).unwrap(),
        Some(&Tensor::zeros(&[5]).unwrap()),
        Conv2dOptions::default(),
    ));
    assert!(
        e.contains("bias [5]") && e.contains("6 output channels"),
        "{e}"
    );
    let e = err(x.conv2d(
        &Tensor::zeros(&[6, 3, 3, 3]).unwrap(),
        None,
        Conv2dOptions::default(),
    ));
    assert!(
        e.contains("takes 3 channels per group") && e.contains("4 channels"),
        "{e}"
    );

    let e = err(x.max_pool2d((7, 7), (1, 1), (0, 0)));
    assert!(
        e.starts_with("max_pool2d:") && e.contains("larger than the padded input"),
        "{e}"
    );
    let e = err(x.avg_pool2d((2, 2), (0, 2), (0, 0)));
    assert!(
        e.starts_with("avg_pool2d:") && e.contains("stride (0, 2)"),
        "{e}"
    );
    let e = err(x.max_pool2d((2, 2), (2, 2), (2, 2)));
    assert!(e.contains("at most half the kernel"), "{e}");
    // Empty planes: padding makes a window, but it would hold no input value.
    let flat = Tensor::<f32>::zeros(&[1, 1, 0, 4]).unwrap();
    for e in [
        err(flat.max_pool2d((2, 2), (2, 2), (1, 1))),
        err(flat.avg_pool2d((2, 2), (2, 2), (1, 1))),
    ] {
        assert!(e.contains("empty") && e.contains("[1, 1, 0, 4]"), "{e}");
    }
    let e = err(x.adaptive_avg_pool2d((2, 3)));
    assert!(
        e.contains("adaptive_avg_pool2d") && e.contains("(2, 3)"),
        "{e}"
    );

    let one = Tensor::<f32>::zeros(&[1, 3]).unwrap();
    let e = err(one.batch_norm(None, None, None, None, true, 0.1, 1e-5));
    assert!(
        e.starts_with("batch_norm:")
            && e.contains("more than one value per channel")
            && e.contains("[1, 3]"),
        "{e}"
    );
    // evaluation with running statistics is fine for a batch of one
    let (rm, rv) = (Tensor::zeros(&[3]).unwrap(), Tensor::ones(&[3]).unwrap());
    assert!(one
        .batch_norm(Some(&rm), Some(&rv), None, None, false, 0.1, 1e-5)
        .is_ok());
    let e = err(one.batch_norm(
        Some(&Tensor::zeros(&[4]).unwrap()),
        Some(&rv),
        None,
        None,
        false,
        0.1,
        1e-5,
    ));
    assert!(
        e.contains("running_mean [4]") && e.contains("3 channels"),
        "{e}"
    );
    let e = err(Tensor::<f32>::zeros(&[2, 3, 4, 5, 6])
        .unwrap()
        .batch_norm(None, None, None, None, true, 0.1, 1e-5));
    assert!(e.contains("[2, 3, 4, 5, 6]"), "{e}");
    let e = err(x.flatten(4));
    assert!(e.starts_with("flatten:"), "{e}");
}

#[test]
fn max_pool_propagates_nan_and_gives_the_gradient_to_the_first_maximum() {
    let x = Tensor::<f64>::from_vec(
        vec![1.0, 3.0, 3.0, 0.0, f64::NAN, 2.0, 5.0, 5.0],
        &[1, 2, 2, 2],
    )
    .unwrap()
    .requires_grad();
    let y = x.max_pool2d((2, 2), (2, 2), (0, 0)).unwrap();
    let v = y.to_vec().unwrap();
    assert_eq!(v[0], 3.0);
    assert!(v[1].is_nan());
    let g = y.sum_all().unwrap().backward().unwrap();
    let d = g.get(&x).unwrap().to_vec().unwrap();
    assert_eq!(d, [0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]);
}

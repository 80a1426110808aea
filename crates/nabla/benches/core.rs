//! Criterion micro-benchmarks: matrix products at MLP shapes, and one forward + backward pass
//! of a 784-512-256-10 MLP at batch 128. Run with `cargo bench -p nabla`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nabla::{no_grad, Tensor};
use std::hint::black_box;

fn matmul_shapes(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul");
    // (m, k, n, transpose a, transpose b): the forward products of the fashion MLP and the
    // two backward products of its first layer (dW = Xᵀ·G, dX = G·Wᵀ); the wide MLP's
    // (784-2048-2048-10, batch 512) middle layer forward and backward; the tiny MLP's last layer
    // (2-64-64-3, batch 32).
    let shapes = [
        (128, 784, 512, false, false),
        (128, 512, 256, false, false),
        (128, 256, 10, false, false),
        (784, 128, 512, true, false),
        (128, 512, 784, false, true),
        (512, 2048, 2048, false, false),
        (2048, 512, 2048, true, false),
        (512, 2048, 2048, false, true),
        (32, 64, 3, false, false),
    ];
    for (m, k, n, ta, tb) in shapes {
        let a_shape = if ta { [k, m] } else { [m, k] };
        let b_shape = if tb { [n, k] } else { [k, n] };
        let a = Tensor::<f32>::randn(&a_shape, 0.0, 1.0, 1).unwrap();
        let b = Tensor::<f32>::randn(&b_shape, 0.0, 1.0, 2).unwrap();
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        let name = format!(
            "{m}x{k}{} * {k}x{n}{}",
            if ta { "(T)" } else { "" },
            if tb { "(T)" } else { "" }
        );
        group.bench_function(&name, |bench| {
            bench.iter(|| black_box(a.matmul_t(&b, ta, tb).unwrap()))
        });
    }
    group.finish();
}

/// The products of the tiny workload (2-64-64-3, batch 32; forward and backward) and the thin
/// ones of the fashion and wide workloads, each through `nabla` (which sends them to its own
/// small-product kernel where the CPU has AVX-512F) and through the `gemm` crate alone, on the
/// same operands: the side-by-side behind `kernels/sgemm.rs`.
fn small_products(c: &mut Criterion) {
    let mut group = c.benchmark_group("small_products");
    let shapes = [
        (32, 2, 64, false, false),
        (32, 64, 64, false, false),
        (32, 64, 3, false, false),
        (64, 32, 3, true, false),
        (32, 3, 64, false, true),
        (64, 32, 64, true, false),
        (32, 64, 64, false, true),
        (128, 256, 10, false, false),
        (256, 128, 10, true, false),
        (512, 2048, 10, false, false),
        (2048, 512, 10, true, false),
    ];
    for (m, k, n, ta, tb) in shapes {
        let a_shape = if ta { [k, m] } else { [m, k] };
        let b_shape = if tb { [n, k] } else { [k, n] };
        let a = Tensor::<f32>::randn(&a_shape, 0.0, 1.0, 1).unwrap();
        let b = Tensor::<f32>::randn(&b_shape, 0.0, 1.0, 2).unwrap();
        let (av, bv) = (a.to_vec().unwrap(), b.to_vec().unwrap());
        // Row and column strides of the operands as the product reads them.
        let (rsa, csa) = if ta { (1, m as isize) } else { (k as isize, 1) };
        let (rsb, csb) = if tb { (1, k as isize) } else { (n as isize, 1) };
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        let name = format!(
            "{m}x{k}{} * {k}x{n}{}",
            if ta { "(T)" } else { "" },
            if tb { "(T)" } else { "" }
        );
        group.bench_function(format!("nabla {name}"), |bench| {
            bench.iter(|| black_box(a.matmul_t(&b, ta, tb).unwrap()))
        });
        group.bench_function(format!("gemm crate {name}"), |bench| {
            bench.iter(|| {
                let mut out = vec![0f32; m * n];
                // SAFETY: the strides describe av (m×k) and bv (k×n) exactly; out is m×n.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        out.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        av.as_ptr(),
                        csa,
                        rsa,
                        bv.as_ptr(),
                        csb,
                        rsb,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::Rayon(rayon::current_num_threads()),
                    )
                };
                black_box(out)
            })
        });
    }
    group.finish();
}

struct Mlp {
    layers: Vec<(Tensor<f32>, Tensor<f32>)>,
}

impl Mlp {
    fn new(sizes: &[usize]) -> Self {
        let layers = sizes
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let std = (2.0 / w[0] as f64).sqrt();
                (
                    Tensor::randn(&[w[0], w[1]], 0.0, std, i as u64)
                        .unwrap()
                        .requires_grad(),
                    Tensor::zeros(&[w[1]]).unwrap().requires_grad(),
                )
            })
            .collect();
        Mlp { layers }
    }

    fn logits(&self, x: &Tensor<f32>) -> Tensor<f32> {
        let mut h = x.clone();
        for (i, (w, b)) in self.layers.iter().enumerate() {
            h = h.matmul(w).unwrap().add(b).unwrap();
            if i + 1 < self.layers.len() {
                h = h.relu().unwrap();
            }
        }
        h
    }
}

fn mlp_step(c: &mut Criterion) {
    let batch = 128;
    let mlp = Mlp::new(&[784, 512, 256, 10]);
    let x = Tensor::<f32>::rand_uniform(&[batch, 784], 0.0, 1.0, 9).unwrap();
    let labels: Vec<usize> = (0..batch).map(|i| (i * 7) % 10).collect();
    let mut group = c.benchmark_group("mlp_784_512_256_10_b128");
    group.throughput(Throughput::Elements(batch as u64));
    group.bench_function("forward_backward", |bench| {
        bench.iter(|| {
            let logp = mlp.logits(&x).log_softmax(1).unwrap();
            let loss = logp
                .gather(1, &labels)
                .unwrap()
                .mean_all()
                .unwrap()
                .neg()
                .unwrap();
            black_box(loss.backward().unwrap())
        })
    });
    group.bench_function("forward_no_grad", |bench| {
        bench.iter(|| black_box(no_grad(|| mlp.logits(&x))))
    });
    group.finish();
}

criterion_group!(benches, matmul_shapes, small_products, mlp_step);
criterion_main!(benches);

//! Criterion benchmarks of the convolution and pooling ops at the shapes of the `nabla bench
//! --workload cnn` model (Fashion-MNIST, batch 128), each beside the one matrix product it is
//! lowered to (the same multiply-adds, as one GEMM over the whole batch): the convolution's
//! forward pass and its two gradients should run at a good fraction of the product's speed.
//! Run with `cargo bench -p nabla --bench conv`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nabla::ops::Conv2dOptions;
use nabla::{no_grad, Tensor};
use std::hint::black_box;

/// (name, input [n, c, h, w], out channels): the two convolutions of the benchmark CNN (3×3,
/// padding 1).
const CONVS: [(&str, [usize; 4], usize); 2] = [
    ("conv1 1->32 28x28", [128, 1, 28, 28], 32),
    ("conv2 32->64 14x14", [128, 32, 14, 14], 64),
];

fn convolutions(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv2d");
    group.sample_size(20);
    let pad1 = Conv2dOptions {
        padding: (1, 1),
        ..Default::default()
    };
    for (name, [n, ch, h, w], o) in CONVS {
        let x = Tensor::<f32>::randn(&[n, ch, h, w], 0.0, 1.0, 1).unwrap();
        let wt = Tensor::<f32>::randn(&[o, ch, 3, 3], 0.0, 0.1, 2).unwrap();
        let b = Tensor::<f32>::zeros(&[o]).unwrap();
        let (l, ckk) = (h * w, ch * 9);
        let macs = n * l * o * ckk;
        group.throughput(Throughput::Elements(2 * macs as u64));
        group.bench_function(format!("{name} forward"), |bench| {
            bench.iter(|| no_grad(|| black_box(x.conv2d(&wt, Some(&b), pad1).unwrap())))
        });
        // The gradients, through backward of a recorded convolution (`Σ y ⊙ gy`, so that the
        // gradient reaching the convolution is a plain tensor, as in training).
        let (xg, wg) = (x.detach().requires_grad(), wt.detach().requires_grad());
        let gy = Tensor::<f32>::randn(&[n, o, h, w], 0.0, 1.0, 7).unwrap();
        group.bench_function(format!("{name} forward + backward (dx, dw, db)"), |bench| {
            bench.iter(|| {
                let y = xg.conv2d(&wg, Some(&b), pad1).unwrap();
                black_box(y.mul(&gy).unwrap().sum_all().unwrap().backward().unwrap())
            })
        });
        // Only the weight's gradient (the input does not require one, as for a first layer):
        // subtracting gives the time of each gradient.
        group.bench_function(format!("{name} forward + backward (dw, db)"), |bench| {
            bench.iter(|| {
                let y = x.conv2d(&wg, Some(&b), pad1).unwrap();
                black_box(y.mul(&gy).unwrap().sum_all().unwrap().backward().unwrap())
            })
        });
        // The equivalent products: y = W·col [o × ckk × n·l], dcol = Wᵀ·g, dW = g·colᵀ.
        let wm = Tensor::<f32>::randn(&[o, ckk], 0.0, 1.0, 3).unwrap();
        let col = Tensor::<f32>::randn(&[ckk, n * l], 0.0, 1.0, 4).unwrap();
        let g = Tensor::<f32>::randn(&[o, n * l], 0.0, 1.0, 5).unwrap();
        group.bench_function(format!("{name} as one GEMM: W·col"), |bench| {
            bench.iter(|| black_box(wm.matmul_t(&col, false, false).unwrap()))
        });
        group.bench_function(format!("{name} as one GEMM: Wᵀ·g"), |bench| {
            bench.iter(|| black_box(wm.matmul_t(&g, true, false).unwrap()))
        });
        group.bench_function(format!("{name} as one GEMM: g·colᵀ"), |bench| {
            bench.iter(|| black_box(g.matmul_t(&col, false, true).unwrap()))
        });
    }
    group.finish();
}

fn pooling(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool2d");
    group.sample_size(20);
    let x = Tensor::<f32>::randn(&[128, 32, 28, 28], 0.0, 1.0, 6).unwrap();
    group.throughput(Throughput::Elements(x.numel() as u64));
    group.bench_function("max_pool2d 2x2 [128,32,28,28]", |bench| {
        bench.iter(|| no_grad(|| black_box(x.max_pool2d((2, 2), (2, 2), (0, 0)).unwrap())))
    });
    group.bench_function("avg_pool2d 2x2 [128,32,28,28]", |bench| {
        bench.iter(|| no_grad(|| black_box(x.avg_pool2d((2, 2), (2, 2), (0, 0)).unwrap())))
    });
    group.bench_function("relu [128,32,28,28] (for scale)", |bench| {
        bench.iter(|| no_grad(|| black_box(x.relu().unwrap())))
    });
    group.finish();
}

/// Batch normalisation in training mode at the first convolution's output: forward, and
/// forward + backward (composed of element-wise ops and reductions).
fn batch_norm(c: &mut Criterion) {
    if std::env::var_os("NABLA_RETAIN_FREED").is_some() {
        nabla::alloc::retain_freed_memory();
    }
    let mut group = c.benchmark_group("batch_norm");
    group.sample_size(10);
    let x = Tensor::<f32>::randn(&[128, 32, 28, 28], 0.0, 1.0, 8)
        .unwrap()
        .requires_grad();
    let w = Tensor::<f32>::ones(&[32]).unwrap().requires_grad();
    let b = Tensor::<f32>::zeros(&[32]).unwrap().requires_grad();
    let gy = Tensor::<f32>::randn(x.shape(), 0.0, 1.0, 9).unwrap();
    group.throughput(Throughput::Elements(x.numel() as u64));
    group.bench_function("training [128,32,28,28] forward + backward", |bench| {
        bench.iter(|| {
            let y = x
                .batch_norm(None, None, Some(&w), Some(&b), true, 0.1, 1e-5)
                .unwrap();
            black_box(y.mul(&gy).unwrap().sum_all().unwrap().backward().unwrap())
        })
    });
    group.finish();
}

criterion_group!(benches, convolutions, pooling, batch_norm);
criterion_main!(benches);

//! Views are O(1): `t()`, `permute` and `narrow` take the same time on a 1 KB tensor as on a
//! 100 MB one (they build a new layout over the same storage). Run with
//! `cargo bench -p nabla --bench views`; the allocation side of the same claim is
//! `cargo run --release -p nabla --example view_alloc`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use nabla::Tensor;
use std::hint::black_box;

fn views(c: &mut Criterion) {
    let mut group = c.benchmark_group("views");
    // f32 square matrices of about 1 KB, 1 MB and 100 MB.
    for (label, side) in [("1KB", 16usize), ("1MB", 512), ("100MB", 5120)] {
        let x = Tensor::<f32>::zeros(&[side, side]).unwrap();
        group.bench_with_input(BenchmarkId::new("t", label), &x, |b, x| {
            b.iter(|| black_box(x.t().unwrap()))
        });
        group.bench_with_input(BenchmarkId::new("permute", label), &x, |b, x| {
            b.iter(|| black_box(x.permute(&[1, 0]).unwrap()))
        });
        group.bench_with_input(BenchmarkId::new("narrow", label), &x, |b, x| {
            b.iter(|| black_box(x.narrow(1, 1, side / 2).unwrap()))
        });
        group.bench_with_input(BenchmarkId::new("broadcast_to", label), &x, |b, x| {
            b.iter(|| {
                black_box(
                    x.unsqueeze(0)
                        .unwrap()
                        .broadcast_to(&[4, side, side])
                        .unwrap(),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, views);
criterion_main!(benches);

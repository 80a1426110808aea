//! The fused attention op (`scaled_dot_product_attention` without a mask): values and all
//! three gradients against the composed path (the same function with a zero mask: product,
//! softmax, product), in f64 and f32, causal or not, over shapes that leave partial register
//! tiles and softmax blocks, for contiguous and permuted (strided) heads; the same bits on
//! any thread count; a query alone (as a key/value-cached step) gets the bits it gets in its
//! full window; errors.

use nabla::isa::{self, Isa};
use nabla::ops::{packed_attention, scaled_dot_product_attention};
use nabla::{Float, Tensor};

/// The instruction-set tier is process-wide: the test that switches it holds this for writing,
/// every other test for reading, so none runs while the tier changes under it (the packed
/// backward's key gradients differed in one CI run, one task's rounding at another tier).
static TIER: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// This test's hold on the tier (see [`TIER`]).
fn tier_held() -> std::sync::RwLockReadGuard<'static, ()> {
    TIER.read().unwrap_or_else(|e| e.into_inner())
}

thread_local! {
    /// Whether `run` hands keys and values over as contiguous heads.
    static MIXED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Values and gradients (of a weighted sum of the output) of attention over `q`, `k`, `v`,
/// fused (no mask) or composed (a zero mask).
fn run<T: Float>(
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    causal: bool,
    fused: bool,
) -> Vec<Vec<f64>> {
    let (q, k, v) = (
        q.detach().requires_grad(),
        k.detach().requires_grad(),
        v.detach().requires_grad(),
    );
    // Heads as `[b, h, n, d]` views of `[b, n, h, d]` data: strided, as the GPT passes them.
    let h = |x: &Tensor<T>| x.permute(&[0, 2, 1, 3]).unwrap();
    let (qh, mut kh, mut vh) = (h(&q), h(&k), h(&v));
    if MIXED.with(|m| m.get()) {
        // Keys and values in contiguous heads (as a key/value cache holds them), the queries
        // a view: the gradients of each are placed differently.
        (kh, vh) = (kh.contiguous().unwrap(), vh.contiguous().unwrap());
    }
    let mask = (!fused).then(|| {
        let (t, s) = (qh.shape()[2], kh.shape()[2]);
        Tensor::<T>::zeros(&[t, s]).unwrap()
    });
    let y = scaled_dot_product_attention(&qh, &kh, &vh, mask.as_ref(), causal).unwrap();
    let w = Tensor::<T>::rand_uniform(y.shape(), -1.0, 1.0, 99).unwrap();
    let g = y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
    let f = |t: &Tensor<T>| t.to_vec().unwrap().iter().map(|x| x.to_f64()).collect();
    vec![
        f(&y),
        f(g.get(&q).unwrap()),
        f(g.get(&k).unwrap()),
        f(g.get(&v).unwrap()),
    ]
}

fn inputs<T: Float>(
    b: usize,
    h: usize,
    (t, s, d, dv): (usize, usize, usize, usize),
    seed: u64,
) -> [Tensor<T>; 3] {
    [
        Tensor::rand_uniform(&[b, t, h, d], -2.0, 2.0, seed).unwrap(),
        Tensor::rand_uniform(&[b, s, h, d], -2.0, 2.0, seed + 1).unwrap(),
        Tensor::rand_uniform(&[b, s, h, dv], -1.0, 1.0, seed + 2).unwrap(),
    ]
}

const SHAPES: &[(usize, usize, usize, usize)] = &[
    (1, 1, 1, 1),
    (1, 7, 3, 5),
    (5, 5, 4, 4),
    (12, 12, 16, 16),
    (13, 13, 32, 32),
    (17, 33, 8, 40),
    (30, 64, 32, 32),
    (64, 64, 32, 32),
    (25, 25, 3, 17),
];

#[test]
fn fused_attention_matches_the_composed_path_in_f64_and_f32() {
    let _tier = tier_held();
    for (i, &dims) in SHAPES.iter().enumerate() {
        for (causal, mixed) in [(true, false), (false, false), (true, true)] {
            MIXED.with(|m| m.set(mixed));
            let [q, k, v] = inputs::<f64>(2, 3, dims, 10 * i as u64);
            let (a, b) = (
                run(&q, &k, &v, causal, true),
                run(&q, &k, &v, causal, false),
            );
            let [q, k, v] = inputs::<f32>(2, 3, dims, 10 * i as u64);
            let c = run(&q, &k, &v, causal, true);
            let label = format!("{dims:?} causal {causal} mixed {mixed}");
            assert_agree(&["output", "dq", "dk", "dv"], [&a, &b, &c], &label);
        }
    }
}

#[test]
fn fused_attention_gives_the_same_bits_on_any_thread_count() {
    let _tier = tier_held();
    let [q, k, v] = inputs::<f32>(12, 4, (64, 64, 32, 32), 7);
    let bits = || -> Vec<u32> {
        run(&q, &k, &v, true, true)
            .iter()
            .flatten()
            .map(|&x| (x as f32).to_bits())
            .collect()
    };
    same_bits_on_1_2_3_threads(bits);
}

/// The last query alone over its keys (a cached generation step) gets exactly the bits of
/// that query's row in the whole causal window, for every position — where the fused kernel
/// runs f32 (the AVX2 and AVX-512 tiers; on the scalar tier the composed ops run, to
/// rounding).
#[test]
fn a_query_alone_gets_the_bits_of_its_row_in_the_full_window() {
    let _tier = tier_held();
    let fused = isa::active() >= Isa::Avx2;
    let (t, d) = (40, 24);
    let [q, k, v] = inputs::<f32>(1, 2, (t, t, d, d), 3);
    let h = |x: &Tensor<f32>| x.permute(&[0, 2, 1, 3]).unwrap();
    let full = scaled_dot_product_attention(&h(&q), &h(&k), &h(&v), None, true).unwrap();
    let full = full.to_vec().unwrap();
    for i in 0..t {
        let one =
            |x: &Tensor<f32>, from: usize, to: usize| h(&x.narrow(1, from, to - from).unwrap());
        let y = scaled_dot_product_attention(
            &one(&q, i, i + 1),
            &one(&k, 0, i + 1),
            &one(&v, 0, i + 1),
            None,
            true,
        )
        .unwrap()
        .to_vec()
        .unwrap();
        for head in 0..2 {
            for c in 0..d {
                let (got, want) = (y[head * d + c], full[(head * t + i) * d + c]);
                if fused {
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "query {i} head {head} column {c}"
                    );
                } else {
                    assert!(
                        (got - want).abs() < 1e-5,
                        "query {i} head {head} column {c}"
                    );
                }
            }
        }
    }
}

#[test]
fn causal_attention_with_more_queries_than_keys_is_an_error() {
    let _tier = tier_held();
    let q = Tensor::<f32>::zeros(&[1, 5, 4]).unwrap();
    let k = Tensor::<f32>::zeros(&[1, 3, 4]).unwrap();
    let err = scaled_dot_product_attention(&q, &k, &k, None, true).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("scaled_dot_product_attention")
            && msg.contains("5 queries")
            && msg.contains("3 keys"),
        "{msg}"
    );
    // without causal, more queries than keys is fine
    let y = scaled_dot_product_attention(&q, &k, &k, None, false).unwrap();
    assert_eq!(y.shape(), [1, 5, 4]);
}

/// The AVX2 tier (two ymm per key, its own tiles) gives the AVX-512 tier's bits: values and
/// all three gradients. Skipped (printing why) on a CPU without AVX-512.
#[test]
fn the_avx2_and_avx512_tiers_give_the_same_bits() {
    let _tier = TIER.write().unwrap_or_else(|e| e.into_inner());
    if isa::detected() < Isa::Avx512 {
        eprintln!("skipped: this CPU has no AVX-512 to compare the AVX2 tier with");
        return;
    }
    let [q, k, v] = inputs::<f32>(3, 2, (37, 45, 20, 33), 21);
    let bits = |causal| -> Vec<u32> {
        run(&q, &k, &v, causal, true)
            .iter()
            .flatten()
            .map(|&x| (x as f32).to_bits())
            .collect()
    };
    // The other tests in this binary wait meanwhile (`TIER`); the limit found (NABLA_MAX_ISA's)
    // is put back.
    let found = isa::limit();
    for causal in [true, false] {
        assert_eq!(isa::set_max(Some(Isa::Avx2)), Isa::Avx2);
        let avx2 = bits(causal);
        assert_eq!(isa::set_max(None), Isa::Avx512);
        let avx512 = bits(causal);
        assert_eq!(avx2, avx512, "causal {causal}");
    }
    isa::set_max(found);
}

/// Values and the gradient of a weighted sum of packed attention over `qkv` `[b, t, 3c]`:
/// fused, or as the split views, the composed attention (a zero mask) and the heads merged.
fn run_packed<T: Float>(qkv: &Tensor<T>, heads: usize, causal: bool, fused: bool) -> Vec<Vec<f64>> {
    let x = qkv.detach().requires_grad();
    let (b, t, c) = (x.shape()[0], x.shape()[1], x.shape()[2] / 3);
    let y = if fused {
        packed_attention(&x, heads, causal).unwrap()
    } else {
        let part = |i: usize| {
            x.narrow(2, i * c, c)
                .unwrap()
                .reshape(&[b, t, heads, c / heads])
                .unwrap()
                .permute(&[0, 2, 1, 3])
                .unwrap()
        };
        let mask = Tensor::<T>::zeros(&[t, t]).unwrap();
        scaled_dot_product_attention(&part(0), &part(1), &part(2), Some(&mask), causal)
            .unwrap()
            .permute(&[0, 2, 1, 3])
            .unwrap()
            .reshape(&[b, t, c])
            .unwrap()
    };
    let w = Tensor::<T>::rand_uniform(y.shape(), -1.0, 1.0, 98).unwrap();
    let g = y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
    let f = |t: &Tensor<T>| t.to_vec().unwrap().iter().map(|x| x.to_f64()).collect();
    vec![f(&y), f(g.get(&x).unwrap())]
}

/// Packed attention (one op over `[b, t, 3c]`, its gradient written into the columns it came
/// from) matches the split, composed and merged path in f64 and f32, values and gradients.
#[test]
fn packed_attention_matches_the_split_composed_path() {
    let _tier = tier_held();
    for (i, &(t, heads, d)) in [(1, 1, 1), (5, 2, 3), (13, 4, 8), (64, 4, 32), (33, 3, 20)]
        .iter()
        .enumerate()
    {
        for causal in [true, false] {
            let shape = [3, t, 3 * heads * d];
            let x64 = Tensor::<f64>::rand_uniform(&shape, -2.0, 2.0, 40 + i as u64).unwrap();
            let x32 = Tensor::<f32>::rand_uniform(&shape, -2.0, 2.0, 40 + i as u64).unwrap();
            let (a, b) = (
                run_packed(&x64, heads, causal, true),
                run_packed(&x64, heads, causal, false),
            );
            let c = run_packed(&x32, heads, causal, true);
            let label = format!("t {t} heads {heads} d {d} causal {causal}");
            assert_agree(&["output", "d(qkv)"], [&a, &b, &c], &label);
        }
    }
    let bad = Tensor::<f32>::zeros(&[2, 3, 10]).unwrap();
    let err = packed_attention(&bad, 2, true).unwrap_err().to_string();
    assert!(
        err.contains("packed_attention") && err.contains("[2, 3, 10]"),
        "{err}"
    );
}

#[test]
fn packed_attention_gives_the_same_bits_on_any_thread_count() {
    let _tier = tier_held();
    let x = Tensor::<f32>::rand_uniform(&[12, 64, 384], -2.0, 2.0, 5).unwrap();
    let bits = || -> Vec<u32> {
        run_packed(&x, 4, true, true)
            .iter()
            .flatten()
            .map(|&v| (v as f32).to_bits())
            .collect()
    };
    same_bits_on_1_2_3_threads(bits);
}

/// `bits` gives the same on one, two and three threads.
fn same_bits_on_1_2_3_threads(bits: impl Fn() -> Vec<u32> + Send + Sync) {
    let pool = |n: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    let one = pool(1).install(&bits);
    for n in [2, 3] {
        assert_eq!(pool(n).install(&bits), one, "{n} threads");
    }
}

/// Shapes the main comparison leaves out: more queries than keys over several tiles (not
/// causal), a strided output gradient (the loss reads the output transposed), and empty
/// sizes (no keys, no queries, no width, no batch): values and gradients as the composed path
/// gives them, without a panic.
#[test]
fn fused_attention_edges_match_the_composed_path() {
    let _tier = tier_held();
    let check = |dims: (usize, usize, usize, usize), b: usize, causal: bool, transposed: bool| {
        let [q, k, v] = inputs::<f64>(b, 2, dims, 77);
        let grads = |fused: bool| -> Vec<Vec<f64>> {
            let (q, k, v) = (
                q.detach().requires_grad(),
                k.detach().requires_grad(),
                v.detach().requires_grad(),
            );
            let h = |x: &Tensor<f64>| x.permute(&[0, 2, 1, 3]).unwrap();
            let (t, s) = (dims.0, dims.1);
            let mask = (!fused).then(|| Tensor::<f64>::zeros(&[t, s]).unwrap());
            let y = scaled_dot_product_attention(&h(&q), &h(&k), &h(&v), mask.as_ref(), causal)
                .unwrap();
            let y = if transposed {
                y.transpose(2, 3).unwrap()
            } else {
                y
            };
            let w = Tensor::<f64>::rand_uniform(y.shape(), -1.0, 1.0, 5).unwrap();
            let g = y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
            let all = |t: &Tensor<f64>| t.to_vec().unwrap();
            let grad = |x: &Tensor<f64>| g.get(x).map(all).unwrap_or_default();
            vec![all(&y), grad(&q), grad(&k), grad(&v)]
        };
        let (a, c) = (grads(true), grads(false));
        for (what, (x, y)) in ["output", "dq", "dk", "dv"].iter().zip(a.iter().zip(&c)) {
            assert_eq!(x.len(), y.len(), "{dims:?} b {b} {what}");
            for (j, (p, r)) in x.iter().zip(y).enumerate() {
                assert!(
                    (p - r).abs() <= 1e-12 * (1.0 + r.abs()),
                    "{dims:?} b {b} causal {causal} transposed {transposed} {what}[{j}]: {p} vs {r}"
                );
            }
        }
    };
    check((40, 17, 8, 5), 2, false, false);
    check((40, 17, 8, 5), 2, false, true);
    check((20, 33, 6, 7), 3, true, true);
    for dims in [(3, 0, 4, 4), (0, 5, 4, 4), (4, 6, 0, 3), (4, 6, 3, 0)] {
        check(dims, 2, false, false);
    }
    check((5, 5, 4, 4), 0, true, false);
}

/// `fused64` matches `composed64` to 1e-12 and `fused32` matches it to 2e-5 (relative, plus
/// 1), value by value, for each named result.
fn assert_agree(names: &[&str], [fused64, composed64, fused32]: [&Vec<Vec<f64>>; 3], label: &str) {
    for (what, ((fa, fb), fc)) in names
        .iter()
        .zip(fused64.iter().zip(composed64).zip(fused32))
    {
        assert_eq!(fa.len(), fb.len(), "{label} {what}");
        assert_eq!(fc.len(), fb.len(), "{label} {what}");
        for (j, ((x, y), z)) in fa.iter().zip(fb).zip(fc).enumerate() {
            let at = format!("{label} {what}[{j}]");
            assert!(
                (x - y).abs() <= 1e-12 * (1.0 + y.abs()),
                "f64 {at}: {x} vs {y}"
            );
            assert!(
                (z - y).abs() <= 2e-5 * (1.0 + y.abs()),
                "f32 {at}: {z} vs {y}"
            );
        }
    }
}

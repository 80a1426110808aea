//! The direct kernels against the column-matrix path (in f64), on every tier this CPU runs.

use super::super::conv::{
    forward_cols, input_grad_cols, sum_parts, weight_grad_cols, Conv2dOptions, ConvGeom,
};
use super::*;

/// The tiers this CPU runs, whatever the limit in force.
pub(super) fn supported() -> Vec<Tier> {
    let mut t = Vec::new();
    if cfg!(target_arch = "x86_64") {
        if isa::detected() >= Isa::Avx2 {
            t.push(Tier::Avx2);
        }
        if isa::detected() >= Isa::Avx512 {
            t.push(Tier::Avx512);
        }
    }
    t
}

pub(super) fn values(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

pub(super) fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

pub(super) fn abs(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| x.abs()).collect()
}

/// `got` agrees with `want` where `scale` (the sum of |terms|) bounds the rounding; non-finite
/// values must be the same kind (NaN, +∞, −∞) in both.
fn agree(what: &str, got: &[f32], want: &[f64], scale: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        let (g, w) = (g as f64, w);
        if !w.is_finite() || !g.is_finite() {
            let kind = |v: f64| {
                (
                    v.is_nan(),
                    v.is_infinite() && v > 0.0,
                    v.is_infinite() && v < 0.0,
                )
            };
            assert_eq!(kind(g), kind(w), "{what}[{i}]: {g} against {w}");
            continue;
        }
        assert!(
            (g - w).abs() <= 4e-7 * s + 1e-30,
            "{what}[{i}]: {g} against {w} (scale {s})"
        );
    }
}

/// (n, c, h, w, o, kh, kw, padding, groups)
type Case = (
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    (usize, usize),
    usize,
);

const CASES: [Case; 11] = [
    (2, 1, 28, 28, 32, 3, 3, (1, 1), 1), // the CNN's first convolution
    (3, 8, 14, 14, 20, 3, 3, (1, 1), 1), // its second, narrower
    (2, 3, 5, 5, 7, 3, 3, (1, 1), 1),    // rows shorter than a vector
    (2, 2, 9, 33, 5, 3, 3, (1, 1), 1),   // rows of two vectors and a bit
    (1, 4, 7, 17, 9, 5, 3, (2, 0), 1),   // unequal kernel and padding
    (2, 4, 6, 6, 6, 3, 3, (1, 1), 2),    // groups
    (2, 6, 5, 8, 3, 2, 2, (0, 1), 3),    // even kernel, groups of one output channel
    (1, 2, 3, 3, 4, 3, 3, (0, 0), 1),    // a 1×1 output
    (2, 3, 1, 40, 5, 1, 5, (0, 2), 1),   // a conv1d
    (1, 13, 4, 20, 17, 3, 3, (2, 2), 1), // more padding than the kernel's reach minus one
    (9, 2, 4, 4, 3, 3, 3, (1, 1), 1),    // more samples than a weight-gradient chunk
];

fn geom(&(n, c, h, w, o, kh, kw, padding, groups): &Case) -> ConvGeom {
    let opts = Conv2dOptions {
        padding,
        groups,
        ..Default::default()
    };
    ConvGeom::new("test", &[n, c, h, w], &[o, c / groups, kh, kw], opts).unwrap()
}

/// `v` as the uninitialised output the kernels take (they start from no value of it).
pub(super) fn uninit(v: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: `MaybeUninit<f32>` has f32's layout, and the kernels only write finished values.
    unsafe { &mut *(v as *mut [f32] as *mut [MaybeUninit<f32>]) }
}

fn sizes(g: &ConvGeom) -> (usize, usize, usize) {
    let ckk = g.c / g.opts.groups * g.kh * g.kw;
    (g.n * g.c * g.h * g.w, g.o * ckk, g.n * g.o * g.oh * g.ow)
}

#[test]
fn forward_and_gradients_match_the_column_path_in_f64() {
    let tiers = supported();
    if tiers.is_empty() {
        eprintln!("skipped: this CPU has neither AVX2 nor AVX-512F");
    }
    for (ci, case) in CASES.iter().enumerate() {
        let g = geom(case);
        let (xn, wn, yn) = sizes(&g);
        let (x, w, gy) = (values(xn, 1), values(wn, 2), values(yn, 3));
        let bias = values(g.o, 4);
        let (xd, wd, gd, bd) = (wide(&x), wide(&w), wide(&gy), wide(&bias));
        let mut y_ref = vec![0.0; yn];
        forward_cols(&g, &xd, &wd, Some(&bd), &mut y_ref);
        let mut y_abs = vec![0.0; yn];
        forward_cols(&g, &abs(&xd), &abs(&wd), Some(&abs(&bd)), &mut y_abs);
        let mut dx_ref = vec![0.0; xn];
        input_grad_cols(&g, &gd, &wd, &mut dx_ref);
        let mut dx_abs = vec![0.0; xn];
        input_grad_cols(&g, &abs(&gd), &abs(&wd), &mut dx_abs);
        let mut dw_ref = vec![0.0; wn];
        weight_grad_cols(&g, &xd, &gd, &mut dw_ref);
        let mut dw_abs = vec![0.0; wn];
        weight_grad_cols(&g, &abs(&xd), &abs(&gd), &mut dw_abs);
        for &t in &tiers {
            let what = |op: &str| format!("case {ci} {case:?} on {t:?}: {op}");
            let mut y = vec![f32::NAN; yn];
            assert!(
                forward_on(t, &g, &x, &w, Some(&bias), uninit(&mut y)),
                "{}",
                what("applies")
            );
            agree(&what("forward"), &y, &y_ref, &y_abs);
            let mut dx = vec![f32::NAN; xn];
            assert!(
                input_grad_on(t, &g, &gy, &w, uninit(&mut dx)),
                "{}",
                what("applies")
            );
            agree(&what("input gradient"), &dx, &dx_ref, &dx_abs);
            let mut dw = vec![f32::NAN; wn];
            assert!(
                weight_grad_on(t, &g, &x, &gy, &mut dw, sum_parts),
                "{}",
                what("applies")
            );
            agree(&what("weight gradient"), &dw, &dw_ref, &dw_abs);
        }
    }
}

#[test]
fn non_finite_values_reach_the_same_outputs_as_the_column_path() {
    for &t in &supported() {
        let g = geom(&(2, 3, 6, 19, 4, 3, 3, (1, 1), 1));
        let (xn, wn, yn) = sizes(&g);
        let (mut x, w, mut gy) = (values(xn, 5), values(wn, 6), values(yn, 7));
        x[20] = f32::INFINITY;
        x[xn - 40] = f32::NAN;
        x[xn / 2] = f32::NEG_INFINITY;
        gy[33] = f32::NAN;
        gy[yn - 3] = f32::INFINITY;
        let (xd, wd, gd) = (wide(&x), wide(&w), wide(&gy));
        let mut y_ref = vec![0.0; yn];
        forward_cols(&g, &xd, &wd, None, &mut y_ref);
        let mut y = vec![0.0; yn];
        assert!(forward_on(t, &g, &x, &w, None, uninit(&mut y)));
        let mut y_abs = vec![0.0; yn];
        forward_cols(&g, &abs(&xd), &abs(&wd), None, &mut y_abs);
        agree("forward", &y, &y_ref, &y_abs);
        // Lanes past a row's end hold the next row's values (here ±∞ or NaN): the weight
        // gradient must not read them, whether in the input or the output gradient.
        let mut dw_ref = vec![0.0; wn];
        weight_grad_cols(&g, &xd, &gd, &mut dw_ref);
        let mut dw = vec![0.0; wn];
        assert!(weight_grad_on(t, &g, &x, &gy, &mut dw, sum_parts));
        let mut dw_abs = vec![0.0; wn];
        weight_grad_cols(&g, &abs(&xd), &abs(&gd), &mut dw_abs);
        agree("weight gradient", &dw, &dw_ref, &dw_abs);
        let mut dx_ref = vec![0.0; xn];
        input_grad_cols(&g, &gd, &wd, &mut dx_ref);
        let mut dx = vec![0.0; xn];
        assert!(input_grad_on(t, &g, &gy, &w, uninit(&mut dx)));
        let mut dx_abs = vec![0.0; xn];
        input_grad_cols(&g, &abs(&gd), &abs(&wd), &mut dx_abs);
        agree("input gradient", &dx, &dx_ref, &dx_abs);
    }
}

#[test]
fn results_are_bit_identical_for_any_thread_count_and_the_forward_on_either_tier() {
    let g = geom(&(11, 5, 9, 21, 7, 3, 3, (1, 1), 1));
    let (xn, wn, yn) = sizes(&g);
    let (x, w, gy) = (values(xn, 8), values(wn, 9), values(yn, 10));
    let mut forwards = Vec::new();
    for &t in &supported() {
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let (mut y, mut dx, mut dw) = (vec![0.0; yn], vec![0.0; xn], vec![0.0; wn]);
                assert!(forward_on(t, &g, &x, &w, None, uninit(&mut y)));
                assert!(input_grad_on(t, &g, &gy, &w, uninit(&mut dx)));
                assert!(weight_grad_on(t, &g, &x, &gy, &mut dw, sum_parts));
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                (bits(&y), bits(&dx), bits(&dw))
            })
        };
        let one = run(1);
        for threads in [2, 3, 4] {
            assert!(
                run(threads) == one,
                "{t:?}: {threads} threads differ from one"
            );
        }
        forwards.push((one.0, one.1));
    }
    if let [a, b] = &forwards[..] {
        assert!(
            a == b,
            "the forward pass and input gradient differ between the tiers"
        );
    }
}

#[test]
fn other_convolutions_are_left_to_the_column_path() {
    for &t in &supported() {
        let strided = Conv2dOptions {
            stride: (2, 1),
            ..Default::default()
        };
        let dilated = Conv2dOptions {
            dilation: (1, 2),
            ..Default::default()
        };
        for (opts, k) in [(strided, 3), (dilated, 3), (Conv2dOptions::default(), 1)] {
            let g = ConvGeom::new("test", &[1, 2, 8, 8], &[3, 2, k, k], opts).unwrap();
            let (xn, wn, yn) = sizes(&g);
            let mut y = vec![0.0; yn];
            assert!(!forward_on(
                t,
                &g,
                &values(xn, 1),
                &values(wn, 2),
                None,
                uninit(&mut y)
            ));
        }
        // Padding of a whole kernel or more: the input gradient would need cropping.
        let wide_pad = Conv2dOptions {
            padding: (3, 1),
            ..Default::default()
        };
        let g = ConvGeom::new("test", &[1, 2, 4, 4], &[3, 2, 3, 3], wide_pad).unwrap();
        let (xn, wn, yn) = sizes(&g);
        let mut dx = vec![0.0; xn];
        assert!(!input_grad_on(
            t,
            &g,
            &values(yn, 1),
            &values(wn, 2),
            uninit(&mut dx)
        ));
    }
}

/// The weight gradient's whole-vector input reads (taken where every input value is finite)
/// give the bits of its masked reads: rows of 19 and 14 leave partial vectors on both tiers,
/// two groups put another group's planes past a row's end, and the values include zeros of
/// both signs (an accumulator lane must never turn −0).
#[cfg(target_arch = "x86_64")]
#[test]
fn whole_vector_reads_give_the_bits_of_masked_reads() {
    for &t in &supported() {
        for case in [
            (3, 4, 6, 19, 6, 3, 3, (1, 1), 2),
            (2, 3, 14, 14, 5, 3, 2, (1, 0), 1),
        ] {
            let g = geom(&case);
            let p = Plan::new(&g, t).unwrap();
            let (xn, _, yn) = sizes(&g);
            let (mut x, mut gy) = (values(xn, 11), values(yn, 12));
            for i in (0..xn).step_by(7) {
                x[i] = if i % 2 == 0 { 0.0 } else { -0.0 };
            }
            for i in (0..yn).step_by(5) {
                gy[i] = -0.0;
            }
            let (groups, chw) = (g.opts.groups, g.c * g.h * g.w);
            let (cg, og, l) = (g.c / groups, g.o / groups, g.l());
            let taps = p.taps(&g);
            let mut buf = vec![0.0f32; g.n * p.sample];
            for s in 0..g.n {
                assert!(p.pad(
                    &g,
                    &x[s * chw..][..chw],
                    &mut buf[s * p.sample..][..p.sample]
                ));
            }
            let part = |masked: bool| {
                let mut out = vec![f32::NAN; g.o * taps.len()];
                for gi in 0..groups {
                    let xp = buf[gi * cg * p.hp * p.wp..].as_ptr();
                    let gp = gy[gi * og * l..].as_ptr();
                    let part = &mut out[gi * og * taps.len()..][..og * taps.len()];
                    let ops = (xp, gp, g.n, masked);
                    // SAFETY: the tier runs here; the buffers are the kernel's own layout.
                    unsafe {
                        match t {
                            Tier::Avx512 => wgt_avx512(&p, &g, &taps, ops, part),
                            Tier::Avx2 => wgt_avx2(&p, &g, &taps, ops, part),
                        }
                    }
                }
                out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            };
            assert_eq!(part(true), part(false), "{t:?} {case:?}");
        }
    }
    // A non-finite input value is flagged by the padded copy.
    for &t in &supported() {
        let g = geom(&(1, 2, 5, 9, 3, 3, 3, (1, 1), 1));
        let p = Plan::new(&g, t).unwrap();
        let (xn, _, _) = sizes(&g);
        let mut buf = vec![0.0f32; p.sample];
        for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
            for at in [0, 8, 44, xn - 1] {
                let mut x = values(xn, 13);
                x[at] = bad;
                assert!(!p.pad(&g, &x, &mut buf), "{t:?}: {bad} at {at} not flagged");
            }
        }
        assert!(p.pad(&g, &values(xn, 13), &mut buf));
    }
}

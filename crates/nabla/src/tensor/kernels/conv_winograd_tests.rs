//! The Winograd transform against the column-matrix path (in f64) and the direct kernels, on
//! every tier this CPU runs.

use super::super::conv::{forward_cols, input_grad_cols, Conv2dOptions, ConvGeom};
use super::tests::{abs, supported, uninit, values, wide};
use super::*;

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// `got` agrees with `want` within 10⁻⁶ of the largest sum of |terms| in its output plane
/// (`plane` values): the transforms add the values of a tile's whole 4×4 input block, so the
/// rounding of an output scales with its neighbours' terms as well as its own (measured here:
/// under 2·10⁻⁷ of the plane's largest sum; the direct kernels' bound is 4·10⁻⁷ of the
/// output's own).
fn agree(what: &str, got: &[f32], want: &[f64], scale: &[f64], plane: usize) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (p, ((g, w), s)) in got
        .chunks(plane)
        .zip(want.chunks(plane))
        .zip(scale.chunks(plane))
        .enumerate()
    {
        let top = s.iter().cloned().fold(0.0, f64::max);
        for (i, (&g, &w)) in g.iter().zip(w).enumerate() {
            assert!(
                (g as f64 - w).abs() <= 1e-6 * top + 1e-30,
                "{what}: plane {p} [{i}]: {g} against {w} (plane scale {top})"
            );
        }
    }
}

/// (n, c, h, w, o, padding, groups): 3×3 kernels.
type Case = (usize, usize, usize, usize, usize, (usize, usize), usize);

const CASES: [Case; 9] = [
    (3, 32, 14, 14, 64, (1, 1), 1), // the CNN's second convolution
    (2, 16, 7, 9, 16, (1, 1), 1),   // odd output sizes: tiles past the planes' edges
    (2, 16, 6, 7, 32, (0, 0), 1),   // no padding
    (1, 16, 5, 4, 16, (2, 2), 1),   // padding of 2; rows under a transposed block
    (1, 16, 3, 5, 16, (3, 3), 1),   // padding of 3 (the input gradient: the column path)
    (2, 32, 6, 6, 64, (1, 0), 2),   // groups, unequal padding
    (1, 16, 12, 30, 16, (1, 1), 1), // more tiles than a block
    (2, 16, 3, 3, 32, (0, 0), 1),   // a 1×1 output: planes under a transposed block
    (1, 16, 5, 6, 48, (1, 1), 1),   // 3 vectors of outputs on AVX-512: tiles of 2 and 1
];

fn geom(&(n, c, h, w, o, padding, groups): &Case) -> ConvGeom {
    let opts = Conv2dOptions {
        padding,
        groups,
        ..Default::default()
    };
    ConvGeom::new("test", &[n, c, h, w], &[o, c / groups, 3, 3], opts).unwrap()
}

fn sizes(g: &ConvGeom) -> (usize, usize, usize) {
    let ckk = g.c / g.opts.groups * 9;
    (g.n * g.c * g.h * g.w, g.o * ckk, g.n * g.o * g.oh * g.ow)
}

/// Every sample of `x` through the plan for `(g, w, bias)` on `t`: the transform's own
/// results (`None` for a sample it hands back).
fn transform(t: Tier, g: &ConvGeom, x: &[f32], w: &[f32], bias: &[f32]) -> Vec<Option<Vec<u32>>> {
    let plan = winograd::Wino::new(g, t, w, Some(bias), PAD_MAX).expect("applies");
    let (chw, sample) = (g.c * g.h * g.w, g.o * g.l());
    let mut buf = vec![f32::NAN; plan.scratch()];
    (0..g.n)
        .map(|s| {
            let mut y = vec![f32::NAN; sample];
            plan.sample(g, &x[s * chw..][..chw], bias, uninit(&mut y), &mut buf)
                .then(|| bits(&y))
        })
        .collect()
}

/// The input gradient's convolution through the transform, sample by sample.
fn transform_input_grad(t: Tier, g: &ConvGeom, gy: &[f32], w: &[f32]) -> Vec<Option<Vec<u32>>> {
    let (tg, wf) = transposed(g, w, t).expect("the direct kernels take the input gradient");
    transform(t, &tg, gy, &wf, &vec![0.0; tg.o])
}

#[test]
fn winograd_matches_the_column_path_in_f64() {
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
        for &t in &supported() {
            let what = |op: &str| format!("case {ci} {case:?} on {t:?}: {op}");
            // The transform's own results, then the entry points take them.
            let own: Vec<u32> = transform(t, &g, &x, &w, &bias)
                .into_iter()
                .flat_map(|s| s.expect("a finite sample is not handed back"))
                .collect();
            let y: Vec<f32> = own.iter().map(|&b| f32::from_bits(b)).collect();
            agree(&what("forward"), &y, &y_ref, &y_abs, g.l());
            let mut y2 = vec![f32::NAN; yn];
            assert!(forward_on(t, &g, &x, &w, Some(&bias), uninit(&mut y2)));
            assert_eq!(own, bits(&y2), "{}", what("forward_on takes it"));
            let mut dx = vec![f32::NAN; xn];
            if case.5 .0 >= 3 {
                // Padding of a whole kernel: the input gradient takes the column path.
                assert!(!input_grad_on(t, &g, &gy, &w, uninit(&mut dx)));
                continue;
            }
            assert!(input_grad_on(t, &g, &gy, &w, uninit(&mut dx)));
            agree(&what("input gradient"), &dx, &dx_ref, &dx_abs, g.h * g.w);
            let own: Vec<u32> = transform_input_grad(t, &g, &gy, &w)
                .into_iter()
                .flat_map(|s| s.expect("a finite sample is not handed back"))
                .collect();
            assert_eq!(own, bits(&dx), "{}", what("input_grad_on takes it"));
        }
    }
}

#[test]
fn winograd_is_bit_identical_for_any_thread_count_and_on_either_tier() {
    let g = geom(&(11, 16, 9, 21, 32, (1, 1), 1));
    let (xn, wn, yn) = sizes(&g);
    let (x, w, gy) = (values(xn, 8), values(wn, 9), values(yn, 10));
    let mut results = Vec::new();
    for &t in &supported() {
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let (mut y, mut dx) = (vec![0.0; yn], vec![0.0; xn]);
                assert!(forward_on(t, &g, &x, &w, None, uninit(&mut y)));
                assert!(input_grad_on(t, &g, &gy, &w, uninit(&mut dx)));
                (bits(&y), bits(&dx))
            })
        };
        let one = run(1);
        for threads in [2, 3] {
            assert!(run(threads) == one, "{t:?}: {threads} threads differ");
        }
        results.push(one);
    }
    if let [a, b] = &results[..] {
        assert!(a == b, "the Winograd results differ between the tiers");
    }
}

/// Where the transform would spread a non-finite value (or its sums overflow where the direct
/// ones do not), the sample is computed by the direct kernels: its results are theirs, bit for
/// bit, and the other samples keep the transform's.
#[test]
fn non_finite_inputs_and_overflow_fall_back_to_the_direct_kernels() {
    for &t in &supported() {
        // Rows of 10 (transposed blocks) and of 5 (one value at a time); two groups, the bad
        // value in either.
        for case in [(3, 16, 6, 10, 16, (1, 1), 1), (3, 32, 4, 5, 32, (1, 1), 2)] {
            let g = geom(&case);
            let (xn, wn, yn) = sizes(&g);
            let (chw, sample) = (g.c * g.h * g.w, g.o * g.l());
            let (w, bias) = (values(wn, 11), values(g.o, 14));
            let direct = |x: &[f32]| {
                let mut y = vec![0.0; yn];
                let b = Some(&bias[..]);
                let ok = forward_each(t, &g, x, &w, b, uninit(&mut y), &|_, _| {}, false);
                assert!(ok);
                bits(&y)
            };
            let chosen = |x: &[f32]| {
                let mut y = vec![0.0; yn];
                assert!(forward_on(t, &g, x, &w, Some(&bias), uninit(&mut y)));
                bits(&y)
            };
            for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
                // In sample 1 only: in the first group's planes, the last group's, the last value.
                for at in [chw, chw + 59, 2 * chw - 13, 2 * chw - 1] {
                    let mut x = values(xn, 12);
                    x[at] = bad;
                    let own = transform(t, &g, &x, &w, &bias);
                    assert!(
                        own[1].is_none(),
                        "{t:?} {case:?}: {bad} at {at} not handed back"
                    );
                    let (d, c) = (direct(&x), chosen(&x));
                    let what = format!("{t:?} {case:?}: {bad} at {at}");
                    assert_eq!(d[sample..2 * sample], c[sample..2 * sample], "{what}");
                    for s in [0, 2] {
                        let kept = own[s]
                            .as_ref()
                            .expect("a finite sample keeps the transform");
                        assert_eq!(kept[..], c[s * sample..][..sample], "{what}: sample {s}");
                    }
                }
            }
        }
        // The input gradient: a non-finite output gradient in sample 1.
        let g = geom(&(3, 16, 6, 10, 32, (1, 1), 1));
        let (xn, wn, yn) = sizes(&g);
        let (w, mut gy) = (values(wn, 15), values(yn, 16));
        gy[yn / 2] = f32::INFINITY;
        let own = transform_input_grad(t, &g, &gy, &w);
        assert!(own[1].is_none() && own[0].is_some() && own[2].is_some());
        let mut dx = vec![0.0; xn];
        assert!(input_grad_on(t, &g, &gy, &w, uninit(&mut dx)));
        let mut dx_ref = vec![0.0; xn];
        input_grad_cols(&g, &wide(&gy), &wide(&w), &mut dx_ref);
        let kind = |v: f64| (v.is_nan(), v.is_infinite() && v > 0.0, v < -f64::MAX);
        let chw = g.c * g.h * g.w;
        for (i, (&d, &r)) in dx.iter().zip(&dx_ref).enumerate().skip(chw).take(chw) {
            if !r.is_finite() || !d.is_finite() {
                assert_eq!(kind(d as f64), kind(r), "{t:?}: input gradient [{i}]");
            }
        }
        // Values near f32's largest: the transform's sums overflow where the direct sums,
        // through a kernel of one small centre tap, do not.
        let g = geom(&(3, 16, 6, 10, 16, (1, 1), 1));
        let (xn, wn, yn) = sizes(&g);
        let x: Vec<f32> = (0..xn)
            .map(|i| if i % 2 == 0 { 3e38 } else { -3e38 })
            .collect();
        let mut centre = vec![0.0f32; wn];
        for k in (4..wn).step_by(9) {
            centre[k] = 1e-3;
        }
        let run = |winograd: bool| {
            let mut y = vec![0.0; yn];
            let ok = forward_each(
                t,
                &g,
                &x,
                &centre,
                None,
                uninit(&mut y),
                &|_, _| {},
                winograd,
            );
            assert!(ok);
            bits(&y)
        };
        let d = run(false);
        assert!(d.iter().all(|&b| f32::from_bits(b).is_finite()));
        assert_eq!(d, run(true), "{t:?}: overflow");
        // A non-finite weight or bias: no transform at all.
        let w = values(wn, 11);
        let mut wbad = w.clone();
        wbad[5] = f32::INFINITY;
        assert!(winograd::Wino::new(&g, t, &wbad, None, PAD_MAX).is_none());
        let mut bbad = values(g.o, 3);
        bbad[7] = f32::NAN;
        assert!(winograd::Wino::new(&g, t, &w, Some(&bbad), PAD_MAX).is_none());
        assert!(winograd::Wino::new(&g, t, &w, Some(&values(g.o, 3)), PAD_MAX).is_some());
    }
}

#[test]
fn winograd_takes_only_what_it_computes_and_the_same_shapes_on_both_tiers() {
    let plain = Conv2dOptions::default();
    let dilated = Conv2dOptions {
        dilation: (2, 2),
        ..Default::default()
    };
    let strided = Conv2dOptions {
        stride: (2, 2),
        ..Default::default()
    };
    let grouped = Conv2dOptions {
        groups: 2,
        ..Default::default()
    };
    for &t in &supported() {
        let other = [
            (plain, [2, 16, 6, 6], [16, 16, 5, 5]), // 5×5
            (plain, [2, 16, 6, 6], [16, 16, 3, 1]), // 3×1
            (plain, [1, 8, 6, 6], [16, 8, 3, 3]),   // 8 channels: an AVX2 vector, not 16
            (plain, [1, 24, 6, 6], [16, 24, 3, 3]), // 24
            (plain, [1, 16, 6, 6], [8, 16, 3, 3]),  // 8 outputs
            (plain, [1, 17, 6, 6], [16, 17, 3, 3]), // 17
            (strided, [1, 16, 6, 6], [16, 16, 3, 3]),
            (dilated, [1, 16, 8, 8], [16, 16, 3, 3]),
            (grouped, [1, 16, 6, 6], [32, 8, 3, 3]), // 8 channels per group
        ];
        for (opts, xs, ws) in other {
            let g = ConvGeom::new("test", &xs, &ws, opts).unwrap();
            let w = values(ws.iter().product(), 1);
            assert!(
                winograd::Wino::new(&g, t, &w, None, PAD_MAX).is_none(),
                "{t:?}: {xs:?} {ws:?} {opts:?}"
            );
        }
        // Scratch over the bound.
        let g = geom(&(1, 16, 14, 14, 16, (1, 1), 1));
        let w = values(16 * 16 * 9, 1);
        assert!(winograd::Wino::new(&g, t, &w, None, 1000).is_none());
        assert!(winograd::Wino::new(&g, t, &w, None, PAD_MAX).is_some());
    }
}

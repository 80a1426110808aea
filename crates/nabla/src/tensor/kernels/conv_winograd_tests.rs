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

const CASES: [Case; 7] = [
    (3, 32, 14, 14, 64, (1, 1), 1), // the CNN's second convolution
    (2, 16, 7, 9, 16, (1, 1), 1),   // odd output sizes: tiles past the planes' edges
    (2, 16, 6, 7, 32, (0, 0), 1),   // no padding
    (1, 16, 5, 4, 16, (2, 2), 1),   // padding of 2
    (2, 32, 6, 6, 64, (1, 0), 2),   // groups, unequal padding
    (1, 16, 12, 30, 16, (1, 1), 1), // more tiles than a block
    (2, 16, 3, 3, 32, (0, 0), 1),   // a 1×1 output: planes under a transposed block
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
            // The transform applies to this geometry (so the results below are its own).
            let plan = winograd::Wino::new(&g, t, &w, PAD_MAX).expect("applies");
            let mut y = vec![f32::NAN; yn];
            let sample = g.o * g.l();
            let mut buf = vec![f32::NAN; plan.scratch()];
            let chw = g.c * g.h * g.w;
            for s in 0..g.n {
                let ys = uninit(&mut y[s * sample..][..sample]);
                assert!(plan.sample(&g, &x[s * chw..][..chw], &bias, ys, &mut buf));
            }
            agree(&what("forward"), &y, &y_ref, &y_abs, g.l());
            let mut y2 = vec![f32::NAN; yn];
            assert!(forward_on(t, &g, &x, &w, Some(&bias), uninit(&mut y2)));
            assert_eq!(bits(&y), bits(&y2), "{}", what("forward_on takes it"));
            let mut dx = vec![f32::NAN; xn];
            assert!(input_grad_on(t, &g, &gy, &w, uninit(&mut dx)));
            agree(&what("input gradient"), &dx, &dx_ref, &dx_abs, g.h * g.w);
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

/// Where the transform would spread a non-finite value (or overflow where the direct sum does
/// not), the sample is computed by the direct kernels: the results are theirs, bit for bit.
#[test]
fn non_finite_inputs_and_overflow_fall_back_to_the_direct_kernels() {
    for &t in &supported() {
        let g = geom(&(3, 16, 6, 10, 16, (1, 1), 1));
        let (xn, wn, yn) = sizes(&g);
        let chw = g.c * g.h * g.w;
        let w = values(wn, 11);
        let direct = |x: &[f32], w: &[f32]| {
            let mut y = vec![0.0; yn];
            let ok = forward_each(t, &g, x, w, None, uninit(&mut y), &|_, _| {}, false);
            assert!(ok);
            bits(&y)
        };
        let winograd = |x: &[f32], w: &[f32]| {
            let mut y = vec![0.0; yn];
            assert!(forward_on(t, &g, x, w, None, uninit(&mut y)));
            bits(&y)
        };
        for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
            // In sample 1 only: samples 0 and 2 keep the transform.
            for at in [chw, chw + 59, 2 * chw - 1] {
                let mut x = values(xn, 12);
                x[at] = bad;
                let plan = winograd::Wino::new(&g, t, &w, PAD_MAX).unwrap();
                let mut buf = vec![0.0; plan.scratch()];
                let mut y = vec![0.0; g.o * g.l()];
                assert!(!plan.sample(&g, &x[chw..][..chw], &[0.0; 16], uninit(&mut y), &mut buf));
                let (d, wi) = (direct(&x, &w), winograd(&x, &w));
                let sample = g.o * g.l();
                assert_eq!(
                    d[sample..2 * sample],
                    wi[sample..2 * sample],
                    "{t:?} {bad} at {at}"
                );
            }
        }
        // Values near f32's largest: the transform's sums overflow where the direct sums,
        // through a kernel of one small centre tap, do not.
        let x: Vec<f32> = (0..xn)
            .map(|i| if i % 2 == 0 { 3e38 } else { -3e38 })
            .collect();
        let mut centre = vec![0.0f32; wn];
        for k in (4..wn).step_by(9) {
            centre[k] = 1e-3;
        }
        let d = direct(&x, &centre);
        assert!(d.iter().all(|&b| f32::from_bits(b).is_finite()));
        assert_eq!(d, winograd(&x, &centre), "{t:?}: overflow");
        // A non-finite weight: no transform at all.
        let mut wbad = w.clone();
        wbad[5] = f32::INFINITY;
        assert!(winograd::Wino::new(&g, t, &wbad, PAD_MAX).is_none());
    }
}

#[test]
fn winograd_takes_only_what_it_computes() {
    for &t in &supported() {
        let lanes = t.lanes();
        let other = [
            (
                Conv2dOptions::default(),
                [8, lanes, 6, 6],
                [lanes, lanes, 5, 5],
            ), // 5×5
            (
                Conv2dOptions::default(),
                [1, lanes + 1, 6, 6],
                [lanes, lanes + 1, 3, 3],
            ), // channels
            (
                Conv2dOptions::default(),
                [1, lanes, 6, 6],
                [lanes + 2, lanes, 3, 3],
            ), // outputs
            (
                Conv2dOptions {
                    stride: (2, 2),
                    ..Default::default()
                },
                [1, lanes, 6, 6],
                [lanes, lanes, 3, 3],
            ),
        ];
        for (opts, xs, ws) in other {
            let g = ConvGeom::new("test", &xs, &ws, opts).unwrap();
            let w = values(ws.iter().product(), 1);
            assert!(
                winograd::Wino::new(&g, t, &w, PAD_MAX).is_none(),
                "{xs:?} {ws:?}"
            );
        }
    }
}

//! Property tests over random shapes (seeded, so failures reproduce): broadcasting and
//! reductions against naive reference implementations, and their gradients.

mod common;
use common::unravel;
use nabla::testing::{assert_close, gradcheck, GradcheckOptions};
use nabla::{Rng, Tensor};

const CASES: usize = 200;

fn random_shape(rng: &mut Rng, max_rank: usize) -> Vec<usize> {
    let rank = rng.below(max_rank + 1);
    (0..rank).map(|_| 1 + rng.below(4)).collect()
}

/// Two shapes that broadcast together: start from an output shape, then for each operand drop
/// some leading axes and set some dimensions to 1.
fn broadcast_pair(rng: &mut Rng) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let out = random_shape(rng, 4);
    let derive = |rng: &mut Rng| -> Vec<usize> {
        let drop = rng.below(out.len() + 1);
        out[drop..]
            .iter()
            .map(|&d| if rng.below(3) == 0 { 1 } else { d })
            .collect()
    };
    let a = derive(rng);
    let b = derive(rng);
    let rank = a.len().max(b.len());
    let pick = |s: &Vec<usize>, i: usize| {
        let off = rank - s.len();
        if i < off {
            1
        } else {
            s[i - off]
        }
    };
    let real_out = (0..rank).map(|i| pick(&a, i).max(pick(&b, i))).collect();
    (a, b, real_out)
}

/// Element of a broadcast operand at an output index (naive reference).
fn at_broadcast(data: &[f64], shape: &[usize], out_idx: &[usize]) -> f64 {
    let off = out_idx.len() - shape.len();
    let mut flat = 0;
    for (d, &s) in shape.iter().enumerate() {
        let i = if s == 1 { 0 } else { out_idx[d + off] };
        flat = flat * s + i;
    }
    data[flat]
}

#[test]
fn broadcasting_matches_naive_reference() {
    let mut rng = Rng::new(1);
    for case in 0..CASES {
        let (sa, sb, so) = broadcast_pair(&mut rng);
        let a = Tensor::<f64>::randn(&sa, 0.0, 1.0, case as u64).unwrap();
        let b = Tensor::<f64>::randn(&sb, 0.0, 1.0, 1000 + case as u64).unwrap();
        let got = a.mul(&b).unwrap().sub(&b).unwrap();
        assert_eq!(got.shape(), &so[..], "{sa:?} {sb:?}");
        let (da, db) = (a.to_vec().unwrap(), b.to_vec().unwrap());
        let n: usize = so.iter().product();
        let want: Vec<f64> = (0..n)
            .map(|i| {
                let idx = unravel(i, &so);
                let (x, y) = (at_broadcast(&da, &sa, &idx), at_broadcast(&db, &sb, &idx));
                x * y - y
            })
            .collect();
        assert_eq!(got.to_vec().unwrap(), want, "shapes {sa:?} and {sb:?}");
        // broadcast in the other direction gives the same result
        assert_eq!(b.mul(&a).unwrap().shape(), &so[..]);
        // broadcast_to each operand agrees with implicit broadcasting
        let ea = a.broadcast_to(&so).unwrap();
        assert_eq!(ea.mul(&b).unwrap().to_vec(), a.mul(&b).unwrap().to_vec());
    }
}

#[test]
fn broadcast_gradients_sum_over_repeats() {
    // d/da Σ (a + b) = (number of times each element of a is repeated) = numel(out)/numel(a)
    let mut rng = Rng::new(2);
    for _ in 0..CASES {
        let (sa, sb, so) = broadcast_pair(&mut rng);
        let a = Tensor::<f64>::zeros(&sa).unwrap().requires_grad();
        let b = Tensor::<f64>::zeros(&sb).unwrap().requires_grad();
        let g = a.add(&b).unwrap().sum_all().unwrap().backward().unwrap();
        let n: usize = so.iter().product();
        let ga = g.get(&a).unwrap();
        let gb = g.get(&b).unwrap();
        assert_eq!(ga.shape(), &sa[..]);
        assert_eq!(gb.shape(), &sb[..]);
        let ra = (n / sa.iter().product::<usize>()) as f64;
        assert!(
            ga.to_vec().unwrap().iter().all(|&v| v == ra),
            "{sa:?} in {so:?}"
        );
        let rb = (n / sb.iter().product::<usize>()) as f64;
        assert!(
            gb.to_vec().unwrap().iter().all(|&v| v == rb),
            "{sb:?} in {so:?}"
        );
    }
}

#[test]
fn broadcast_mul_div_pass_gradcheck_on_random_shapes() {
    let mut rng = Rng::new(3);
    for case in 0..40 {
        let (sa, sb, _) = broadcast_pair(&mut rng);
        let a = Tensor::<f64>::randn(&sa, 0.0, 1.0, case).unwrap();
        let b = Tensor::<f64>::rand_uniform(&sb, 0.5, 2.0, 100 + case).unwrap();
        let r = gradcheck(
            |t| {
                t[0].mul(&t[1])?
                    .div(&t[1].add_scalar(1.0).unwrap())?
                    .sub(&t[0])
            },
            &[a, b],
            &GradcheckOptions::default(),
        )
        .unwrap();
        assert!(r.passed, "{sa:?} {sb:?}: {r}");
    }
}

fn random_axes(rng: &mut Rng, rank: usize) -> Vec<usize> {
    let mut axes: Vec<usize> = (0..rank).filter(|_| rng.below(2) == 0).collect();
    if axes.is_empty() {
        axes.push(rng.below(rank));
    }
    axes
}

#[test]
fn reductions_match_naive_reference() {
    let mut rng = Rng::new(4);
    for case in 0..CASES {
        let mut shape = random_shape(&mut rng, 4);
        if shape.is_empty() {
            shape.push(3);
        }
        let axes = random_axes(&mut rng, shape.len());
        let keepdim = rng.below(2) == 0;
        let x = Tensor::<f64>::randn(&shape, 0.0, 1.0, case as u64).unwrap();
        let s = x.sum(&axes, keepdim).unwrap();
        let m = x.max(&axes, keepdim).unwrap();
        let kept: Vec<usize> = shape
            .iter()
            .enumerate()
            .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
            .collect();
        let n_out: usize = kept.iter().product();
        let mut want_s = vec![0.0; n_out];
        let mut want_m = vec![f64::NEG_INFINITY; n_out];
        for (i, &v) in x.to_vec().unwrap().iter().enumerate() {
            let idx = unravel(i, &shape);
            let mut o = 0;
            for (d, &k) in kept.iter().enumerate() {
                o = o * k + if k == 1 { 0 } else { idx[d] };
            }
            want_s[o] += v;
            want_m[o] = want_m[o].max(v);
        }
        let want_shape: Vec<usize> = if keepdim {
            kept.clone()
        } else {
            shape
                .iter()
                .enumerate()
                .filter(|(i, _)| !axes.contains(i))
                .map(|(_, &d)| d)
                .collect()
        };
        assert_eq!(s.shape(), &want_shape[..]);
        let want_s = Tensor::from_vec(want_s, &want_shape).unwrap();
        assert_close(&s, &want_s, 1e-12, 1e-12).unwrap();
        assert_eq!(
            m.to_vec().unwrap(),
            want_m,
            "max of {shape:?} over {axes:?}"
        );
        let count: usize = axes.iter().map(|&a| shape[a]).product();
        let mean = x.mean(&axes, keepdim).unwrap();
        assert_close(
            &mean,
            &want_s.mul_scalar(1.0 / count as f64).unwrap(),
            1e-12,
            1e-12,
        )
        .unwrap();
    }
}

#[test]
fn reduction_gradients_on_random_shapes() {
    let mut rng = Rng::new(5);
    for case in 0..40 {
        let mut shape = random_shape(&mut rng, 3);
        if shape.is_empty() {
            shape.push(2);
        }
        let axes = random_axes(&mut rng, shape.len());
        let keepdim = rng.below(2) == 0;
        let n: usize = shape.iter().product();
        // distinct values so max has a unique arg-max
        let mut vals: Vec<f64> = (0..n).map(|i| i as f64 * 0.37).collect();
        rng.shuffle(&mut vals);
        let x = Tensor::<f64>::from_vec(vals, &shape).unwrap();
        let axes2 = axes.clone();
        let r = gradcheck(
            move |t| {
                let s = t[0].sum(&axes2, keepdim)?;
                let m = t[0].max(&axes2, keepdim)?;
                s.mul(&m)
            },
            &[x],
            &GradcheckOptions::default(),
        )
        .unwrap();
        assert!(r.passed, "case {case}: {shape:?} over {axes:?}: {r}");
    }
}

#[test]
fn softmax_rows_sum_to_one_and_permute_round_trips() {
    let mut rng = Rng::new(6);
    for case in 0..CASES {
        let mut shape = random_shape(&mut rng, 4);
        if shape.is_empty() {
            shape.push(4);
        }
        let axis = rng.below(shape.len());
        let x = Tensor::<f64>::randn(&shape, 0.0, 5.0, case as u64).unwrap();
        let p = x.softmax(axis).unwrap();
        let sums = p.sum(&[axis], false).unwrap();
        assert!(sums
            .to_vec()
            .unwrap()
            .iter()
            .all(|s| (s - 1.0).abs() < 1e-12));
        let lp = x.log_softmax(axis).unwrap();
        assert_close(&lp.exp().unwrap(), &p, 1e-12, 1e-12).unwrap();
        let mut perm: Vec<usize> = (0..shape.len()).collect();
        rng.shuffle(&mut perm);
        let mut inv = vec![0; perm.len()];
        for (i, &q) in perm.iter().enumerate() {
            inv[q] = i;
        }
        let back = x.permute(&perm).unwrap().permute(&inv).unwrap();
        assert_eq!(back.to_vec(), x.to_vec());
    }
}

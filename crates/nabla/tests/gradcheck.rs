//! Finite-difference gradient checks (f64) for every differentiable op.

use std::collections::BTreeSet;

use nabla::autograd::{grad, GradOptions};
use nabla::testing::{gradcheck, gradgradcheck, run_op_gradchecks, GradcheckOptions};
use nabla::{OpKind, Tensor};

#[test]
fn every_op_case_passes_gradcheck() {
    let checks = run_op_gradchecks().unwrap();
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.report.passed)
        .map(|c| format!("{}: {}", c.name, c.report))
        .collect();
    assert!(
        failed.is_empty(),
        "failed gradchecks:\n{}",
        failed.join("\n")
    );
    assert!(checks.iter().all(|c| c.report.checked > 0));
}

#[test]
fn every_op_case_passes_gradgradcheck() {
    let checks = run_op_gradchecks().unwrap();
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.second.passed)
        .map(|c| format!("{}: {}", c.name, c.second))
        .collect();
    assert!(
        failed.is_empty(),
        "failed second-order checks:\n{}",
        failed.join("\n")
    );
}

#[test]
fn every_op_kind_has_a_first_and_second_order_case() {
    let covered: BTreeSet<OpKind> = run_op_gradchecks()
        .unwrap()
        .into_iter()
        .filter(|c| c.report.checked > 0 && c.second.checked > 0)
        .flat_map(|c| c.kinds)
        .collect();
    let missing: Vec<&str> = OpKind::ALL
        .iter()
        .filter(|k| !covered.contains(k))
        .map(|k| k.name())
        .collect();
    assert!(
        missing.is_empty(),
        "ops without a first- and second-order gradcheck case: {missing:?}"
    );
}

#[test]
fn gradcheck_detects_a_wrong_gradient() {
    // relu at exactly 0: the analytic derivative is the convention 0, the central difference
    // sees the average slope 0.5. gradcheck must report the disagreement.
    let x = Tensor::<f64>::from_vec(vec![0.0, 1.0], &[2]).unwrap();
    let report = gradcheck(
        |t| t[0].relu().unwrap().sum_all(),
        &[x],
        &GradcheckOptions::default(),
    )
    .unwrap();
    assert!(!report.passed);
    let w = report.worst.clone().unwrap();
    assert_eq!((w.input, w.index), (0, 0));
    assert_eq!(w.analytic, 0.0);
    assert!((w.numeric - 0.5).abs() < 1e-9);
    assert!(report
        .check()
        .unwrap_err()
        .to_string()
        .contains("gradcheck"));
}

#[test]
fn kinks_follow_the_documented_convention() {
    let x = Tensor::<f64>::from_vec(vec![0.0, 0.0, 0.0], &[3])
        .unwrap()
        .requires_grad();
    let loss = x
        .relu()
        .unwrap()
        .add(&x.abs().unwrap())
        .unwrap()
        .sum_all()
        .unwrap();
    let g = loss.backward().unwrap();
    assert_eq!(g.get(&x).unwrap().to_vec().unwrap(), vec![0.0, 0.0, 0.0]);
}

#[test]
fn gradcheck_rejects_bad_options_and_constant_functions() {
    let x = Tensor::<f64>::ones(&[2]).unwrap();
    let bad = GradcheckOptions {
        eps: 0.0,
        ..Default::default()
    };
    assert!(gradcheck(|t| t[0].sum_all(), std::slice::from_ref(&x), &bad).is_err());
    let e = gradgradcheck(|t| t[0].square(), std::slice::from_ref(&x), &bad).unwrap_err();
    assert!(
        e.to_string().contains("gradgradcheck") && e.to_string().contains("eps"),
        "{e}"
    );
    let err = gradcheck(
        |_| Ok(Tensor::<f64>::scalar(1.0)),
        &[x],
        &GradcheckOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("does not depend"), "{err}");
}

#[test]
fn users_can_check_their_own_composition() {
    // A user-defined "swish" built from primitives.
    let x = Tensor::<f64>::rand_uniform(&[4, 5], -3.0, 3.0, 11).unwrap();
    let report = gradcheck(
        |t| t[0].mul(&t[0].sigmoid().unwrap())?.mean(&[1], false),
        &[x],
        &GradcheckOptions::default(),
    )
    .unwrap();
    report.check().unwrap();
    assert_eq!(report.checked, 20);
}

/// Second derivative of `f` at `x` along the gradient, by double backward.
fn second_derivative(
    f: impl Fn(&Tensor<f64>) -> nabla::Result<Tensor<f64>>,
    x: &Tensor<f64>,
) -> Vec<f64> {
    let x = x.detach().requires_grad();
    let y = f(&x).unwrap().sum_all().unwrap();
    let opts = GradOptions {
        create_graph: true,
        ..Default::default()
    };
    let g = grad(&[y], std::slice::from_ref(&x), opts)
        .unwrap()
        .remove(0);
    let opts = GradOptions {
        allow_unused: true,
        ..Default::default()
    };
    let h = grad(&[g.sum_all().unwrap()], &[x], opts).unwrap().remove(0);
    h.to_vec().unwrap()
}

#[test]
fn piecewise_linear_ops_have_exactly_zero_second_derivative() {
    let x = Tensor::<f64>::from_vec(vec![-2.0, -0.5, 0.0, 0.3, 1.7], &[5]).unwrap();
    for (name, f) in [
        (
            "relu",
            (|x: &Tensor<f64>| x.relu()) as fn(&Tensor<f64>) -> nabla::Result<Tensor<f64>>,
        ),
        ("abs", |x| x.abs()),
        ("leaky_relu", |x| x.leaky_relu(0.2)),
        ("clamp", |x| x.clamp(-1.0, 1.0)),
        ("max", |x| x.reshape(&[1, 5])?.max(&[1], false)),
    ] {
        let h = second_derivative(f, &x);
        assert!(h.iter().all(|&v| v == 0.0), "{name}: {h:?}");
    }
    // and a smooth op is not zero: d²/dx² Σ x³ = 6x
    let h = second_derivative(|x| x.pow_scalar(3.0), &x);
    assert_eq!(h, vec![-12.0, -3.0, 0.0, 6.0 * 0.3, 6.0 * 1.7]);
}

#[test]
fn gradgradcheck_detects_a_wrong_second_derivative() {
    // relu at its kink: the first derivative jumps from 0 to 1 there, so its central
    // difference is about 1/(2ε) while double backward gives exactly 0. The check must fail.
    let x = Tensor::<f64>::from_vec(vec![0.0, 1.0], &[2]).unwrap();
    let report = gradgradcheck(|t| t[0].relu(), &[x], &GradcheckOptions::default()).unwrap();
    assert!(!report.passed, "{report}");
}

//! `nabla::profile`: every forward op, backward rule and gradient sum counted once, in its
//! own row; spans and rules swallow the ops they run; results unchanged by profiling.

use nabla::autograd::{detect_anomaly, grad, GradOptions};
use nabla::profile::{profile, span, Profile, ProfileRow};
use nabla::Tensor;

fn row<'a>(p: &'a Profile, phase: &str, op: &str) -> Option<&'a ProfileRow> {
    p.rows().iter().find(|r| r.phase == phase && r.op == op)
}

fn calls(p: &Profile, phase: &str, op: &str) -> u64 {
    p.rows()
        .iter()
        .filter(|r| r.phase == phase && r.op == op)
        .map(|r| r.calls)
        .sum()
}

/// Calls of every row of `phase`.
fn phase_calls(p: &Profile, phase: &str) -> u64 {
    p.rows()
        .iter()
        .filter(|r| r.phase == phase)
        .map(|r| r.calls)
        .sum()
}

/// `sum((x·w) + (x·w))`: the product's output gets two gradient contributions.
fn model(x: &Tensor<f64>, w: &Tensor<f64>) -> nabla::Result<Tensor<f64>> {
    let y = x.matmul(w)?;
    y.add(&y)?.sum_all()
}

#[test]
fn each_forward_op_backward_rule_and_gradient_sum_is_one_call_in_its_row() {
    let x = Tensor::<f64>::randn(&[4, 3], 0.0, 1.0, 0).unwrap();
    let w = Tensor::<f64>::randn(&[3, 2], 0.0, 1.0, 1)
        .unwrap()
        .requires_grad();
    let (grads, p) = profile(|| model(&x, &w)?.backward());
    let grads = grads.unwrap();
    let mm = row(&p, "forward", "matmul").unwrap();
    assert_eq!((mm.calls, mm.shapes.as_str()), (1, "[4, 3] [3, 2]"));
    assert_eq!(calls(&p, "forward", "add"), 1);
    assert_eq!(calls(&p, "backward", "matmul"), 1);
    assert_eq!(calls(&p, "backward", "add"), 1);
    // y = x·w receives two contributions (from both operands of the add): one sum.
    let sum = row(&p, "gradient sum", "add").unwrap();
    assert_eq!((sum.calls, sum.shapes.as_str()), (1, "[4, 2]"));
    // Nothing else ran a forward op: the rules' own ops are inside their rows.
    let forward = phase_calls(&p, "forward");
    assert_eq!(forward, 3, "{p}");
    let rows: std::time::Duration = p.rows().iter().map(|r| r.time).sum();
    assert!(rows <= p.total());
    assert_eq!(p.unattributed(), p.total() - rows);
    // Profiling changes nothing computed.
    let plain = model(&x, &w).unwrap().backward().unwrap();
    assert_eq!(
        grads.get(&w).unwrap().to_vec().unwrap(),
        plain.get(&w).unwrap().to_vec().unwrap()
    );
    let text = p.to_string();
    assert!(text.contains("matmul") && text.contains("total"), "{text}");
    let csv = p.to_csv();
    assert!(csv.starts_with("phase,op,shapes,calls,seconds,percent\n"));
    assert_eq!(csv.lines().count(), p.rows().len() + 1);
}

#[test]
fn spans_and_nested_profiles_count_each_op_once() {
    let x = Tensor::<f32>::ones(&[8]).unwrap();
    let (_, outer) = profile(|| {
        let (_, inner) = profile(|| x.mul_scalar(2.0).unwrap().exp().unwrap());
        assert_eq!(calls(&inner, "forward", "mul_scalar"), 1);
        span("setup", || x.add(&x).unwrap().relu().unwrap());
        x.neg().unwrap()
    });
    // The inner profile's ops are also the outer one's.
    assert_eq!(calls(&outer, "forward", "mul_scalar"), 1);
    assert_eq!(calls(&outer, "forward", "exp"), 1);
    assert_eq!(calls(&outer, "forward", "neg"), 1);
    // A span is one row; the ops in it are not rows of their own.
    assert_eq!(calls(&outer, "span", "setup"), 1);
    assert_eq!(
        calls(&outer, "forward", "add") + calls(&outer, "forward", "relu"),
        0
    );
    // Outside a profile nothing is measured, and a span only runs its closure.
    assert_eq!(span("alone", || 7), 7);
    let (_, empty) = profile(|| ());
    assert!(empty.rows().is_empty());
}

#[test]
fn by_op_merges_shapes_and_second_derivatives_stay_inside_their_rules() {
    let w = Tensor::<f64>::randn(&[3], 0.0, 1.0, 2)
        .unwrap()
        .requires_grad();
    let (g, p) = profile(|| {
        let a = w.mul(&w)?.sum_all()?;
        let b = w.reshape(&[1, 3])?.mul(&w.reshape(&[1, 3])?)?.sum_all()?;
        grad(
            &[a.add(&b)?],
            std::slice::from_ref(&w),
            GradOptions {
                create_graph: true,
                ..Default::default()
            },
        )
    });
    g.unwrap();
    // Two forward products of different shapes: two rows, one row when merged.
    let muls = p
        .rows()
        .iter()
        .filter(|r| r.phase == "forward" && r.op == "mul");
    assert_eq!(muls.count(), 2);
    let merged = p.by_op();
    let m = row(&merged, "forward", "mul").unwrap();
    assert_eq!((m.calls, m.shapes.as_str()), (2, ""));
    assert_eq!(merged.total(), p.total());
    // The recorded rules' ops (create_graph) are not forward rows: 2 mul, 2 reshape, 2
    // sum_all, 1 add.
    let forward = phase_calls(&p, "forward");
    assert_eq!(forward, 7, "{p}");
}

#[test]
fn profiling_under_anomaly_detection_still_checks_every_op() {
    let x = Tensor::<f32>::from_vec(vec![-1.0, 4.0], &[2]).unwrap();
    let ((_, anomaly), p) = profile(|| detect_anomaly(|| x.sqrt().unwrap().sum_all().unwrap()));
    let a = anomaly.expect("sqrt(-1) is NaN");
    assert!(a.to_string().contains("sqrt"), "{a}");
    assert_eq!(calls(&p, "forward", "sqrt"), 1);
}

#[test]
fn a_profile_inside_a_span_and_a_panicking_span_keep_the_rows_consistent() {
    let x = Tensor::<f32>::ones(&[8]).unwrap();
    let (_, outer) = profile(|| {
        span("outer span", || {
            let (_, inner) = profile(|| x.exp().unwrap());
            assert_eq!(calls(&inner, "forward", "exp"), 1);
        });
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            span("boom", || panic!("a panic inside a span"))
        }));
        assert!(caught.is_err());
        // Still measured after the panic: the span's row was closed.
        x.neg().unwrap()
    });
    // The inner profile's op is inside the span's row, not counted again.
    assert_eq!(calls(&outer, "forward", "exp"), 0, "{outer}");
    assert_eq!(calls(&outer, "span", "outer span"), 1);
    assert_eq!(calls(&outer, "span", "boom"), 1);
    assert_eq!(calls(&outer, "forward", "neg"), 1, "{outer}");
    let rows: std::time::Duration = outer.rows().iter().map(|r| r.time).sum();
    assert!(rows <= outer.total());
}

//! The backprop inspector: the graph it reports is the recorded graph, its steps run in the
//! engine's order, and the gradients it ends with are `backward`'s.

use nabla::autograd::{scope, Inspection, TensorSummary};
use nabla::nn::loss::{cross_entropy, Reduction, Target};
use nabla::nn::{Activation, Mlp, MlpConfig, Module};
use nabla::Tensor;

fn mlp_loss() -> (Mlp<f32>, Tensor<f32>, Tensor<f32>) {
    let mut cfg = MlpConfig::new(&[2, 8, 5, 3]);
    cfg.activation = Activation::Tanh;
    let model = Mlp::<f32>::new(&cfg).unwrap();
    let x = Tensor::from_vec((0..12).map(|i| i as f32 * 0.3 - 1.5).collect(), &[6, 2]).unwrap();
    let out = model.forward(&x).unwrap();
    let labels = [0, 1, 2, 0, 1, 2];
    let loss = scope("loss", || {
        cross_entropy(&out, Target::Classes(&labels), 0.0, Reduction::Mean)
    })
    .unwrap();
    (model, x, loss)
}

fn names(model: &Mlp<f32>, x: &Tensor<f32>) -> Vec<(String, Tensor<f32>)> {
    let mut n = model.named_parameters();
    n.push(("input".into(), x.clone()));
    n
}

#[test]
fn steps_run_in_the_reported_order_and_end_with_backwards_gradients() {
    let (model, x, loss) = mlp_loss();
    let mut ins = Inspection::new(&loss, &names(&model, &x)).unwrap();
    let order = ins.report().backward_order.clone();
    assert_eq!(order.len(), ins.report().totals.ops);
    assert_eq!(order[0], ins.report().root, "backward starts at the loss");
    let mut ran = Vec::new();
    while let Some(step) = ins.step().unwrap() {
        assert_eq!(step.index, ran.len());
        assert_eq!(step.done, step.remaining == 0);
        // Every gradient goes to an input of the op that sends it.
        let inputs = &ins.report().nodes[step.node].inputs;
        assert!(step.sent.iter().all(|s| inputs.contains(&s.to)));
        ran.push(step.node);
    }
    assert_eq!(ran, order);
    // Inputs are reached after every op that uses them: reverse topological order.
    for (k, &node) in ran.iter().enumerate() {
        for &i in &ins.report().nodes[node].inputs {
            assert!(!ran[..k].contains(&i), "input {i} of {node} ran before it");
        }
    }
    let grads = loss.backward().unwrap();
    for (name, p) in model.named_parameters() {
        let node = ins
            .report()
            .nodes
            .iter()
            .find(|n| n.label == name)
            .unwrap_or_else(|| panic!("{name} missing"));
        let want = TensorSummary::of(grads.get(&p).unwrap()).unwrap();
        assert_eq!(node.grad, Some(want), "{name}");
        assert_eq!(node.group, name.rsplit_once('.').unwrap().0);
    }
    assert!(ins.step().unwrap().is_none());
}

#[test]
fn ops_are_grouped_by_layer_and_memory_matches_graph_stats() {
    let (model, x, loss) = mlp_loss();
    let ins = Inspection::new(&loss, &names(&model, &x)).unwrap();
    let r = ins.report();
    let groups: Vec<&str> = r
        .nodes
        .iter()
        .filter(|n| !n.leaf)
        .map(|n| n.group.as_str())
        .collect();
    for g in [
        "layers.0", "layers.1", "layers.2", "layers.3", "layers.4", "loss",
    ] {
        assert!(groups.contains(&g), "no op in {g}: {groups:?}");
    }
    let input = r.nodes.iter().find(|n| n.label == "input").unwrap();
    assert!(input.leaf && !input.requires_grad);
    assert_eq!(input.shape, vec![6, 2]);
    let stats = loss.graph_stats();
    assert_eq!(r.totals.ops, stats.ops);
    assert_eq!(r.totals.saved_bytes, stats.saved_bytes);
    assert_eq!(r.totals.leaf_bytes, stats.leaf_bytes);
    assert!(r.totals.no_grad_peak_bytes > 0 && r.totals.no_grad_peak_bytes < r.totals.saved_bytes);
    // The first hidden layer's output, 6×8 f32, is kept for backward.
    assert!(r
        .nodes
        .iter()
        .any(|n| n.group == "layers.0" && n.shape == [6, 8] && n.saved_bytes == 6 * 8 * 4));
    let dot = r.to_dot();
    assert!(dot.starts_with("digraph nabla {") && dot.trim_end().ends_with('}'));
    assert!(dot.contains("label=\"layers.0\"") && dot.contains("-> n"));
}

#[test]
fn value_statistics_are_the_tensors() {
    let t = Tensor::<f64>::from_vec(vec![1.0, -3.0, 2.0, 4.0], &[2, 2]).unwrap();
    let s = TensorSummary::of(&t).unwrap();
    assert_eq!((s.mean, s.min, s.max), (1.0, -3.0, 4.0));
    assert!((s.l2 - 30f64.sqrt()).abs() < 1e-12);
    assert!((s.std - 6.5f64.sqrt()).abs() < 1e-12);
}

#[test]
fn a_root_without_a_graph_is_an_error() {
    let t = Tensor::<f32>::ones(&[2]).unwrap().requires_grad();
    let err = Inspection::new(&t, &[]).err().unwrap().to_string();
    assert!(err.contains("one-element"), "{err}");
    let c = Tensor::<f32>::ones(&[1]).unwrap();
    assert!(Inspection::new(&c, &[]).is_err());
}

#[test]
fn a_step_over_a_value_changed_in_place_fails_and_the_pass_stays_failed() {
    let (model, x, loss) = mlp_loss();
    let mut ins = Inspection::new(&loss, &names(&model, &x)).unwrap();
    ins.step().unwrap().unwrap(); // the loss's first op
                                  // An optimizer step edits the weights in place: the products that read them refuse.
    for p in model.parameters() {
        p.update_data(|d| d.iter_mut().for_each(|v| *v += 1.0))
            .unwrap();
    }
    let mut err = None;
    for _ in 0..20 {
        match ins.step() {
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(e) => {
                err = Some(e.to_string());
                break;
            }
        }
    }
    let err = err.expect("a stale weight was used");
    assert!(err.contains("modified in place"), "{err}");
    let again = ins.step().err().unwrap().to_string();
    assert!(again.contains("earlier step"), "{again}");
}

#[test]
fn done_comes_with_the_last_rule_that_runs() {
    // `done` is the pass's own answer (no op left holding a gradient), reported with the
    // last rule rather than by a further call.
    let a = Tensor::<f64>::from_vec(vec![1.0, 2.0], &[2])
        .unwrap()
        .requires_grad();
    let loss = a.mul_scalar(3.0).unwrap().sum_all().unwrap();
    let mut ins = Inspection::new(&loss, &[("a".into(), a)]).unwrap();
    let mut last = None;
    while let Some(s) = ins.step().unwrap() {
        last = Some(s);
    }
    let last = last.unwrap();
    assert!(last.done && last.remaining == 0);
    assert_eq!(last.index + 1, ins.report().backward_order.len());
}

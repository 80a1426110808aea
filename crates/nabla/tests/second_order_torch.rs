//! Second derivatives of composite functions against PyTorch's float64 results: a
//! Hessian-vector product of an MLP loss, a WGAN-GP gradient penalty, a full Hessian, a 50-deep
//! sigmoid chain, and double backward through matmul-transpose, log-softmax and max. The
//! reference values (and the inputs, so both sides start from the same bits) were written by
//! `tests/fixtures/torch_second_order.py`; agreement is required to 1e-9 relative.

use nabla::autograd::{grad, hessian, hvp, GradOptions};
use nabla::nn::loss::{self, Reduction, Target};
use nabla::testing::assert_close;
use nabla::Tensor;
use serde_json::Value;

const RTOL: f64 = 1e-9;
const ATOL: f64 = 1e-12;

fn fixture() -> Value {
    let text = include_str!("fixtures/torch_second_order.json");
    serde_json::from_str(text).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn tensor(v: &Value, shape: &[usize]) -> Tensor<f64> {
    Tensor::from_vec(floats(v), shape).unwrap()
}

fn close(ours: &Tensor<f64>, theirs: &Value, what: &str) {
    let want = tensor(theirs, ours.shape());
    if let Err(e) = assert_close(ours, &want, ATOL, RTOL) {
        panic!("{what}: {e}");
    }
}

/// The MLP's parameters (weights `[in, out]`, as PyTorch's script lays them out too).
fn params(case: &Value) -> Vec<Tensor<f64>> {
    let sizes: Vec<usize> = case["sizes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap() as usize)
        .collect();
    let p = case["params"].as_array().unwrap();
    let mut out = Vec::new();
    for (i, w) in sizes.windows(2).enumerate() {
        out.push(tensor(&p[2 * i], &[w[0], w[1]]).requires_grad());
        out.push(tensor(&p[2 * i + 1], &[w[1]]).requires_grad());
    }
    out
}

fn mlp(
    params: &[Tensor<f64>],
    x: &Tensor<f64>,
    act: fn(&Tensor<f64>) -> nabla::Result<Tensor<f64>>,
) -> nabla::Result<Tensor<f64>> {
    let mut h = x.clone();
    let n = params.len() / 2;
    for i in 0..n {
        h = h.linear(&params[2 * i], &params[2 * i + 1])?;
        if i + 1 < n {
            h = act(&h)?;
        }
    }
    Ok(h)
}

#[test]
fn hvp_of_an_mlp_loss_matches_pytorch() {
    let case = &fixture()["mlp_hvp"];
    let ps = params(case);
    let x = tensor(&case["x"], &[5, 4]);
    let labels: Vec<usize> = floats(&case["labels"])
        .iter()
        .map(|&l| l as usize)
        .collect();
    let v: Vec<Tensor<f64>> = case["v"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&ps)
        .map(|(v, p)| tensor(v, p.shape()))
        .collect();
    let f = || {
        let logits = mlp(&ps, &x, |h| h.tanh())?;
        loss::cross_entropy(&logits, Target::Classes(&labels), 0.0, Reduction::Mean)
    };
    let (l, hv) = hvp(f, &ps, &v).unwrap();
    let want = case["loss"].as_f64().unwrap();
    assert!((l.item().unwrap() - want).abs() <= RTOL * want.abs());
    for (i, (h, t)) in hv.iter().zip(case["hvp"].as_array().unwrap()).enumerate() {
        close(h, t, &format!("hvp of parameter {i}"));
    }
}

#[test]
fn wgan_gradient_penalty_gradients_match_pytorch() {
    let case = &fixture()["gradient_penalty"];
    let ps = params(case);
    let x = tensor(&case["x"], &[6, 2]).requires_grad();
    let d = mlp(&ps, &x, |h| h.softplus()).unwrap().sum_all().unwrap();
    let opts = GradOptions {
        create_graph: true,
        ..Default::default()
    };
    let gx = grad(&[d], std::slice::from_ref(&x), opts)
        .unwrap()
        .remove(0);
    let norm = gx
        .square()
        .unwrap()
        .sum(&[1], false)
        .unwrap()
        .sqrt()
        .unwrap();
    let penalty = norm
        .add_scalar(-1.0)
        .unwrap()
        .square()
        .unwrap()
        .mean_all()
        .unwrap();
    let want = case["penalty"].as_f64().unwrap();
    assert!((penalty.item().unwrap() - want).abs() <= RTOL * want.abs());
    let opts = GradOptions {
        allow_unused: true,
        ..Default::default()
    };
    let g = grad(&[penalty], &ps, opts).unwrap();
    for (i, (g, t)) in g.iter().zip(case["grads"].as_array().unwrap()).enumerate() {
        close(g, t, &format!("penalty gradient of parameter {i}"));
    }
}

#[test]
fn a_full_hessian_matches_pytorch() {
    let case = &fixture()["hessian"];
    let x = tensor(&case["x"], &[5]);
    let c = tensor(&case["c"], &[5]);
    let f = |x: &Tensor<f64>| {
        let a = x.sigmoid()?.mul(x)?.mul(x)?.sum_all()?;
        let b = x.sum_all()?.square()?.mul_scalar(0.1)?;
        let l = x.log_softmax(0)?.mul(&c)?.sum_all()?;
        a.add(&b)?.add(&l)
    };
    let h = hessian(f, &x).unwrap();
    close(&h, &case["hessian"], "hessian");
    let hv = h.to_vec().unwrap();
    for i in 0..5 {
        for j in 0..5 {
            assert!((hv[i * 5 + j] - hv[j * 5 + i]).abs() < 1e-13, "symmetric");
        }
    }
}

#[test]
fn a_50_deep_sigmoid_chain_matches_pytorch() {
    let case = &fixture()["sigmoid_chain"];
    let x = tensor(&case["x"], &[3]).requires_grad();
    let v = tensor(&case["v"], &[3]);
    let f = || {
        let mut h = x.clone();
        for _ in 0..50 {
            h = h.mul_scalar(1.5)?.add_scalar(0.1)?.sigmoid()?;
        }
        h.sum_all()
    };
    let opts = GradOptions {
        create_graph: true,
        ..Default::default()
    };
    let g = grad(&[f().unwrap()], std::slice::from_ref(&x), opts)
        .unwrap()
        .remove(0);
    close(&g, &case["grad"], "gradient");
    let (_, hv) = hvp(f, std::slice::from_ref(&x), &[v]).unwrap();
    close(&hv[0], &case["hvp"], "hvp");
}

#[test]
fn double_backward_through_matmul_transpose_log_softmax_and_max_matches_pytorch() {
    let case = &fixture()["double_backward_mix"];
    let a = tensor(&case["a"], &[4, 3]).requires_grad();
    let b = tensor(&case["b"], &[5, 3]).requires_grad();
    let c = tensor(&case["c"], &[4, 5]);
    let z = a.matmul(&b.t().unwrap()).unwrap();
    let f = z
        .log_softmax(1)
        .unwrap()
        .mul(&c)
        .unwrap()
        .sum_all()
        .unwrap()
        .add(
            &z.max(&[1], false)
                .unwrap()
                .square()
                .unwrap()
                .sum_all()
                .unwrap(),
        )
        .unwrap();
    let want = case["f"].as_f64().unwrap();
    assert!((f.item().unwrap() - want).abs() <= RTOL * want.abs());
    let opts = GradOptions {
        create_graph: true,
        ..Default::default()
    };
    let ga = grad(&[f], std::slice::from_ref(&a), opts)
        .unwrap()
        .remove(0);
    let s = ga.mul(&ga).unwrap().sum_all().unwrap();
    let g = grad(&[s], &[a, b], GradOptions::default()).unwrap();
    close(&g[0], &case["ds_da"], "∂s/∂A");
    close(&g[1], &case["ds_db"], "∂s/∂B");
}

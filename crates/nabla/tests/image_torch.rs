//! Convolution, pooling and batch normalisation against PyTorch's float64 results: values and
//! gradients of conv2d (stride, padding, dilation, groups), conv1d, both poolings, adaptive
//! pooling, batch norm (training, with gradients through the batch statistics, and
//! evaluation; running statistics over three steps) and a small CNN's cross-entropy loss. The
//! reference values and inputs were written by `tests/fixtures/torch_image_ops.py`;
//! agreement is required to 1e-9 relative.

use nabla::nn::loss::{self, Reduction, Target};
use nabla::nn::{BatchNorm2d, Module};
use nabla::ops::{Conv1dOptions, Conv2dOptions};
use nabla::testing::assert_close;
use nabla::Tensor;
use serde_json::Value;

const RTOL: f64 = 1e-9;
const ATOL: f64 = 1e-12;

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/torch_image_ops.json")).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn sizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

fn pair(v: &Value) -> (usize, usize) {
    let s = sizes(v);
    (s[0], s[1])
}

fn tensor(v: &Value, shape: &[usize]) -> Tensor<f64> {
    Tensor::from_vec(floats(v), shape).unwrap()
}

fn leaf(v: &Value, shape: &[usize]) -> Tensor<f64> {
    tensor(v, shape).requires_grad()
}

fn close(ours: &Tensor<f64>, theirs: &Value, what: &str) {
    let want = tensor(theirs, ours.shape());
    if let Err(e) = assert_close(ours, &want, ATOL, RTOL) {
        panic!("{what}: {e}");
    }
}

/// `Σ y ⊙ gy`: its gradients are the vector-Jacobian products with `gy`.
fn against(y: &Tensor<f64>, gy: &Value) -> Tensor<f64> {
    y.mul(&tensor(gy, y.shape())).unwrap().sum_all().unwrap()
}

#[test]
fn conv2d_matches_pytorch() {
    let f = fixture();
    for c in f["conv2d"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let x = leaf(&c["x"], &sizes(&c["x_shape"]));
        let w = leaf(&c["w"], &sizes(&c["w_shape"]));
        let b = (!c["b"].is_null()).then(|| leaf(&c["b"], &[sizes(&c["w_shape"])[0]]));
        let opts = Conv2dOptions {
            stride: pair(&c["stride"]),
            padding: pair(&c["padding"]),
            dilation: pair(&c["dilation"]),
            groups: c["groups"].as_u64().unwrap() as usize,
        };
        let y = x.conv2d(&w, b.as_ref(), opts).unwrap();
        assert_eq!(y.shape(), sizes(&c["y_shape"]), "{name}");
        close(&y, &c["y"], &format!("conv2d {name} y"));
        let g = against(&y, &c["gy"]).backward().unwrap();
        close(g.get(&x).unwrap(), &c["dx"], &format!("conv2d {name} dx"));
        close(g.get(&w).unwrap(), &c["dw"], &format!("conv2d {name} dw"));
        if let Some(b) = &b {
            close(g.get(b).unwrap(), &c["db"], &format!("conv2d {name} db"));
        }
    }
}

#[test]
fn conv1d_matches_pytorch() {
    let f = fixture();
    for c in f["conv1d"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let x = leaf(&c["x"], &sizes(&c["x_shape"]));
        let w = leaf(&c["w"], &sizes(&c["w_shape"]));
        let b = (!c["b"].is_null()).then(|| leaf(&c["b"], &[sizes(&c["w_shape"])[0]]));
        let n = |k: &str| c[k].as_u64().unwrap() as usize;
        let opts = Conv1dOptions {
            stride: n("stride"),
            padding: n("padding"),
            dilation: n("dilation"),
            groups: n("groups"),
        };
        let y = x.conv1d(&w, b.as_ref(), opts).unwrap();
        close(&y, &c["y"], &format!("conv1d {name} y"));
        let g = against(&y, &c["gy"]).backward().unwrap();
        close(g.get(&x).unwrap(), &c["dx"], &format!("conv1d {name} dx"));
        close(g.get(&w).unwrap(), &c["dw"], &format!("conv1d {name} dw"));
        if let Some(b) = &b {
            close(g.get(b).unwrap(), &c["db"], &format!("conv1d {name} db"));
        }
    }
}

#[test]
fn pooling_matches_pytorch() {
    let f = fixture();
    for kind in ["max_pool2d", "avg_pool2d"] {
        for c in f[kind].as_array().unwrap() {
            let name = c["name"].as_str().unwrap();
            let x = leaf(&c["x"], &sizes(&c["x_shape"]));
            let (k, s, p) = (pair(&c["kernel"]), pair(&c["stride"]), pair(&c["padding"]));
            let y = if kind == "max_pool2d" {
                x.max_pool2d(k, s, p)
            } else {
                x.avg_pool2d(k, s, p)
            }
            .unwrap();
            assert_eq!(y.shape(), sizes(&c["y_shape"]), "{kind} {name}");
            close(&y, &c["y"], &format!("{kind} {name} y"));
            let g = against(&y, &c["gy"]).backward().unwrap();
            close(g.get(&x).unwrap(), &c["dx"], &format!("{kind} {name} dx"));
        }
    }
    let c = &f["adaptive_avg_pool2d"];
    let x = leaf(&c["x"], &sizes(&c["x_shape"]));
    let y = x.adaptive_avg_pool2d(pair(&c["output_size"])).unwrap();
    close(&y, &c["y"], "adaptive_avg_pool2d y");
    let g = against(&y, &c["gy"]).backward().unwrap();
    close(g.get(&x).unwrap(), &c["dx"], "adaptive_avg_pool2d dx");
}

#[test]
fn batch_norm_matches_pytorch_in_both_modes() {
    let f = fixture();
    for c in f["batch_norm"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let shape = sizes(&c["x_shape"]);
        let ch = [shape[1]];
        let x = leaf(&c["x"], &shape);
        let (w, b) = (leaf(&c["weight"], &ch), leaf(&c["bias"], &ch));
        let (rm, rv) = (
            tensor(&c["running_mean"], &ch),
            tensor(&c["running_var"], &ch),
        );
        let training = c["training"].as_bool().unwrap();
        let y = x
            .batch_norm(
                Some(&rm),
                Some(&rv),
                Some(&w),
                Some(&b),
                training,
                c["momentum"].as_f64().unwrap(),
                c["eps"].as_f64().unwrap(),
            )
            .unwrap();
        close(&y, &c["y"], &format!("batch_norm {name} y"));
        close(
            &rm,
            &c["running_mean_after"],
            &format!("batch_norm {name} running_mean"),
        );
        close(
            &rv,
            &c["running_var_after"],
            &format!("batch_norm {name} running_var"),
        );
        let g = against(&y, &c["gy"]).backward().unwrap();
        close(
            g.get(&x).unwrap(),
            &c["dx"],
            &format!("batch_norm {name} dx"),
        );
        close(
            g.get(&w).unwrap(),
            &c["dweight"],
            &format!("batch_norm {name} dweight"),
        );
        close(
            g.get(&b).unwrap(),
            &c["dbias"],
            &format!("batch_norm {name} dbias"),
        );
    }
}

#[test]
fn running_statistics_after_three_steps_equal_pytorchs() {
    let f = fixture();
    let c = &f["batch_norm_steps"];
    let shape = sizes(&c["x_shape"]);
    let bn = BatchNorm2d::<f64>::new(c["num_features"].as_u64().unwrap() as usize).unwrap();
    let xs = c["x"].as_array().unwrap();
    for (i, x) in xs.iter().enumerate() {
        bn.forward(&tensor(x, &shape)).unwrap();
        let buffers = bn.named_buffers();
        assert_eq!(buffers[0].0, "running_mean");
        close(
            &buffers[0].1,
            &c["running_mean"][i],
            &format!("step {i} running_mean"),
        );
        close(
            &buffers[1].1,
            &c["running_var"][i],
            &format!("step {i} running_var"),
        );
        let tracked = c["num_batches_tracked"][i].as_f64().unwrap();
        assert_eq!(buffers[2].1.item().unwrap(), tracked, "step {i}");
    }
}

#[test]
fn a_small_cnn_loss_and_gradients_match_pytorch() {
    let f = fixture();
    let c = &f["small_cnn"];
    let p = |name: &str| leaf(&c["params"][name], &sizes(&c["param_shapes"][name]));
    let names = [
        "conv1.weight",
        "conv1.bias",
        "bn.weight",
        "bn.bias",
        "conv2.weight",
        "conv2.bias",
        "fc.weight",
        "fc.bias",
    ];
    let params: Vec<Tensor<f64>> = names.iter().map(|n| p(n)).collect();
    let x = leaf(&c["x"], &sizes(&c["x_shape"]));
    let labels = sizes(&c["labels"]);
    let pad1 = Conv2dOptions {
        padding: (1, 1),
        ..Default::default()
    };
    let h = x.conv2d(&params[0], Some(&params[1]), pad1).unwrap();
    let ch = [params[2].numel()];
    let (rm, rv) = (Tensor::zeros(&ch).unwrap(), Tensor::ones(&ch).unwrap());
    let h = h
        .batch_norm(
            Some(&rm),
            Some(&rv),
            Some(&params[2]),
            Some(&params[3]),
            true,
            0.1,
            1e-5,
        )
        .unwrap()
        .relu()
        .unwrap()
        .max_pool2d((2, 2), (2, 2), (0, 0))
        .unwrap();
    let h = h
        .conv2d(&params[4], Some(&params[5]), Conv2dOptions::default())
        .unwrap()
        .relu()
        .unwrap()
        .flatten(1)
        .unwrap();
    let logits = h.matmul(&params[6]).unwrap().add(&params[7]).unwrap();
    let loss =
        loss::cross_entropy(&logits, Target::Classes(&labels), 0.0, Reduction::Mean).unwrap();
    let want = c["loss"].as_f64().unwrap();
    let got = loss.item().unwrap();
    assert!(
        (got - want).abs() <= RTOL * want.abs(),
        "loss {got} vs {want}"
    );
    let g = loss.backward().unwrap();
    for (name, t) in names.iter().zip(&params) {
        // conv1.bias: batch norm cancels it, PyTorch's gradient is rounding noise (~1e-16)
        let atol = if *name == "conv1.bias" { 1e-14 } else { ATOL };
        let want = tensor(&c["grads"][*name], t.shape());
        if let Err(e) = assert_close(g.get(t).unwrap(), &want, atol, RTOL) {
            panic!("small CNN d{name}: {e}");
        }
    }
    close(g.get(&x).unwrap(), &c["dx"], "small CNN dx");
}

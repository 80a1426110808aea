//! ONNX export run by ONNX Runtime: every activation and normaliser, classification and
//! regression heads, compared with nabla's own forward pass (`tests/python/check_onnx.py`,
//! which also runs `onnx.checker` on each file). Skipped with a notice without Python's onnx and
//! onnxruntime, unless `NABLA_REQUIRE_PYTHON=1` (CI).

use std::collections::BTreeMap;

use nabla::data::{Normalization, Normalizer};
use nabla::io::{export_onnx, write_tensor_file, OnnxHead, OnnxOptions};
use nabla::nn::{Activation, Mlp, MlpConfig, Module};
use nabla::{no_grad, Tensor};

mod pyenv;
mod scratch;
use scratch::Scratch;

fn tmpdir(name: &str) -> Scratch {
    Scratch::new(name)
}

/// Exports `model`, writes `x` and nabla's outputs (each `+ shift`), and has ONNX Runtime
/// compare them: whether it agreed, and what it printed.
fn compare(
    name: &str,
    model: &Mlp<f32>,
    x: &Tensor<f32>,
    normalizer: Normalizer,
    head: OnnxHead,
    shift: f32,
) -> (bool, String) {
    let dir = tmpdir(name);
    let onnx = dir.join("model.onnx");
    let options = OnnxOptions {
        normalizer: Some(normalizer.clone()),
        head,
        metadata: BTreeMap::new(),
        ..Default::default()
    };
    export_onnx(model, &options, &onnx).unwrap();
    let out = no_grad(|| model.forward(&normalizer.apply(x)?)).unwrap();
    let out = out.add_scalar(shift as f64).unwrap();
    let mut tensors = vec![("input".to_string(), x.clone())];
    match head {
        OnnxHead::Classification => {
            tensors.push(("probabilities".into(), out.softmax(1).unwrap()));
            tensors.push(("logits".into(), out));
        }
        OnnxHead::Regression => tensors.push(("predictions".into(), out)),
    }
    let expected = dir.join("expected.safetensors");
    write_tensor_file(&expected, &tensors, &BTreeMap::new()).unwrap();
    let tol = std::path::Path::new("1e-5");
    let result = pyenv::run_status(
        "check_onnx.py",
        &[std::path::Path::new(name), &onnx, &expected, tol],
    );
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn check(name: &str, model: &Mlp<f32>, x: &Tensor<f32>, normalizer: Normalizer, head: OnnxHead) {
    let (ok, output) = compare(name, model, x, normalizer, head, 0.0);
    assert!(ok, "{output}");
    eprint!("{output}");
}

#[test]
fn the_check_fails_when_nabla_and_onnxruntime_disagree() {
    if !pyenv::onnx_available() {
        return;
    }
    let model = Mlp::<f32>::new(&MlpConfig::new(&[4, 8, 3])).unwrap();
    let x = Tensor::<f32>::randn(&[20, 4], 0.0, 1.0, 1).unwrap();
    let none = Normalizer::fit(&x, Normalization::None).unwrap();
    // A shift of 3e-5 in every output is beyond the 1e-5 tolerance at these magnitudes.
    let (ok, output) = compare("shifted", &model, &x, none, OnnxHead::Regression, 3e-5);
    assert!(!ok && output.contains("rows beyond 1e-05"), "{output}");
}

#[test]
fn onnxruntime_reproduces_every_activation_and_normaliser() {
    if !pyenv::onnx_available() {
        return;
    }
    let activations = [
        Activation::Relu,
        Activation::LeakyRelu(0.05),
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Gelu,
        Activation::Softplus,
        Activation::Identity,
    ];
    let modes = [
        Normalization::None,
        Normalization::Global,
        Normalization::PerFeature,
    ];
    let x = Tensor::<f32>::randn(&[257, 12], 2.0, 3.0, 11).unwrap();
    for (i, &activation) in activations.iter().enumerate() {
        let mut config = MlpConfig::new(&[12, 32, 16, 5]);
        config.activation = activation;
        config.seed = i as u64;
        let model = Mlp::<f32>::new(&config).unwrap();
        let mode = modes[i % modes.len()];
        let normalizer = Normalizer::fit(&x, mode).unwrap();
        let name = format!("{activation}-{mode:?}");
        check(&name, &model, &x, normalizer, OnnxHead::Classification);
    }
}

#[test]
fn onnxruntime_reproduces_a_regression_model_with_dropout() {
    if !pyenv::onnx_available() {
        return;
    }
    let mut config = MlpConfig::new(&[3, 24, 24, 2]);
    config.activation = Activation::Tanh;
    config.dropout = 0.3;
    let mut model = Mlp::<f32>::new(&config).unwrap();
    model.set_training(false); // dropout is the identity at inference and is not exported
    let x = Tensor::<f32>::randn(&[100, 3], 0.0, 1.0, 5).unwrap();
    let normalizer = Normalizer::fit(&x, Normalization::PerFeature).unwrap();
    check("regression", &model, &x, normalizer, OnnxHead::Regression);
}

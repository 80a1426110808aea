//! ONNX export run by ONNX Runtime: every activation and normaliser, classification and
//! regression heads, compared with nabla's own forward pass (`tests/python/check_onnx.py`,
//! which also runs `onnx.checker` on each file). Skipped with a notice without Python's onnx and
//! onnxruntime, unless `NABLA_REQUIRE_PYTHON=1` (CI).

use std::collections::BTreeMap;

use nabla::data::{Normalization, Normalizer};
use nabla::io::{export_onnx, write_tensor_file, OnnxHead, OnnxOptions};
use nabla::nn::{Activation, Mlp, MlpConfig, Module, Network};
use nabla::{no_grad, Tensor};

mod exported;
mod pyenv;
mod scratch;
use exported::{perturbed, token_ids};
use scratch::Scratch;

fn tmpdir(name: &str) -> Scratch {
    Scratch::new(name)
}

/// Exports `model`, writes `x` and nabla's outputs (each `+ shift`), and has ONNX Runtime
/// compare them: whether it agreed, and what it printed.
fn compare(
    name: &str,
    model: &Network<f32>,
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
            let last = out.shape().len() - 1;
            tensors.push(("probabilities".into(), out.softmax(last).unwrap()));
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

fn check<M: AsRef<Network<f32>>>(
    name: &str,
    model: &M,
    x: &Tensor<f32>,
    normalizer: Normalizer,
    head: OnnxHead,
) {
    let (ok, output) = compare(name, model.as_ref(), x, normalizer, head, 0.0);
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
    let (ok, output) = compare(
        "shifted",
        model.as_ref(),
        &x,
        none,
        OnnxHead::Regression,
        3e-5,
    );
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

/// ONNX Runtime must give `model`'s logits and probabilities on token ids `x` (no normaliser).
fn check_ids(name: &str, model: &Network<f32>, x: &Tensor<f32>) {
    let none = Normalizer::fit(&token_ids(1, 1, 2, 0), Normalization::None).unwrap();
    check(name, model, x, none, OnnxHead::Classification);
}

#[test]
fn onnxruntime_reproduces_gpt_language_models_at_any_length() {
    if !pyenv::onnx_available() {
        return;
    }
    let untied = r#"{"input": [8], "layers": [{"type": "gpt", "vocab": 11, "context": 8,
        "width": 16, "depth": 2, "heads": 2, "bias": true}]}"#;
    // An identity first: the graph still takes int64 ids and gathers them as they are.
    let tied = r#"{"input": [8], "layers": [{"type": "identity"}, {"type": "gpt", "vocab": 13,
        "context": 8, "width": 12, "depth": 1, "heads": 3, "bias": false, "tied": true,
        "dropout": 0.2}]}"#;
    // The untied graph run at fewer positions than the context and at all of them; the tied
    // one, whose first layer is not the GPT, takes exactly its 8 (as nabla's network does).
    for (name, spec, vocab, lengths) in [
        ("gpt-untied", untied, 11, &[5, 8][..]),
        ("gpt-tied", tied, 13, &[8][..]),
    ] {
        let model = perturbed(spec);
        for &positions in lengths {
            let x = token_ids(3, positions, vocab, 7);
            check_ids(&format!("{name} at {positions} positions"), &model, &x);
        }
    }
}

#[test]
fn onnxruntime_reproduces_each_sequence_layer() {
    if !pyenv::onnx_available() {
        return;
    }
    // Ids through an embedding, a norm, non-causal attention, a causal block and a linear head.
    let spec = r#"{"input": [6], "layers": [
        {"type": "embedding", "num_embeddings": 9, "embedding_dim": 8},
        {"type": "layer_norm", "eps": 1e-3},
        {"type": "multi_head_attention", "heads": 2, "causal": false, "dropout": 0.1},
        {"type": "transformer_block", "heads": 4, "dropout": 0.1},
        {"type": "layer_norm", "bias": false},
        {"type": "linear", "out_features": 5}]}"#;
    check_ids("sequence-layers", &perturbed(spec), &token_ids(4, 6, 9, 3));
}

#[test]
fn onnxruntime_reproduces_an_embedding_of_ids_with_more_axes() {
    if !pyenv::onnx_available() {
        return;
    }
    // Ids [batch, 2, 6] (fixed, as nabla's network takes them), flattened into a classifier.
    let spec = r#"{"input": [2, 6], "layers": [
        {"type": "embedding", "num_embeddings": 7, "embedding_dim": 4},
        {"type": "flatten"}, {"type": "linear", "out_features": 3}]}"#;
    let x = token_ids(3, 12, 7, 5).reshape(&[3, 2, 6]).unwrap();
    check_ids("embedding-2d", &perturbed(spec), &x);
}

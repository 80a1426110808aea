//! PyTorch state dicts of MLPs: export (weights `[out, in]`, `nn.Sequential` names) and import,
//! checked against numpy following `nn.Linear`'s convention (`x @ W.T + b`).

use std::collections::BTreeMap;

use nabla::io::{export_torch, import_torch, read_tensor_file, write_tensor_file};
use nabla::nn::{Activation, Mlp, MlpConfig, Module};
use nabla::{no_grad, Tensor};

mod exported;
mod pyenv;
mod scratch;
use scratch::Scratch;

fn tmpdir(name: &str) -> Scratch {
    Scratch::new(name)
}

fn model(sizes: &[usize], dropout: f64) -> Mlp<f32> {
    let mut cfg = MlpConfig::new(sizes);
    cfg.dropout = dropout;
    cfg.seed = 3;
    Mlp::new(&cfg).unwrap()
}

#[test]
fn export_uses_pytorch_names_layout_and_metadata_and_round_trips() {
    let dir = tmpdir("export");
    let mut m = model(&[6, 16, 8, 4], 0.2); // dropout shifts nabla's module indices, not PyTorch's
    m.set_training(false); // dropout is the identity at inference, and is not exported
    let path = dir.join("torch.safetensors");
    let extra = BTreeMap::from([("normalizer".to_string(), "{...}".to_string())]);
    export_torch(&m, &extra, &path).unwrap();
    let file = read_tensor_file(&path).unwrap();
    let shapes: Vec<(String, Vec<usize>)> = file
        .f32
        .iter()
        .map(|(n, t)| (n.clone(), t.shape().to_vec()))
        .collect();
    assert_eq!(
        shapes,
        [
            ("0.bias", vec![16]),
            ("0.weight", vec![16, 6]),
            ("2.bias", vec![8]),
            ("2.weight", vec![8, 16]),
            ("4.bias", vec![4]),
            ("4.weight", vec![4, 8])
        ]
        .map(|(n, s)| (n.to_string(), s))
    );
    let md = &file.metadata;
    assert_eq!(md["format"], "pytorch-state-dict");
    assert_eq!(md["architecture"], "6-16-8-4");
    assert_eq!(
        md["torch_module"],
        "nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))"
    );
    assert_eq!(md["normalizer"], "{...}");

    let back = import_torch(&path, Some(&[6, 16, 8, 4]), Activation::Relu).unwrap();
    let x = Tensor::<f32>::randn(&[5, 6], 0.0, 1.0, 1).unwrap();
    let (a, b) = no_grad(|| (m.forward(&x), back.forward(&x)));
    assert_eq!(a.unwrap().to_vec().unwrap(), b.unwrap().to_vec().unwrap());
}

#[test]
fn import_errors_name_the_file_and_the_tensor() {
    let dir = tmpdir("errors");
    let w = |o: usize, i: usize| Tensor::<f32>::zeros(&[o, i]).unwrap();
    let b = |o: usize| Tensor::<f32>::zeros(&[o]).unwrap();
    type Case<'a> = (&'a str, Vec<(&'a str, Tensor<f32>)>, &'a str);
    let cases: Vec<Case> = vec![
        ("nobias", vec![("0.weight", w(3, 2))], "no bias"),
        (
            "chain",
            vec![
                ("0.weight", w(3, 2)),
                ("0.bias", b(3)),
                ("2.weight", w(4, 5)),
                ("2.bias", b(4)),
            ],
            "takes 5 inputs but the previous layer gives 3",
        ),
        (
            "extra",
            vec![
                ("0.weight", w(3, 2)),
                ("0.bias", b(3)),
                ("1.running_mean", b(3)),
            ],
            "'1.running_mean' is not a linear layer's",
        ),
        (
            "rank",
            vec![("0.weight", b(3)), ("0.bias", b(3))],
            "not [out, in]",
        ),
    ];
    for (name, tensors, want) in cases {
        let path = dir.join(format!("{name}.safetensors"));
        let tensors: Vec<(String, Tensor<f32>)> = tensors
            .into_iter()
            .map(|(n, t)| (n.to_string(), t))
            .collect();
        write_tensor_file(&path, &tensors, &BTreeMap::new()).unwrap();
        let e = import_torch(&path, None, Activation::Relu)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains(want) && e.contains(&path.display().to_string()),
            "{name}: {e}"
        );
    }
    let m = model(&[2, 3], 0.0);
    let path = dir.join("ok.safetensors");
    export_torch(&m, &BTreeMap::new(), &path).unwrap();
    let e = import_torch(&path, Some(&[2, 4]), Activation::Relu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("[2, 4]") && e.contains("[2, 3]"), "{e}");
}

#[test]
fn numpy_reproduces_exported_logits_with_x_times_w_transposed() {
    if !pyenv::python_available() {
        return;
    }
    let dir = tmpdir("numpy-export");
    let m = model(&[6, 16, 8, 4], 0.0);
    let state = dir.join("state.safetensors");
    export_torch(&m, &BTreeMap::new(), &state).unwrap();
    let x = Tensor::<f32>::randn(&[10, 6], 0.0, 1.0, 2).unwrap();
    let logits = no_grad(|| m.forward(&x)).unwrap();
    let reference = dir.join("reference.safetensors");
    let tensors = vec![("input".to_string(), x), ("logits".to_string(), logits)];
    write_tensor_file(&reference, &tensors, &BTreeMap::new()).unwrap();
    let out = pyenv::run(
        "check_torch.py",
        &[std::path::Path::new("export"), &state, &reference],
    );
    assert!(out.contains("max |numpy − nabla|"), "{out}");
}

#[test]
fn a_state_dict_written_by_numpy_imports_and_predicts_the_same_logits() {
    if !pyenv::python_available() {
        return;
    }
    let dir = tmpdir("numpy-import");
    let (state, reference) = (dir.join("state.safetensors"), dir.join("ref.safetensors"));
    pyenv::run(
        "check_torch.py",
        &[std::path::Path::new("make"), &state, &reference],
    );
    let m = import_torch(&state, None, Activation::Relu).unwrap();
    assert_eq!(m.config().sizes, [5, 7, 6, 3]);
    let file = read_tensor_file(&reference).unwrap();
    let (x, want) = (&file.f32["input"], &file.f32["logits"]);
    let got = no_grad(|| m.forward(x)).unwrap();
    nabla::testing::assert_close(&got, want, 1e-5, 1e-5).unwrap();
}

#[test]
fn native_files_use_a_prefix_pytorch_cannot_match_and_old_files_still_load() {
    use nabla::io::{load_weights, save_weights, WEIGHTS_PREFIX};
    let dir = tmpdir("native");
    let m = model(&[3, 5, 2], 0.0);
    let native = dir.join("model.safetensors");
    save_weights(&native, &m, &BTreeMap::new()).unwrap();
    let names: Vec<String> = read_tensor_file(&native).unwrap().f32.into_keys().collect();
    assert_eq!(
        names,
        [
            "nabla.layers.0.bias",
            "nabla.layers.0.weight",
            "nabla.layers.2.bias",
            "nabla.layers.2.weight"
        ]
    );
    assert_eq!(WEIGHTS_PREFIX, "nabla.");
    // reading a native file as a PyTorch state dict is refused (it would load transposed)
    let e = import_torch(&native, None, Activation::Relu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("nabla model file") && e.contains("nabla export --format torch"),
        "{e}"
    );

    // a file written before the prefix (plain names) still loads
    let old = dir.join("old.safetensors");
    write_tensor_file(&old, &m.named_parameters(), &BTreeMap::new()).unwrap();
    let copy = Mlp::<f32>::new(&MlpConfig {
        seed: 99,
        ..m.config().clone()
    })
    .unwrap();
    load_weights(&old, &copy).unwrap();
    let x = Tensor::<f32>::randn(&[4, 3], 0.0, 1.0, 5).unwrap();
    let (a, b) = no_grad(|| (m.forward(&x), copy.forward(&x)));
    assert_eq!(a.unwrap().to_vec().unwrap(), b.unwrap().to_vec().unwrap());
    // and so does a prefixed one
    let copy2 = Mlp::<f32>::new(&MlpConfig {
        seed: 98,
        ..m.config().clone()
    })
    .unwrap();
    load_weights(&native, &copy2).unwrap();
    assert_eq!(
        no_grad(|| copy2.forward(&x)).unwrap().to_vec().unwrap(),
        no_grad(|| m.forward(&x)).unwrap().to_vec().unwrap()
    );
}

#[test]
fn numpy_reproduces_an_exported_cnn_with_batch_norm_pooling_and_a_residual_block() {
    if !pyenv::python_available() {
        return;
    }
    use nabla::nn::ModelSpec;
    let dir = tmpdir("numpy-cnn");
    let spec = ModelSpec::from_json(
        r#"{"input": [2, 9, 9], "seed": 4, "layers": [
            {"type": "conv2d", "out_channels": 6, "kernel_size": 3, "padding": 1, "stride": [1, 2]},
            {"type": "batch_norm2d"}, {"type": "relu"},
            {"type": "residual", "layers": [
                {"type": "conv2d", "out_channels": 6, "kernel_size": 3, "padding": 1, "groups": 2, "bias": false},
                {"type": "tanh"}]},
            {"type": "max_pool2d", "kernel_size": 2, "stride": 1, "padding": 1},
            {"type": "avg_pool2d", "kernel_size": [2, 3], "padding": [1, 1]},
            {"type": "dropout", "p": 0.5},
            {"type": "flatten"},
            {"type": "linear", "out_features": 8}, {"type": "batch_norm1d"}, {"type": "gelu"},
            {"type": "linear", "out_features": 3}]}"#,
    )
    .unwrap();
    let mut m = spec.build::<f32>().unwrap();
    // Running statistics other than the initial ones: a few forward passes in training mode.
    for seed in 0..3 {
        let x = Tensor::<f32>::randn(&[16, 2, 9, 9], 0.5, 2.0, seed).unwrap();
        m.forward(&x).unwrap();
    }
    m.set_training(false);
    let state = dir.join("state.safetensors");
    export_torch(&m, &BTreeMap::new(), &state).unwrap();
    let x = Tensor::<f32>::randn(&[10, 2, 9, 9], 0.0, 1.0, 9).unwrap();
    let logits = no_grad(|| m.forward(&x)).unwrap();
    numpy_reproduces("export-net", &dir, &state, x, logits);
}

/// `check_torch.py export-net`: numpy computes the exported `state`'s network on `x` with
/// PyTorch's conventions and must give nabla's `logits` and their softmax (last axis).
fn numpy_reproduces(
    name: &str,
    dir: &std::path::Path,
    state: &std::path::Path,
    x: Tensor<f32>,
    logits: Tensor<f32>,
) {
    let probs = logits.softmax(logits.shape().len() - 1).unwrap();
    let reference = dir.join("reference.safetensors");
    let tensors = vec![
        ("input".to_string(), x),
        ("logits".to_string(), logits),
        ("probabilities".to_string(), probs),
    ];
    write_tensor_file(&reference, &tensors, &BTreeMap::new()).unwrap();
    let out = pyenv::run(
        "check_torch.py",
        &[std::path::Path::new("export-net"), state, &reference],
    );
    assert!(out.contains("max |numpy − nabla|"), "{out}");
    eprint!("{name}: {out}");
}

/// Every sequence layer through the PyTorch layout: numpy, following PyTorch's conventions
/// (`nn.Embedding`, `nn.LayerNorm`, `nn.Linear`'s `[out, in]`, the exported `SelfAttention`'s
/// head split), reproduces nabla's logits from the state dict; the file imports back to the
/// same bits.
#[test]
fn numpy_reproduces_exported_gpts_and_sequence_layers_and_they_round_trip() {
    use nabla::io::import_torch_network;
    let specs = [
        (
            "gpt-untied",
            r#"{"input": [8], "layers": [{"type": "gpt", "vocab": 11, "context": 8,
            "width": 16, "depth": 2, "heads": 2, "bias": true}]}"#,
            11,
            5,
        ),
        (
            "gpt-tied",
            r#"{"input": [8], "layers": [{"type": "gpt", "vocab": 13, "context": 8,
            "width": 12, "depth": 1, "heads": 3, "bias": false, "tied": true,
            "dropout": 0.2}]}"#,
            13,
            8,
        ),
        (
            "sequence-layers",
            r#"{"input": [6], "layers": [
            {"type": "embedding", "num_embeddings": 9, "embedding_dim": 8},
            {"type": "layer_norm", "eps": 1e-3},
            {"type": "multi_head_attention", "heads": 2, "causal": false, "dropout": 0.1},
            {"type": "transformer_block", "heads": 4, "dropout": 0.1},
            {"type": "layer_norm", "bias": false},
            {"type": "linear", "out_features": 5}]}"#,
            9,
            6,
        ),
    ];
    for (name, spec, vocab, positions) in specs {
        let m = exported::perturbed(spec);
        let dir = tmpdir(name);
        let state = dir.join("state.safetensors");
        export_torch(&m, &BTreeMap::new(), &state).unwrap();
        let ids: Vec<f32> = (0..3 * positions)
            .map(|i| ((i * 5 + 2) % vocab) as f32)
            .collect();
        let x = Tensor::from_vec(ids, &[3, positions]).unwrap();
        let logits = no_grad(|| m.forward(&x)).unwrap();
        let back = import_torch_network(&state).unwrap();
        let again = no_grad(|| back.forward(&x)).unwrap();
        assert_eq!(again.to_vec().unwrap(), logits.to_vec().unwrap(), "{name}");
        // The spec comes back whole, dropout included.
        assert_eq!(back.describe(), m.describe(), "{name}");
        if !pyenv::python_available() {
            continue;
        }
        numpy_reproduces(name, &dir, &state, x, logits);
    }
}

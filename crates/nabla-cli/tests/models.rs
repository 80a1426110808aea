//! Any model through the CLI: `--arch cnn` and `--model FILE.json` trained, inspected,
//! evaluated, resumed, graphed, exported and imported; and the failures found by trying these
//! commands as a user would (each a test that failed before the model specs).

use std::io::Read;
use std::path::Path;
use std::process::Stdio;

mod common;
use common::{command, fails_with, nabla, ok, text, tmpdir, write_mnist_dir};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `nabla predict --json` of `input`.
fn predict(model: &Path, input: &Path) -> String {
    ok(&nabla(&[
        "predict",
        "--checkpoint",
        s(model),
        "--input",
        s(input),
        "--json",
    ]))
}

#[test]
fn a_cnn_trains_on_idx_images_and_every_command_takes_it() {
    let dir = tmpdir("models-cnn");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_mnist_dir(&data, 240, 40);
    let run = dir.join("run");
    let flags = [
        "train",
        "--data-dir",
        s(&data),
        "--arch",
        "cnn",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--checkpoint-every",
        "5",
        "--no-plots",
        "--out",
        s(&run),
    ];
    let out = ok(&nabla(&flags));
    assert!(out.contains("Conv2d(1 → 32, 3×3, padding 1)"), "{out}");
    let model = run.join("model.safetensors");

    // info: every layer with its output shape and parameters, and the input's units.
    let info = ok(&nabla(&["info", "--checkpoint", s(&model)]));
    for want in [
        "Conv2d(1 → 32, 3×3, padding 1)",
        "[1, 32, 4, 4]",
        "BatchNorm2d(32)",
        "MaxPool2d(2×2)",
        "[1, 64]",
        "input [batch, 1, 4, 4]",
        "pixels 0–255",
    ] {
        assert!(info.contains(want), "{want:?} not in\n{info}");
    }
    // The recorded config reproduces the run: the spec is in it.
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config["train_config"]["model"]["layers"][0]["type"],
        "conv2d"
    );
    // eval and predict on the raw IDX pixels.
    let ev = ok(&nabla(&["eval", "--checkpoint", s(&model), "--json"]));
    let v: serde_json::Value = serde_json::from_str(&ev).unwrap();
    assert_eq!(v["samples"], 40);
    let images = data.join("t10k-images-idx3-ubyte");
    let p: serde_json::Value = serde_json::from_str(&predict(&model, &images)).unwrap();
    assert_eq!(p.as_array().unwrap().len(), 40);
    // graph of one step.
    let g = ok(&nabla(&[
        "graph",
        "--checkpoint",
        s(&model),
        "--batch",
        "8",
        "--out",
        s(&dir.join("g.dot")),
    ]));
    assert!(g.contains("training rows"), "{g}");
    assert!(std::fs::read_to_string(dir.join("g.dot"))
        .unwrap()
        .contains("conv2d"));
    // resume with more epochs.
    let more = ok(&nabla(&[
        "train",
        "--resume",
        s(&run),
        "--epochs",
        "3",
        "--no-plots",
    ]));
    assert!(more.contains("after 3 epochs"), "{more}");
    // PyTorch layout and back: the same predictions.
    let state = dir.join("torch.safetensors");
    let out = ok(&nabla(&[
        "export",
        "--checkpoint",
        s(&model),
        "--format",
        "torch",
        "--out",
        s(&state),
    ]));
    assert!(out.contains("nn.Conv2d(1, 32"), "{out}");
    let back = dir.join("back.safetensors");
    ok(&nabla(&[
        "import",
        "--state-dict",
        s(&state),
        "--out",
        s(&back),
    ]));
    assert_eq!(predict(&model, &images), predict(&back, &images));
}

#[test]
fn a_model_file_describes_any_network_and_its_mistakes_name_the_layer() {
    let dir = tmpdir("models-json");
    let spec = dir.join("net.json");
    std::fs::write(
        &spec,
        r#"{"layers": [
            {"type": "linear", "out_features": 32},
            {"type": "batch_norm1d"},
            {"type": "gelu"},
            {"type": "residual", "layers": [{"type": "linear", "out_features": 32}, {"type": "tanh"}]},
            {"type": "linear", "out_features": 3}
        ]}"#,
    )
    .unwrap();
    let run = dir.join("run");
    let out = ok(&nabla(&[
        "train",
        "--model",
        s(&spec),
        "--epochs",
        "30",
        "--no-plots",
        "--out",
        s(&run),
    ]));
    let acc: f64 = out
        .split("test accuracy ")
        .nth(1)
        .and_then(|t| t.split('%').next())
        .and_then(|t| t.parse().ok())
        .unwrap();
    assert!(acc > 90.0, "{out}");
    let info = ok(&nabla(&[
        "info",
        "--checkpoint",
        s(&run.join("model.safetensors")),
    ]));
    assert!(info.contains("Residual(Linear(32 → 32), Tanh)"), "{info}");
    assert!(info.contains("BatchNorm1d(32)"), "{info}");

    // The shapes are checked before training, naming the layer and both shapes.
    std::fs::write(
        &spec,
        r#"{"layers": [{"type": "conv2d", "out_channels": 4, "kernel_size": 3}]}"#,
    )
    .unwrap();
    fails_with(
        &nabla(&["train", "--model", s(&spec), "--out", s(&dir.join("r2"))]),
        "layers.0 (Conv2d(? → 4, 3×3)) takes [N, C, H, W], but its input is [N, 2]",
    );
    std::fs::write(&spec, r#"{"layers": [{"type": "lstm"}]}"#).unwrap();
    fails_with(
        &nabla(&["train", "--model", s(&spec), "--out", s(&dir.join("r3"))]),
        "unknown variant `lstm`",
    );
    fails_with(
        &nabla(&["train", "--arch", "cnn", "--out", s(&dir.join("r4"))]),
        "--arch cnn needs images",
    );
    fails_with(
        &nabla(&[
            "train",
            "--model",
            s(&spec),
            "--hidden",
            "8",
            "--out",
            s(&dir.join("r5")),
        ]),
        "cannot be used with",
    );
}

/// A spiral model in `dir/run`; its model file.
fn spiral_model(dir: &Path, extra: &[&str]) -> std::path::PathBuf {
    let run = dir.join("run");
    let mut args = vec![
        "train",
        "--epochs",
        "2",
        "--hidden",
        "8",
        "--no-plots",
        "--quiet",
        "--out",
        s(&run),
    ];
    args.extend_from_slice(extra);
    ok(&nabla(&args));
    run.join("model.safetensors")
}

#[test]
fn export_never_destroys_its_input_and_replaces_files_only_when_asked() {
    let dir = tmpdir("models-export");
    let model = spiral_model(&dir, &[]);
    let before = std::fs::read(&model).unwrap();
    let export = |out: &Path, extra: &[&str]| {
        let mut a = vec![
            "export",
            "--checkpoint",
            s(&model),
            "--format",
            "onnx",
            "--out",
            s(out),
        ];
        a.extend_from_slice(extra);
        nabla(&a)
    };
    fails_with(&export(&model, &["--overwrite"]), "is the input file");
    assert_eq!(std::fs::read(&model).unwrap(), before);
    // The same file by another name.
    let other_name = dir.join("run/../run/model.safetensors");
    fails_with(&export(&other_name, &[]), "is the input file");
    let onnx = dir.join("m.onnx");
    ok(&export(&onnx, &[]));
    fails_with(&export(&onnx, &[]), "exists; pass --overwrite");
    ok(&export(&onnx, &["--overwrite"]));
    let as_dir = format!("{}/", dir.display());
    fails_with(
        &export(Path::new(&as_dir), &[]),
        "is a directory; give a file name",
    );
    // import too.
    let state = dir.join("t.safetensors");
    ok(&nabla(&[
        "export",
        "--checkpoint",
        s(&model),
        "--format",
        "torch",
        "--out",
        s(&state),
    ]));
    fails_with(
        &nabla(&["import", "--state-dict", s(&state), "--out", s(&state)]),
        "is the input file",
    );
    fails_with(
        &nabla(&["import", "--state-dict", s(&state), "--out", s(&model)]),
        "exists; pass --overwrite",
    );
}

/// Runs `nabla ARGS` with stdout's reader gone before it writes: it must end quietly.
fn quiet_on_closed_pipe(args: &[&str]) {
    let mut child = command()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away (`| head -0`)
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{args:?}: {err}"
    );
    assert!(status.success(), "{args:?}: {status:?} {err}");
}

#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    let dir = tmpdir("models-pipe");
    let model = spiral_model(&dir, &[]);
    let csv = dir.join("x.csv");
    let rows: String = (0..2000)
        .map(|i| format!("{},{}\n", i % 7, i % 5))
        .collect();
    std::fs::write(&csv, format!("a,b\n{rows}")).unwrap();
    quiet_on_closed_pipe(&[
        "predict",
        "--checkpoint",
        s(&model),
        "--input",
        s(&csv),
        "--json",
    ]);
    quiet_on_closed_pipe(&["train", "--help"]);
    quiet_on_closed_pipe(&["gradcheck"]);
}

#[test]
fn eval_applies_or_refuses_every_data_flag_and_refuses_other_classes() {
    let dir = tmpdir("models-eval");
    let model = spiral_model(&dir, &[]);
    let samples = |extra: &[&str]| -> u64 {
        let mut a = vec!["eval", "--checkpoint", s(&model), "--json"];
        a.extend_from_slice(extra);
        let v: serde_json::Value = serde_json::from_str(&ok(&nabla(&a))).unwrap();
        v["samples"].as_u64().unwrap()
    };
    assert_eq!(samples(&[]), 900);
    assert_eq!(samples(&["--points", "50"]), 150);
    let eval = |extra: &[&str]| {
        let mut a = vec!["eval", "--checkpoint", s(&model)];
        a.extend_from_slice(extra);
        nabla(&a)
    };
    let noisy = text(&eval(&["--noise", "0.5"]).stdout);
    assert_ne!(noisy, text(&eval(&[]).stdout));
    fails_with(
        &eval(&["--outliers", "0.1"]),
        "--outliers applies only to --dataset sine",
    );
    fails_with(
        &eval(&["--test-fraction", "0.5"]),
        "--test-fraction applies only to --csv data",
    );
    fails_with(
        &eval(&["--dataset", "moons"]),
        "the model has 3 outputs (spiral classes), moons has 2 classes",
    );
}

#[test]
fn graph_refuses_a_batch_larger_than_the_data() {
    let dir = tmpdir("models-graph");
    let model = spiral_model(&dir, &[]);
    fails_with(
        &nabla(&[
            "graph",
            "--checkpoint",
            s(&model),
            "--batch",
            "901",
            "--out",
            s(&dir.join("g.dot")),
        ]),
        "--batch 901: the training set of spiral has 900 rows; use at most 900",
    );
}

#[test]
fn info_says_what_a_file_is_and_what_to_run() {
    let dir = tmpdir("models-info");
    let model = spiral_model(&dir, &[]);
    let state = dir.join("t.safetensors");
    let onnx = dir.join("m.onnx");
    for (format, out) in [("torch", &state), ("onnx", &onnx)] {
        ok(&nabla(&[
            "export",
            "--checkpoint",
            s(&model),
            "--format",
            format,
            "--out",
            s(out),
        ]));
    }
    let info = ok(&nabla(&["info", "--checkpoint", s(&state)]));
    assert!(info.contains("a PyTorch state dict"), "{info}");
    assert!(info.contains("nabla import --state-dict"), "{info}");
    fails_with(
        &nabla(&["info", "--checkpoint", s(&onnx)]),
        "an ONNX model (as `nabla export --format onnx` writes), not safetensors",
    );
    let zip = dir.join("model.pt");
    std::fs::write(&zip, b"PK\x03\x04 a torch.save archive").unwrap();
    fails_with(
        &nabla(&["info", "--checkpoint", s(&zip)]),
        "a PyTorch `torch.save` file",
    );
}

#[test]
fn a_model_file_written_by_the_library_is_read_by_the_cli() {
    use nabla::io::{save_model, ModelCard, Task};
    use nabla::nn::{MlpConfig, ModelSpec};
    let dir = tmpdir("models-library");
    let spec = ModelSpec::mlp(&MlpConfig::new(&[2, 8, 3]));
    let net = spec.build::<f32>().unwrap();
    let path = dir.join("lib.safetensors");
    save_model(&path, &net, &ModelCard::new(spec, Task::Classification)).unwrap();
    let csv = dir.join("x.csv");
    std::fs::write(&csv, "a,b\n0.5,0.1\n-1,2\n").unwrap();
    let p: serde_json::Value = serde_json::from_str(&predict(&path, &csv)).unwrap();
    assert_eq!(p.as_array().unwrap().len(), 2);
    let info = ok(&nabla(&["info", "--checkpoint", s(&path)]));
    assert!(info.contains("a nabla model file"), "{info}");
}

#[test]
fn messages_use_the_flags_own_words() {
    let dir = tmpdir("models-words");
    let out = |n: &str| dir.join(n);
    fails_with(
        &nabla(&["train", "--grad-shards", "0", "--out", s(&out("a"))]),
        "--grad-shards 0 must be",
    );
    fails_with(
        &nabla(&["train", "--dropout", "1", "--out", s(&out("b"))]),
        "--dropout 1 is not in [0, 1)",
    );
    // The training CSV (with its target column) given to predict: the hint names the flag.
    let csv = out("train.csv");
    let rows: String = (0..60)
        .map(|i| format!("{},{},{}\n", i % 7, i % 3, i % 2))
        .collect();
    std::fs::write(&csv, format!("a,b,label\n{rows}")).unwrap();
    let run = out("run");
    ok(&nabla(&[
        "train",
        "--dataset",
        "csv",
        "--csv",
        s(&csv),
        "--epochs",
        "3",
        "--checkpoint-every",
        "2",
        "--no-plots",
        "--quiet",
        "--out",
        s(&run),
    ]));
    fails_with(
        &nabla(&[
            "predict",
            "--checkpoint",
            s(&run.join("model.safetensors")),
            "--input",
            s(&csv),
        ]),
        "--target-column",
    );
    // Resuming a finished run with fewer epochs than it has done.
    fails_with(
        &nabla(&["train", "--resume", s(&run), "--epochs", "2"]),
        "--epochs 2 would do nothing",
    );
}

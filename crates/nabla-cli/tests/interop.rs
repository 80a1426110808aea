//! Models moved between nabla, PyTorch's layout and ONNX Runtime through the CLI, checked on
//! every test row: `nabla predict` against ONNX Runtime running `nabla export --format onnx`
//! (spiral, sine regression and, where it is installed, all 10,000 Fashion-MNIST test images),
//! and `nabla predict` before and after `export --format torch` + `import`.
//!
//! Needs Python with onnx and onnxruntime (skipped with a notice otherwise, unless
//! `NABLA_REQUIRE_PYTHON=1`), and for Fashion-MNIST the Debian package (skipped otherwise,
//! unless `NABLA_REQUIRE_FASHION=1`; `.ci/run` sets both).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Parser;
use nabla::io::write_tensor_file;
use nabla::Tensor;
use nabla_cli::args::{Cli, Command};

mod common;
#[path = "../../nabla/tests/pyenv/mod.rs"]
mod pyenv;

use common::{nabla, ok, tmpdir};

const FASHION: &str = "/usr/share/datasets/fashion-mnist";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Trains a small model with `train` flags into `dir/run`; returns the model file.
fn train(dir: &Path, flags: &[&str]) -> PathBuf {
    let run = dir.join("run");
    let mut args = vec!["train", "--no-plots", "--quiet", "--out", s(&run)];
    args.extend_from_slice(flags);
    ok(&nabla(&args));
    run.join("model.safetensors")
}

/// The test split's features of the data set `flags` select, as a CSV file.
fn test_rows_csv(flags: &[&str], path: &Path) {
    let mut argv = vec!["nabla", "train"];
    argv.extend_from_slice(flags);
    let Command::Train(args) = Cli::try_parse_from(argv).unwrap().command else {
        unreachable!()
    };
    let loaded = nabla_cli::dataset::load(&args.data).unwrap();
    let x = loaded.test.x();
    let d = x.shape()[1];
    let mut csv = (0..d)
        .map(|j| format!("x{j}"))
        .collect::<Vec<_>>()
        .join(",")
        + "\n";
    for row in x.to_vec().unwrap().chunks(d) {
        let cells: Vec<String> = row.iter().map(|v| v.to_string()).collect(); // round-trip exact
        csv += &(cells.join(",") + "\n");
    }
    std::fs::write(path, csv).unwrap();
}

/// `nabla predict --json` as (logits, probabilities) rows, or regression predictions.
fn predict(model: &Path, input: &Path) -> BTreeMap<String, Vec<f32>> {
    let out = ok(&nabla(&[
        "predict",
        "--checkpoint",
        s(model),
        "--input",
        s(input),
        "--json",
    ]));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let floats = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_f64().unwrap() as f32)
            .collect()
    };
    let mut outputs = BTreeMap::new();
    match json.get("predictions") {
        Some(p) => {
            outputs.insert("predictions".to_string(), floats(p));
        }
        None => {
            for key in ["logits", "probabilities"] {
                let all = json
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|row| floats(&row[key]))
                    .collect();
                outputs.insert(key.to_string(), all);
            }
        }
    }
    outputs
}

/// The features `nabla predict` reads from `input`, in the file's units (IDX pixels 0–255,
/// CSV columns as written).
fn features(input: &Path) -> Tensor<f32> {
    if input.extension().is_some_and(|e| e == "csv") {
        let text = std::fs::read_to_string(input).unwrap();
        let rows: Vec<Vec<f32>> = text
            .lines()
            .skip(1)
            .map(|l| l.split(',').map(|c| c.parse().unwrap()).collect())
            .collect();
        let d = rows[0].len();
        Tensor::from_vec(rows.concat(), &[rows.len(), d]).unwrap()
    } else {
        let arr = nabla::data::idx::read_idx(input).unwrap();
        let d: usize = arr.dims[1..].iter().product();
        let x = arr.data.iter().map(|&p| p as f32).collect();
        Tensor::from_vec(x, &[arr.dims[0], d]).unwrap()
    }
}

/// Exports `model` to ONNX and has ONNX Runtime reproduce `nabla predict` on `input`.
fn onnx_matches_predict(name: &str, dir: &Path, model: &Path, input: &Path) {
    let onnx = dir.join("model.onnx");
    let out = ok(&nabla(&[
        "export",
        "--checkpoint",
        s(model),
        "--format",
        "onnx",
        "--out",
        s(&onnx),
    ]));
    assert!(out.contains("all preprocessing is in the graph"), "{out}");
    // In the data file's units, shaped as the model's samples ([n, 1, 28, 28] for a CNN).
    let sample = nabla::io::load_model(model).unwrap().1.spec.input;
    let x = features(input);
    let mut shape = vec![x.shape()[0]];
    shape.extend(&sample);
    let x = x.reshape(&shape).unwrap();
    let n = x.shape()[0];
    let mut tensors = vec![("input".to_string(), x)];
    for (key, v) in predict(model, input) {
        let k = v.len() / n;
        tensors.push((key, Tensor::from_vec(v, &[n, k]).unwrap()));
    }
    let expected = dir.join("expected.safetensors");
    write_tensor_file(&expected, &tensors, &BTreeMap::new()).unwrap();
    let line = pyenv::run(
        "check_onnx.py",
        &[Path::new(name), &onnx, &expected, Path::new("1e-5")],
    );
    eprint!("{line}");
}

fn fashion_available() -> bool {
    let found = Path::new(FASHION)
        .join("t10k-images-idx3-ubyte.gz")
        .exists();
    let required = std::env::var("NABLA_REQUIRE_FASHION").is_ok_and(|v| v == "1");
    assert!(
        found || !required,
        "NABLA_REQUIRE_FASHION=1 but {FASHION} is missing (apt-get install dataset-fashion-mnist)"
    );
    if !found {
        eprintln!("skipped: Fashion-MNIST not found in {FASHION}");
    }
    found
}

#[test]
fn onnxruntime_reproduces_nabla_predict_on_spiral_and_sine() {
    if !pyenv::onnx_available() {
        return;
    }
    let dir = tmpdir("onnx-spiral");
    let model = train(&dir, &["--epochs", "2", "--hidden", "16,16"]);
    let csv = dir.join("test.csv");
    test_rows_csv(&[], &csv);
    onnx_matches_predict("spiral", &dir, &model, &csv);

    let dir = tmpdir("onnx-sine");
    let flags = ["--dataset", "sine", "--task", "regression"];
    let mut train_flags = flags.to_vec();
    train_flags.extend(["--epochs", "2", "--activation", "tanh"]);
    let model = train(&dir, &train_flags);
    let csv = dir.join("test.csv");
    test_rows_csv(&flags, &csv);
    onnx_matches_predict("sine", &dir, &model, &csv);
}

#[test]
fn fashion_mnist_round_trips_through_onnx_and_torch_on_every_test_row() {
    if !pyenv::onnx_available() || !fashion_available() {
        return;
    }
    let images = Path::new(FASHION).join("t10k-images-idx3-ubyte.gz");
    // The CNN: convolutions, batch norm (running statistics), pooling, flatten, dropout.
    let cnn_dir = tmpdir("onnx-fashion-cnn");
    let cnn = train(
        &cnn_dir,
        &[
            "--dataset",
            "fashion-mnist",
            "--arch",
            "cnn",
            "--max-steps",
            "30",
        ],
    );
    onnx_matches_predict("fashion-mnist cnn", &cnn_dir, &cnn, &images);
    let dir = tmpdir("onnx-fashion");
    let model = train(&dir, &["--dataset", "fashion-mnist", "--max-steps", "60"]);
    onnx_matches_predict("fashion-mnist", &dir, &model, &images);

    // nabla -> PyTorch layout -> nabla: the normaliser and class names travel in the metadata.
    let state = dir.join("torch.safetensors");
    let back = dir.join("imported.safetensors");
    ok(&nabla(&[
        "export",
        "--checkpoint",
        s(&model),
        "--format",
        "torch",
        "--out",
        s(&state),
    ]));
    let out = ok(&nabla(&[
        "import",
        "--state-dict",
        s(&state),
        "--out",
        s(&back),
    ]));
    assert!(out.contains("Global input normaliser"), "{out}");
    let (before, after) = (predict(&model, &images), predict(&back, &images));
    let worst = before["logits"]
        .iter()
        .zip(&after["logits"])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!(
        "torch round trip fashion-mnist: {} rows, max |Δlogits| = {worst:e}",
        before["logits"].len() / 10
    );
    assert_eq!(before, after);
}

#[test]
fn export_and_import_mistakes_are_one_line_errors() {
    let dir = tmpdir("interop-errors");
    let missing = dir.join("missing.safetensors");
    common::fails_with(
        &nabla(&[
            "export",
            "--checkpoint",
            s(&missing),
            "--format",
            "onnx",
            "--out",
            "m.onnx",
        ]),
        "missing.safetensors",
    );
    let model = train(&dir, &["--epochs", "1", "--hidden", "4"]);
    let nowhere = dir.join("no/such/dir/model.onnx");
    common::fails_with(
        &nabla(&[
            "export",
            "--checkpoint",
            s(&model),
            "--format",
            "onnx",
            "--out",
            s(&nowhere),
        ]),
        "no/such/dir",
    );
    common::fails_with(
        &nabla(&["export", "--checkpoint", s(&model), "--out", "x"]),
        "--format",
    );
    common::fails_with(
        &nabla(&[
            "import",
            "--format",
            "onnx",
            "--state-dict",
            s(&model),
            "--out",
            "x",
        ]),
        "onnx",
    );
    // A nabla model file is not a PyTorch state dict.
    common::fails_with(
        &nabla(&[
            "import",
            "--state-dict",
            s(&model),
            "--out",
            s(&dir.join("x")),
        ]),
        "this is a nabla model file",
    );
}

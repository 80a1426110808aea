//! Runs the `nabla` binary: training on the embedded spiral, on generated IDX and CSV files and
//! on a regression set; evaluation, prediction, info, gradcheck; and malformed inputs.

use std::io::Write;
use std::path::{Path, PathBuf};

mod common;
use common::{fails_with, nabla, ok, text, tmpdir, write_mnist_dir};

/// Decodes a PNG and checks it is a real picture: a sensible size and many distinct colours.
fn check_png(path: &Path) {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert!(
        info.width >= 300 && info.height >= 300,
        "{path:?}: {}x{}",
        info.width,
        info.height
    );
    let px = info.color_type.samples();
    let colours: std::collections::HashSet<&[u8]> = buf[..info.buffer_size()].chunks(px).collect();
    assert!(
        colours.len() > 20,
        "{path:?} has only {} colours",
        colours.len()
    );
}

fn metrics_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap()).unwrap()
}

#[test]
fn default_train_reaches_98_percent_on_the_spiral_and_writes_the_run_directory() {
    let dir = tmpdir("spiral");
    let run = dir.join("run");
    let out = nabla(&["train", "--out", run.to_str().unwrap()]);
    let stdout = ok(&out);
    assert!(stdout.contains("spiral: test accuracy"), "{stdout}");
    for f in [
        "config.json",
        "metrics.csv",
        "metrics.json",
        "model.safetensors",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    for f in [
        "loss.png",
        "accuracy.png",
        "confusion.png",
        "decision_regions.png",
    ] {
        check_png(&run.join(f));
    }
    let m = metrics_json(&run);
    let last = m.as_array().unwrap().last().unwrap();
    let acc = last["test_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.98, "test accuracy {acc}");
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert!(csv.starts_with("epoch,step,lr,train_loss"));
    assert_eq!(csv.lines().count(), m.as_array().unwrap().len() + 1);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["dataset"], "spiral");
    // plain output (not a terminal): one line per epoch
    assert!(stdout.lines().filter(|l| l.starts_with("epoch ")).count() >= 10);

    // eval and info on the checkpoint
    let model = run.join("model.safetensors");
    let ev = ok(&nabla(&["eval", "--checkpoint", model.to_str().unwrap()]));
    assert!(
        ev.contains("accuracy") && ev.contains("confusion matrix") && ev.contains("recall"),
        "{ev}"
    );
    let info = ok(&nabla(&["info", "--checkpoint", model.to_str().unwrap()]));
    assert!(
        info.contains("layers.0.weight") && info.contains("Linear(2 → 64)"),
        "{info}"
    );
    // --quiet prints only the summary line
    let q = ok(&nabla(&[
        "train",
        "--quiet",
        "--epochs",
        "2",
        "--no-plots",
        "--out",
        dir.join("q").to_str().unwrap(),
    ]));
    assert_eq!(q.trim().lines().count(), 1, "{q}");
}

#[test]
fn idx_directory_train_eval_predict() {
    let dir = tmpdir("idx");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_mnist_dir(&data, 400, 80);
    let run = dir.join("run");
    let out = ok(&nabla(&[
        "train",
        "--data-dir",
        data.to_str().unwrap(),
        "--hidden",
        "16",
        "--epochs",
        "20",
        "--batch-size",
        "32",
        "--out",
        run.to_str().unwrap(),
    ]));
    assert!(out.contains("mnist: test accuracy"), "{out}");
    check_png(&run.join("confusion.png"));
    let acc = metrics_json(&run).as_array().unwrap().last().unwrap()["test_accuracy"]
        .as_f64()
        .unwrap();
    assert!(acc > 0.9, "{acc}");
    let model = run.join("model.safetensors");
    let ev = ok(&nabla(&[
        "eval",
        "--checkpoint",
        model.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&ev).unwrap();
    assert_eq!(v["samples"], 80);
    assert_eq!(v["confusion"]["counts"].as_array().unwrap().len(), 4);
    let images = data.join("t10k-images-idx3-ubyte");
    let table = ok(&nabla(&[
        "predict",
        "--checkpoint",
        model.to_str().unwrap(),
        "--input",
        images.to_str().unwrap(),
        "--limit",
        "4",
    ]));
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 4, "{table}");
    let json = ok(&nabla(&[
        "predict",
        "--checkpoint",
        model.to_str().unwrap(),
        "--input",
        images.to_str().unwrap(),
        "--json",
    ]));
    let preds: serde_json::Value = serde_json::from_str(&json).unwrap();
    let preds = preds.as_array().unwrap();
    assert_eq!(preds.len(), 80);
    let p: f64 = preds[0]["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .sum();
    assert!((p - 1.0).abs() < 1e-4);
    let hits = preds
        .iter()
        .enumerate()
        .filter(|(i, r)| r["class"] == i % 4)
        .count();
    assert!(hits >= 72, "{hits} of 80");
    // gzipped files work too (detected by magic, whatever the name)
    let gz_dir = dir.join("gz");
    std::fs::create_dir_all(&gz_dir).unwrap();
    for f in [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ] {
        let raw = std::fs::read(data.join(f)).unwrap();
        let enc = flate2_encode(&raw);
        std::fs::File::create(gz_dir.join(format!("{f}.gz")))
            .unwrap()
            .write_all(&enc)
            .unwrap();
    }
    ok(&nabla(&[
        "eval",
        "--checkpoint",
        model.to_str().unwrap(),
        "--data-dir",
        gz_dir.to_str().unwrap(),
    ]));
}

/// gzip with stored (uncompressed) deflate blocks: a valid gzip stream without a compressor.
fn flate2_encode(raw: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let chunks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, c) in chunks.iter().enumerate() {
        out.push(u8::from(i + 1 == chunks.len()));
        let len = c.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&crc32(raw).to_le_bytes());
    out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn csv_train_eval_predict() {
    let dir = tmpdir("csv");
    let csv = dir.join("points.csv");
    let mut s = String::from("x1,x2,label\n");
    let mut rng = nabla::Rng::new(5);
    for _ in 0..300 {
        let (a, b) = (rng.uniform_in(-1.0, 1.0), rng.uniform_in(-1.0, 1.0));
        s += &format!("{a},{b},{}\n", usize::from(a + b > 0.0));
    }
    std::fs::write(&csv, s).unwrap();
    let run = dir.join("run");
    let out = ok(&nabla(&[
        "train",
        "--csv",
        csv.to_str().unwrap(),
        "--target-column",
        "label",
        "--epochs",
        "30",
        "--out",
        run.to_str().unwrap(),
    ]));
    assert!(out.contains("points: test accuracy"), "{out}");
    check_png(&run.join("decision_regions.png"));
    let model = run.join("model.safetensors");
    let table = ok(&nabla(&[
        "predict",
        "--checkpoint",
        model.to_str().unwrap(),
        "--input",
        csv.to_str().unwrap(),
        "--target-column",
        "label",
        "--limit",
        "3",
    ]));
    assert_eq!(table.lines().count(), 4, "{table}");
    ok(&nabla(&[
        "eval",
        "--checkpoint",
        model.to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
        "--target-column",
        "label",
    ]));
}

#[test]
fn sine_regression_writes_a_fit_plot() {
    let dir = tmpdir("sine");
    let run = dir.join("run");
    let out = ok(&nabla(&[
        "train",
        "--dataset",
        "sine",
        "--out",
        run.to_str().unwrap(),
    ]));
    assert!(out.contains("sine: test loss"), "{out}");
    check_png(&run.join("fit.png"));
    check_png(&run.join("loss.png"));
    let last = metrics_json(&run)
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    // noise has variance 0.01: a good fit gets the test MSE near it
    assert!(last["test_loss"].as_f64().unwrap() < 0.05, "{last}");
    assert!(last["test_accuracy"].is_null());
    let l1 = ok(&nabla(&[
        "train",
        "--dataset",
        "sine",
        "--loss",
        "l1",
        "--epochs",
        "3",
        "--no-plots",
        "--out",
        dir.join("l1").to_str().unwrap(),
    ]));
    assert!(l1.contains("sine:"));
    fails_with(
        &nabla(&["train", "--dataset", "sine", "--loss", "cross-entropy"]),
        "does not fit",
    );
}

#[test]
fn gradcheck_command_prints_a_passing_table() {
    let out = ok(&nabla(&["gradcheck"]));
    assert!(
        out.contains("matmul")
            && out.contains("softmax_cross_entropy")
            && out.contains("loss huber")
    );
    assert!(
        out.lines()
            .last()
            .unwrap()
            .contains(" passed, 0 failed (tol. = worst error"),
        "{out}"
    );
    assert!(out.contains("2nd (tol)") && out.contains("checkpoint (captured weight, dropout)"));
}

#[test]
fn malformed_inputs_fail_with_one_line_naming_the_file() {
    let dir = tmpdir("bad");
    let model_run = dir.join("run");
    ok(&nabla(&[
        "train",
        "--epochs",
        "1",
        "--no-plots",
        "--quiet",
        "--out",
        model_run.to_str().unwrap(),
    ]));
    let model = model_run.join("model.safetensors");

    // A good MNIST directory, then each file broken in turn.
    let good = dir.join("good");
    std::fs::create_dir_all(&good).unwrap();
    write_mnist_dir(&good, 20, 8);
    let broken = |name: &str, file: &str, bytes: Vec<u8>| -> PathBuf {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for f in std::fs::read_dir(&good).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), d.join(f.file_name())).unwrap();
        }
        std::fs::write(d.join(file), bytes).unwrap();
        d
    };
    let images = std::fs::read(good.join("train-images-idx3-ubyte")).unwrap();
    let cases = [
        (
            "truncated",
            broken(
                "truncated",
                "train-images-idx3-ubyte",
                images[..images.len() - 7].to_vec(),
            ),
            "truncated",
        ),
        (
            "magic",
            broken(
                "magic",
                "train-images-idx3-ubyte",
                [&[1u8, 2, 8, 3][..], &images[4..]].concat(),
            ),
            "bad magic",
        ),
        (
            "html",
            broken(
                "html",
                "train-labels-idx1-ubyte",
                b"<!DOCTYPE html><html>404</html>".to_vec(),
            ),
            "HTML",
        ),
        (
            "count",
            broken(
                "count",
                "train-labels-idx1-ubyte",
                [&[0u8, 0, 8, 1, 0, 0, 0, 3][..], &[1, 2, 3]].concat(),
            ),
            "3 labels but",
        ),
        (
            "gzip",
            broken(
                "gzip",
                "train-images-idx3-ubyte",
                vec![0x1f, 0x8b, 8, 0, 1, 2, 3],
            ),
            "gzip",
        ),
        (
            "huge",
            broken(
                "huge",
                "train-images-idx3-ubyte",
                vec![
                    0, 0, 8, 3, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
                ],
            ),
            "absurd",
        ),
    ];
    for (name, d, needle) in &cases {
        let out = nabla(&[
            "train",
            "--data-dir",
            d.to_str().unwrap(),
            "--epochs",
            "1",
            "--no-plots",
        ]);
        fails_with(&out, needle);
        assert!(
            text(&out.stderr).contains(name) || text(&out.stderr).contains("idx"),
            "{name}"
        );
    }
    fails_with(
        &nabla(&["train", "--data-dir", dir.join("nowhere").to_str().unwrap()]),
        "nowhere",
    );
    fails_with(
        &nabla(&["train", "--data-dir", dir.to_str().unwrap()]),
        "apt-get install dataset-fashion-mnist",
    );

    let csv_text = dir.join("text.csv");
    std::fs::write(&csv_text, "a,b,label\n1,2,0\n3,abc,1\n").unwrap();
    fails_with(
        &nabla(&["train", "--csv", csv_text.to_str().unwrap()]),
        "text.csv: line 3, column 2 ('b'): 'abc' is not a number",
    );
    let csv_missing = dir.join("missing.csv");
    std::fs::write(&csv_missing, "a,b,label\n1,,0\n").unwrap();
    fails_with(
        &nabla(&["train", "--csv", csv_missing.to_str().unwrap()]),
        "missing value",
    );
    let csv_nan = dir.join("nan.csv");
    std::fs::write(&csv_nan, "a,b,label\n1,NaN,0\n").unwrap();
    fails_with(
        &nabla(&["train", "--csv", csv_nan.to_str().unwrap()]),
        "not finite",
    );
    let csv_ragged = dir.join("ragged.csv");
    std::fs::write(&csv_ragged, "a,b,label\n1,2,0\n1,2\n").unwrap();
    fails_with(
        &nabla(&["train", "--csv", csv_ragged.to_str().unwrap()]),
        "2 fields, expected 3",
    );
    fails_with(
        &nabla(&[
            "train",
            "--csv",
            csv_text.to_str().unwrap(),
            "--target-column",
            "nope",
        ]),
        "no column named 'nope'",
    );

    // checkpoints
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"<html>oops</html>").unwrap();
    fails_with(
        &nabla(&["eval", "--checkpoint", junk.to_str().unwrap()]),
        "junk.safetensors",
    );
    fails_with(
        &nabla(&[
            "info",
            "--checkpoint",
            dir.join("none.safetensors").to_str().unwrap(),
        ]),
        "none.safetensors",
    );
    // predict with inputs of the wrong width
    let wide = dir.join("wide.csv");
    std::fs::write(&wide, "1,2,3\n4,5,6\n").unwrap();
    fails_with(
        &nabla(&[
            "predict",
            "--checkpoint",
            model.to_str().unwrap(),
            "--input",
            wide.to_str().unwrap(),
        ]),
        "expects 2",
    );

    // flags
    fails_with(&nabla(&["train", "--epochs", "abc"]), "--epochs");
    fails_with(&nabla(&["train", "--hidden", "0"]), "--hidden");
    fails_with(&nabla(&["train", "--lr=-1"]), "--lr -1 must be positive");
    fails_with(&nabla(&["train", "--activation", "swish"]), "swish");
    fails_with(&nabla(&["train", "--dropout", "1.5"]), "1.5");
    fails_with(&nabla(&["frobnicate"]), "frobnicate");
}

#[test]
fn validation_split_reports_per_epoch_and_tests_once() {
    let dir = tmpdir("val");
    let run = dir.join("run");
    let out = ok(&nabla(&[
        "train",
        "--val-fraction",
        "0.25",
        "--epochs",
        "8",
        "--no-plots",
        "--out",
        run.to_str().unwrap(),
    ]));
    assert!(out.contains("val acc"), "{out}");
    let rows = metrics_json(&run);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 8);
    assert!(rows.iter().all(|r| r["val_accuracy"].is_f64()));
    assert!(rows[..7].iter().all(|r| r["test_accuracy"].is_null()));
    assert!(rows[7]["test_accuracy"].is_f64());
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["validation_samples"], 225);
    assert_eq!(config["train_samples"], 675);
    fails_with(&nabla(&["train", "--val-fraction", "1.5"]), "1.5");
}

#[test]
fn bench_smoke_prints_one_json_line_per_workload() {
    let dir = tmpdir("bench");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_mnist_dir(&data, 600, 60);
    // The tiny 4×4 images stand in for Fashion-MNIST: the workloads' models need 784 inputs,
    // so only `tiny` runs here; fashion and wide refuse the shape with an error.
    let out = ok(&nabla(&["bench", "--workload", "tiny", "--steps", "50"]));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["name"], "tiny");
    assert_eq!(v["steps"], 50);
    assert!(v["steps_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["threads"].as_u64().unwrap() >= 1);
    assert_eq!(v["warm"], true);
    // Threads kept awake or not, the same training: the same final loss, bit for bit.
    let args = [
        "bench",
        "--workload",
        "tiny",
        "--steps",
        "50",
        "--threads",
        "2",
    ];
    let warm: serde_json::Value = serde_json::from_str(ok(&nabla(&args)).trim()).unwrap();
    let cold = ok(&nabla(&[&args[..], &["--cold"]].concat()));
    let cold: serde_json::Value = serde_json::from_str(cold.trim()).unwrap();
    assert_eq!(cold["warm"], false);
    assert_eq!(warm["final_loss"], cold["final_loss"]);
    assert_eq!(warm["final_loss"], v["final_loss"]);
    // The peak: every kernel this CPU has, the widest first, and a plausible number (a debug
    // build's vector FMAs still do more than 0.1 GFLOP/s; an optimised-away loop would report
    // absurd figures).
    let out = ok(&nabla(&["bench", "--workload", "peak", "--threads", "1"]));
    let p: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(p["name"], "peak");
    let g = p["gflops"].as_f64().unwrap();
    assert!(g > 0.1 && g < 10_000.0, "{g} GFLOP/s on one core");
    let isa = p["isa"].as_str().unwrap();
    assert_eq!(p["gflops_by_isa"][isa].as_f64(), Some(g));
    // The scalar tier's peak: SSE2's multiply and add on x86-64, `mul_add` elsewhere.
    let narrowest = if cfg!(target_arch = "x86_64") {
        "sse2"
    } else {
        "scalar"
    };
    assert!(p["gflops_by_isa"][narrowest].as_f64().unwrap() > 0.0);
    // Held to a tier: only that tier's kernels and below, and every line says which.
    let out = ok(&nabla(&[
        "bench",
        "--workload",
        "peak",
        "--threads",
        "1",
        "--max-isa",
        "scalar",
    ]));
    let p: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(p["isa_tier"], "scalar");
    assert_eq!(p["gflops_by_isa"].as_object().unwrap().len(), 1, "{p}");
    fails_with(
        &nabla(&["bench", "--workload", "peak", "--max-isa", "avx1024"]),
        "unknown tier \"avx1024\"",
    );
    fails_with(
        &common::command()
            .env("NABLA_MAX_ISA", "sse9")
            .args(["bench", "--workload", "peak"])
            .output()
            .unwrap(),
        "NABLA_MAX_ISA: unknown tier \"sse9\"",
    );
    // Inference: one line with the latency and the throughput; --model only with it.
    let out = ok(&nabla(&[
        "bench",
        "--workload",
        "infer",
        "--steps",
        "20",
        "--threads",
        "1",
    ]));
    let p: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(p["name"], "infer");
    let (median, p99) = (
        p["batch1_median_us"].as_f64().unwrap(),
        p["batch1_p99_us"].as_f64().unwrap(),
    );
    assert!(median > 0.0 && p99 >= median, "{p}");
    assert!(p["batch256_rows_per_s"].as_f64().unwrap() > 0.0, "{p}");
    fails_with(
        &nabla(&["bench", "--workload", "tiny", "--model", "m.safetensors"]),
        "--model is for --workload infer",
    );
    fails_with(
        &nabla(&[
            "bench",
            "--workload",
            "fashion",
            "--steps",
            "2",
            "--data-dir",
            data.to_str().unwrap(),
        ]),
        "the model takes [N, 784]",
    );
}

#[test]
fn export_to_torch_then_import_predicts_the_same() {
    let dir = tmpdir("torch");
    let run = dir.join("run");
    ok(&nabla(&[
        "train",
        "--epochs",
        "2",
        "--hidden",
        "16,16",
        "--no-plots",
        "--quiet",
        "--out",
        run.to_str().unwrap(),
    ]));
    let model = run.join("model.safetensors");
    let info = ok(&nabla(&["info", "--checkpoint", model.to_str().unwrap()]));
    assert!(info.contains("nabla export --checkpoint"), "{info}");
    let state = dir.join("torch.safetensors");
    let out = ok(&nabla(&[
        "export",
        "--checkpoint",
        model.to_str().unwrap(),
        "--format",
        "torch",
        "--out",
        state.to_str().unwrap(),
    ]));
    assert!(
        out.contains("nn.Sequential(nn.Linear(2, 16), nn.ReLU()"),
        "{out}"
    );
    let back = dir.join("imported.safetensors");
    ok(&nabla(&[
        "import",
        "--format",
        "torch",
        "--state-dict",
        state.to_str().unwrap(),
        "--arch",
        "2-16-16-3",
        "--activation",
        "relu",
        "--out",
        back.to_str().unwrap(),
    ]));
    let csv = dir.join("points.csv");
    std::fs::write(&csv, "x,y\n0.1,0.2\n-0.5,0.9\n0.7,-0.3\n1.5,1.0\n").unwrap();
    let predict = |m: &std::path::Path| {
        ok(&nabla(&[
            "predict",
            "--checkpoint",
            m.to_str().unwrap(),
            "--input",
            csv.to_str().unwrap(),
            "--json",
        ]))
    };
    assert_eq!(predict(&model), predict(&back));
    fails_with(
        &nabla(&[
            "import",
            "--state-dict",
            state.to_str().unwrap(),
            "--arch",
            "2-16-3",
            "--out",
            dir.join("other.safetensors").to_str().unwrap(),
        ]),
        "records another model",
    );
}

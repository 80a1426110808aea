//! Crash safety, exact resume, determinism and the NaN sentinel, through the `nabla` binary.

use std::path::Path;
use std::process::{Output, Stdio};

mod common;
use common::{command as bin, metrics_values, tmpdir};
use std::time::Duration;

use nabla::io::read_tensor_file;

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

/// Runs `nabla` and requires success, showing its stderr otherwise.
fn run_ok(args: &[&str]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The weights of a model file, bit for bit, by name.
fn weights(path: &Path) -> Vec<(String, Vec<u32>)> {
    read_tensor_file(path)
        .unwrap()
        .f32
        .into_iter()
        .map(|(n, t)| (n, t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect()))
        .collect()
}

const TRAIN: &[&str] = &[
    "train",
    "--epochs",
    "12",
    "--dropout",
    "0.1",
    "--batch-size",
    "16",
    "--checkpoint-every",
    "7",
    "--no-plots",
    "--quiet",
    "--hidden",
    "32,32",
];

/// Stops a run with `signal` at 20 random moments, resuming each time; the final weights and
/// metrics must be those of an uninterrupted run.
fn stop_at_random_moments_then_resume(signal: &str) {
    let dir = tmpdir(&format!("kill{signal}"));
    stop_and_resume_with(signal, &dir, TRAIN);
}

/// [`stop_at_random_moments_then_resume`] of the run `TRAIN` (flags) in `dir`.
fn stop_and_resume_with(signal: &str, dir: &Path, train: &[&str]) {
    let reference = dir.join("reference");
    run_ok(&[train, &["--out", reference.to_str().unwrap()]].concat());
    let want = weights(&reference.join("model.safetensors"));

    let victim = dir.join("victim");
    let mut rng = nabla::Rng::new(2024);
    let (mut kills, mut resumes) = (0, 0);
    let checkpoint = victim.join("checkpoint.safetensors");
    loop {
        let args: Vec<String> = if checkpoint.is_file() {
            resumes += 1;
            vec![
                "train".into(),
                "--resume".into(),
                victim.display().to_string(),
            ]
        } else {
            // Killed before its first checkpoint: start afresh over that run's files.
            [train, &["--out", victim.to_str().unwrap(), "--overwrite"]]
                .concat()
                .iter()
                .map(|s| s.to_string())
                .collect()
        };
        let mut child = bin()
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if kills < 20 {
            std::thread::sleep(Duration::from_millis(20 + rng.below(400) as u64));
            if child.try_wait().unwrap().is_none() {
                let pid = child.id().to_string();
                let sent = std::process::Command::new("kill")
                    .args([&format!("-{signal}"), pid.as_str()])
                    .status()
                    .unwrap();
                assert!(sent.success());
                let status = child.wait().unwrap();
                if status.success() {
                    // It finished just before the signal landed: start over.
                    let _ = std::fs::remove_dir_all(&victim);
                    continue;
                }
                // SIGINT after the handler is installed: saved, exit 130; before: killed.
                kills += 1;
                if checkpoint.is_file() {
                    // Whatever moment it died at, the latest checkpoint is whole and loads.
                    let f = read_tensor_file(&checkpoint).expect("checkpoint loads after SIGKILL");
                    assert_eq!(f.metadata["format"], "nabla-training-state");
                }
                continue;
            }
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if kills >= 20 {
            break;
        }
        // Finished before it could be killed: start over to get more kills in.
        let _ = std::fs::remove_dir_all(&victim);
    }
    assert!(kills >= 20, "{kills} kills");
    assert!(resumes > 0, "no run was resumed");
    assert_eq!(weights(&victim.join("model.safetensors")), want);
    assert_eq!(metrics_values(&victim), metrics_values(&reference));
    let no_tmp = std::fs::read_dir(&victim)
        .unwrap()
        .all(|e| !e.unwrap().file_name().to_string_lossy().contains(".tmp-"));
    assert!(
        no_tmp || kills > 0,
        "temporary files are only left by killed writes"
    );
}

#[test]
fn sigkill_at_random_moments_then_resume_is_bit_identical() {
    stop_at_random_moments_then_resume("KILL");
}

#[test]
fn sigkill_at_random_moments_of_a_cnn_with_batch_norm_then_resume_is_bit_identical() {
    let dir = tmpdir("killcnn");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    common::write_mnist_dir(&data, 320, 40);
    let flags = [
        "train",
        "--data-dir",
        data.to_str().unwrap(),
        "--arch",
        "cnn",
        "--epochs",
        "8",
        "--batch-size",
        "16",
        "--checkpoint-every",
        "7",
        "--threads",
        "1",
        "--no-plots",
        "--quiet",
    ];
    stop_and_resume_with("KILL", &dir, &flags);
}

#[test]
fn sigint_at_random_moments_then_resume_is_bit_identical() {
    stop_at_random_moments_then_resume("INT");
}

#[test]
fn same_seed_gives_identical_weights_with_one_or_two_threads() {
    let dir = tmpdir("det");
    let mut results = Vec::new();
    for (name, threads) in [("a", "2"), ("b", "2"), ("c", "1")] {
        let out_dir = dir.join(name);
        run_ok(&[
            "train",
            "--epochs",
            "5",
            "--dropout",
            "0.1",
            "--threads",
            threads,
            "--no-plots",
            "--quiet",
            "--out",
            out_dir.to_str().unwrap(),
        ]);
        results.push(weights(&out_dir.join("model.safetensors")));
    }
    assert_eq!(results[0], results[1], "two runs, same seed");
    assert_eq!(results[0], results[2], "1 thread vs 2 threads");
    // a larger model takes the threaded GEMM and element-wise paths
    let mut big = Vec::new();
    for (name, threads) in [("d", "1"), ("e", "2")] {
        let out_dir = dir.join(name);
        run_ok(&[
            "train",
            "--epochs",
            "2",
            "--hidden",
            "512,512",
            "--batch-size",
            "256",
            "--points",
            "200",
            "--threads",
            threads,
            "--no-plots",
            "--quiet",
            "--out",
            out_dir.to_str().unwrap(),
        ]);
        big.push(weights(&out_dir.join("model.safetensors")));
    }
    assert_eq!(big[0], big[1], "1 thread vs 2 threads, 512-wide layers");
}

#[test]
fn divergence_names_the_step_and_the_operation() {
    for extra in [&[][..], &["--detect-anomaly"][..]] {
        let out = run(&[
            &[
                "train",
                "--optimizer",
                "sgd",
                "--lr",
                "1e30",
                "--no-plots",
                "--quiet",
            ],
            extra,
        ]
        .concat());
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains("diverged at step 1 (epoch 1)"), "{err}");
        assert!(err.contains("linear produced"), "{err}");
        assert!(!err.contains("panicked"));
    }
}

#[test]
fn resume_needs_a_checkpoint() {
    let dir = tmpdir("nockpt");
    let out = run(&["train", "--resume", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("checkpoint.safetensors") && err.contains("--checkpoint-every"),
        "{err}"
    );
}

#[test]
fn nan_weights_in_the_first_layer_are_reported_by_name() {
    let dir = tmpdir("nanweights");
    let run_dir = dir.join("run");
    run_ok(&[
        "train",
        "--epochs",
        "1",
        "--checkpoint-every",
        "10",
        "--no-plots",
        "--quiet",
        "--out",
        run_dir.to_str().unwrap(),
    ]);
    // Corrupt the checkpoint the way a bad save or a diverged run would: NaN first-layer weights.
    let ckpt = run_dir.join("checkpoint.safetensors");
    let file = read_tensor_file(&ckpt).unwrap();
    let name = "model.layers.0.weight";
    let tensors: Vec<(String, nabla::Tensor)> = file
        .f32
        .iter()
        .map(|(n, t)| {
            let t = if n == name {
                nabla::Tensor::full(t.shape(), f32::NAN).unwrap()
            } else {
                t.clone()
            };
            (n.clone(), t)
        })
        .collect();
    assert!(
        tensors.iter().any(|(n, _)| n == name),
        "{:?}",
        file.describe()
    );
    nabla::io::write_tensor_file(&ckpt, &tensors, &file.metadata).unwrap();
    for extra in [&[][..], &["--detect-anomaly"][..]] {
        // The run finished (its last checkpoint is its end, step 29): continue it for an epoch.
        let resume = [
            "train",
            "--resume",
            run_dir.to_str().unwrap(),
            "--epochs",
            "2",
        ];
        let out = run(&[&resume[..], extra].concat());
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains("diverged at step 29"), "{err}");
        assert!(err.contains("already holds them"), "{err}");
        assert!(
            err.contains("non-finite parameters: layers.0.weight [2, 64] (128 of 128)"),
            "{err}"
        );
        assert!(err.contains("linear produced"), "{err}");
    }
}

#[test]
fn checkpointed_activations_train_to_bit_identical_weights() {
    let dir = tmpdir("ckptact");
    let args = |out: &Path, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "train",
            "--epochs",
            "2",
            "--hidden",
            "16,16,16,16",
            "--dropout",
            "0.2",
            "--no-plots",
            "--quiet",
            "--out",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.push(out.display().to_string());
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let plain = dir.join("plain");
    let a = args(&plain, &[]);
    run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    for k in ["1", "2"] {
        let ckpt = dir.join(format!("ckpt{k}"));
        let a = args(&ckpt, &["--checkpoint-activations", k]);
        run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(
            weights(&plain.join("model.safetensors")),
            weights(&ckpt.join("model.safetensors")),
            "K = {k}"
        );
    }
    let out = run(&["train", "--checkpoint-activations", "0", "--epochs", "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--checkpoint-activations"));
}

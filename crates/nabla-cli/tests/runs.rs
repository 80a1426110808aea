//! Runs and resumes as a user meets them: `--resume` with other flags or other data, run
//! directories shared by mistake, leftovers of killed writes, Ctrl-C, `eval` without data
//! flags, and flags that do not apply.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

mod common;
use common::{
    command, fails_with, metrics_values, nabla, ok, text, tmpdir, train_mnist, write_mnist_dir,
    write_mnist_dir_seeded,
};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn spiral(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--epochs",
        "3",
        "--hidden",
        "16",
        "--checkpoint-every",
        "10",
        "--no-plots",
        "--quiet",
        "--out",
        s(out),
    ];
    args.extend_from_slice(extra);
    nabla(&args)
}

#[test]
fn resume_refuses_flags_it_cannot_honour_and_extends_with_epochs() {
    let dir = tmpdir("resume-flags");
    let run = dir.join("run");
    ok(&spiral(&run, &[]));
    let config = std::fs::read(run.join("config.json")).unwrap();
    for (flag, value) in [
        ("--lr", "1"),
        ("--dataset", "moons"),
        ("--out", "elsewhere"),
        ("--hidden", "8"),
        ("--batch-size", "3"),
        ("--seed", "9"),
    ] {
        fails_with(
            &nabla(&["train", "--resume", s(&run), flag, value]),
            &format!("{flag} cannot be changed on --resume"),
        );
        // A failed resume leaves the run directory as it was.
        assert_eq!(
            std::fs::read(run.join("config.json")).unwrap(),
            config,
            "{flag}"
        );
    }
    let out = ok(&nabla(&["train", "--resume", s(&run), "--epochs", "5"]));
    assert!(out.contains("after 5 epochs"), "{out}");
    assert_eq!(metrics_values(&run).len(), 1 + 5);
}

#[test]
fn resume_over_other_data_is_refused_naming_both() {
    let dir = tmpdir("resume-data");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_mnist_dir(&data, 200, 40);
    let run = dir.join("run");
    train_mnist(
        &data,
        &run,
        &[
            "--batch-size",
            "16",
            "--checkpoint-every",
            "5",
            "--max-steps",
            "12",
        ],
    );
    let config = std::fs::read(run.join("config.json")).unwrap();
    // The same directory now holds other images (same shapes, other pixels).
    write_mnist_dir_seeded(&data, 200, 40, 7);
    let out = nabla(&["train", "--resume", s(&run), "--max-steps", "30"]);
    fails_with(&out, "it was trained on mnist");
    let err = text(&out.stderr);
    assert!(err.contains("but these data are mnist"), "{err}");
    assert!(err.contains("train-images-idx3-ubyte"), "{err}");
    assert_eq!(std::fs::read(run.join("config.json")).unwrap(), config);
}

#[test]
fn a_relative_csv_run_resumes_from_another_directory() {
    let dir = tmpdir("resume-csv");
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let mut csv = String::from("a,b,label\n");
    for i in 0..120 {
        let (a, b) = ((i % 11) as f64 / 5.0 - 1.0, (i % 7) as f64 / 3.0 - 1.0);
        csv += &format!("{a},{b},{}\n", usize::from(a + b > 0.0));
    }
    std::fs::write(work.join("sq.csv"), csv).unwrap();
    let run = dir.join("run");
    let out = command()
        .current_dir(&work)
        .args([
            "train",
            "--csv",
            "sq.csv",
            "--epochs",
            "2",
            "--checkpoint-every",
            "3",
        ])
        .args(["--no-plots", "--quiet", "--out", s(&run)])
        .output()
        .unwrap();
    ok(&out);
    let out = command()
        .current_dir(&dir)
        .args(["train", "--resume", s(&run), "--epochs", "4"])
        .output()
        .unwrap();
    assert!(ok(&out).contains("after 4 epochs"));
}

#[test]
fn run_directories_are_never_shared() {
    let dir = tmpdir("rundir");
    let run = dir.join("run");
    ok(&spiral(&run, &[]));
    let model = std::fs::read(run.join("model.safetensors")).unwrap();
    fails_with(&spiral(&run, &[]), "holds another run's files");
    // (the refused run wrote nothing)
    assert_eq!(std::fs::read(run.join("model.safetensors")).unwrap(), model);
    // --overwrite replaces the run: its old checkpoint cannot be resumed over the new files.
    ok(&spiral(&run, &["--overwrite", "--seed", "3"]));
    assert_ne!(std::fs::read(run.join("model.safetensors")).unwrap(), model);

    // A directory in use by a running training is refused.
    let busy = dir.join("busy");
    let mut child = command()
        .args([
            "train",
            "--epochs",
            "100000",
            "--hidden",
            "8",
            "--no-plots",
            "--out",
            s(&busy),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    // (The reader stays open: a run whose reader goes away ends quietly.)
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    reader.read_line(&mut first).unwrap();
    assert!(first.starts_with("training"), "{first}");
    fails_with(
        &spiral(&busy, &["--overwrite"]),
        "another nabla run is using this directory",
    );
    drop(reader);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_new_run_leaves_files_it_did_not_write_alone() {
    let dir = tmpdir("foreign-files");
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("loss.png"), b"the user's own picture").unwrap();
    ok(&spiral(&run, &[]));
    assert_eq!(
        std::fs::read(run.join("loss.png")).unwrap(),
        b"the user's own picture"
    );
}

#[test]
fn leftover_temporary_files_are_removed_on_the_next_open() {
    let dir = tmpdir("tmpfiles");
    let run = dir.join("run");
    ok(&spiral(&run, &[]));
    let leftover = run.join(".checkpoint.safetensors.tmp-4242-17");
    std::fs::write(&leftover, b"half a checkpoint").unwrap();
    ok(&nabla(&["train", "--resume", s(&run), "--epochs", "4"]));
    assert!(!leftover.exists());
}

/// Starts a run, waits for its first epoch line, sends SIGINT; returns its output.
fn interrupt(args: &[&str]) -> Output {
    let mut child = command()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("epoch ") {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "no epoch line");
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    child.wait_with_output().unwrap()
}

#[test]
fn ctrl_c_keeps_finished_epochs_and_resumes_to_the_same_weights() {
    let dir = tmpdir("sigint");
    let (reference, victim) = (dir.join("reference"), dir.join("victim"));
    let train = |out: &PathBuf| -> Vec<String> {
        [
            "train",
            "--epochs",
            "200",
            "--hidden",
            "16",
            "--checkpoint-every",
            "50",
            "--no-plots",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["--out".to_string(), out.display().to_string()])
        .collect()
    };
    ok(&command()
        .args(train(&reference))
        .arg("--quiet")
        .output()
        .unwrap());
    let args = train(&victim);
    let out = interrupt(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("interrupted at epoch"), "{err}");
    assert!(
        err.contains(&format!("nabla train --resume {}", victim.display())),
        "{err}"
    );
    assert!(victim.join("model.safetensors").is_file());
    assert!(
        metrics_values(&victim).len() >= 2,
        "the finished epochs are kept"
    );
    ok(&nabla(&["train", "--resume", s(&victim), "--quiet"]));
    let weights = |dir: &PathBuf| {
        let file = nabla::io::read_tensor_file(&dir.join("model.safetensors")).unwrap();
        let bits = |t: &nabla::Tensor| -> Vec<u32> {
            t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect()
        };
        file.f32
            .iter()
            .map(|(n, t)| (n.clone(), bits(t)))
            .collect::<Vec<_>>()
    };
    assert_eq!(weights(&victim), weights(&reference));
    assert_eq!(metrics_values(&victim), metrics_values(&reference));
}

#[test]
fn eval_defaults_to_the_data_the_model_was_trained_on() {
    let dir = tmpdir("eval-default");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_mnist_dir(&data, 200, 40);
    let run = dir.join("run");
    train_mnist(&data, &run, &[]);
    let model = run.join("model.safetensors");
    let out = ok(&nabla(&["eval", "--checkpoint", s(&model)]));
    assert!(out.contains("mnist (test split)"), "{out}");
    assert!(out.contains("samples 40"), "{out}");
}

#[test]
fn flags_that_do_not_apply_are_errors_in_the_clis_words() {
    let dir = tmpdir("flags");
    let out = |name: &str| dir.join(name).display().to_string();
    let cases: [(&[&str], &str); 12] = [
        (
            &["--task", "regression"],
            "--task applies only to --csv data (the task of spiral is classification)",
        ),
        (
            &["--momentum", "0.5"],
            "--momentum applies only to --optimizer sgd",
        ),
        (
            &["--nesterov"],
            "--nesterov applies only to --optimizer sgd",
        ),
        (
            &["--dataset", "spiral", "--data-dir", "/tmp"],
            "--data-dir applies only to MNIST-format data",
        ),
        (
            &["--dataset", "sine", "--label-smoothing", "0.1"],
            "--label-smoothing applies only to classification",
        ),
        (
            &["--outliers", "0.1"],
            "--outliers applies only to --dataset sine",
        ),
        (
            &["--test-fraction", "0.3"],
            "--test-fraction applies only to --csv and --text data",
        ),
        (&["--lr", "-1"], "--lr -1 must be positive and finite"),
        (
            &["--loss", "mse"],
            "--loss mse does not fit a classification data set",
        ),
        (
            &["--val-fraction", "-0.5"],
            "--val-fraction -0.5 is not in [0, 1)",
        ),
        (
            &["--bucket-values", "1000"],
            "--bucket-values applies only to sliced gradients (--distributed or --grad-shards)",
        ),
        (
            &["--grad-shards", "2", "--bucket-values", "0"],
            "invalid value '0' for '--bucket-values <BUCKET_VALUES>'",
        ),
    ];
    for (i, (flags, message)) in cases.iter().enumerate() {
        let o = out(&format!("r{i}"));
        let mut args = vec!["train", "--out", &o];
        args.extend_from_slice(flags);
        fails_with(&nabla(&args), message);
        assert!(
            !dir.join(format!("r{i}")).exists(),
            "a refused run creates nothing"
        );
    }
    let sgd = ok(&nabla(&[
        "train",
        "--optimizer",
        "sgd",
        "--momentum",
        "0.5",
        "--nesterov",
        "--epochs",
        "1",
        "--quiet",
        "--no-plots",
        "--out",
        &out("sgd"),
    ]));
    assert!(sgd.contains("after 1 epochs"), "{sgd}");
    let help = ok(&nabla(&["train", "--help"]));
    for default in [
        "[default: 0.9]",
        "[default: spiral",
        "[default: 15 images",
        "[default: 128 images",
    ] {
        assert!(help.contains(default), "--help lacks {default}");
    }
}

#[test]
fn profile_prints_where_the_time_went_and_writes_every_op() {
    let dir = tmpdir("profile");
    let run = dir.join("run");
    // With --quiet, the file only.
    let quiet = ok(&spiral(&run, &["--profile"]));
    assert!(!quiet.contains("where the time went"), "{quiet}");
    assert!(run.join("profile.csv").exists());
    let args = [
        "train",
        "--epochs",
        "2",
        "--hidden",
        "16",
        "--no-plots",
        "--overwrite",
    ];
    let stdout = ok(&nabla(
        &[&args[..], &["--profile", "--out", s(&run)]].concat(),
    ));
    assert!(stdout.contains("where the time went"), "{stdout}");
    assert!(
        stdout.contains("optimizer") && stdout.contains("total"),
        "{stdout}"
    );
    let csv = std::fs::read_to_string(run.join("profile.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("phase,op,shapes,calls,seconds,percent"));
    let rows: Vec<&str> = lines.collect();
    for want in ["span,optimizer,", "forward,", "backward,"] {
        assert!(rows.iter().any(|r| r.starts_with(want)), "{want} in\n{csv}");
    }
    // A later run without --profile in the same directory leaves no stale profile behind.
    ok(&spiral(&run, &["--overwrite"]));
    assert!(!run.join("profile.csv").exists());
}

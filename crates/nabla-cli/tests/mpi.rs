//! `nabla train --distributed` under a real `mpirun` (Open MPI) on loopback: 1, 2 and 4 ranks
//! train bit-identical weights; a rank killed mid-run ends the job with an error (no hang) and
//! `--resume` continues to the weights of an uninterrupted run. Built only with the `mpi`
//! feature (`cargo test -p nabla-cli --features mpi --test mpi`); skipped with a notice without
//! `mpirun`, unless `NABLA_REQUIRE_MPI=1` (CI).
#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{metrics_values, text, tmpdir};

fn mpirun_available() -> bool {
    let found = Command::new("mpirun")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let required = std::env::var("NABLA_REQUIRE_MPI").is_ok_and(|v| v == "1");
    assert!(
        found || !required,
        "NABLA_REQUIRE_MPI=1 but mpirun is missing (apt-get install openmpi-bin libopenmpi-dev)"
    );
    if !found {
        eprintln!("skipped: mpirun not found");
    }
    found
}

/// `mpirun -np N nabla ARGS` (as root, oversubscribed: the test machine has 2 cores).
fn mpirun(n: usize, args: &[&str]) -> Command {
    let mut c = Command::new("mpirun");
    c.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "-np",
        &n.to_string(),
    ])
    .arg(env!("CARGO_BIN_EXE_nabla"))
    .args(args)
    .env("NABLA_NO_DEBUG_WARNING", "1");
    c
}

const TRAIN: &[&str] = &[
    "train",
    "--distributed",
    "--hidden",
    "32,32",
    "--dropout",
    "0.1",
    "--batch-size",
    "64",
    "--bucket-values", // several buckets in flight at once
    "100",
    "--threads",
    "1",
    "--no-plots",
    "--quiet",
];

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn weights(dir: &Path) -> Vec<(String, Vec<u32>)> {
    let file = nabla::io::read_tensor_file(&dir.join("model.safetensors")).unwrap();
    file.f32
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect(),
            )
        })
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn one_two_and_four_ranks_give_bit_identical_weights() {
    if !mpirun_available() {
        return;
    }
    let dir = tmpdir("mpi-equal");
    let runs: Vec<PathBuf> = [1, 2, 4]
        .iter()
        .map(|&n| {
            let out = dir.join(format!("np{n}"));
            ok(&mpirun(n, &[TRAIN, &["--out", s(&out)]].concat())
                .output()
                .unwrap());
            out
        })
        .collect();
    for r in &runs[1..] {
        assert_eq!(weights(r), weights(&runs[0]), "{}", r.display());
        assert_eq!(
            metrics_values(r),
            metrics_values(&runs[0]),
            "{}",
            r.display()
        );
    }
}

#[test]
fn a_cnn_with_batch_norm_gives_bit_identical_weights_and_buffers_on_one_two_and_four_ranks() {
    if !mpirun_available() {
        return;
    }
    let dir = tmpdir("mpi-cnn");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    common::write_mnist_dir(&data, 200, 40);
    let train = |n: usize, out: &Path| {
        mpirun(
            n,
            &[
                "train",
                "--distributed",
                "--data-dir",
                s(&data),
                "--arch",
                "cnn",
                "--epochs",
                "2",
                "--batch-size",
                "30", // slices of 8, 8, 7, 7 rows; the last batch is smaller
                "--threads",
                "1",
                "--no-plots",
                "--quiet",
                "--out",
                s(out),
            ],
        )
        .output()
        .unwrap()
    };
    let runs: Vec<PathBuf> = [1, 2, 4]
        .iter()
        .map(|&n| {
            let out = dir.join(format!("np{n}"));
            ok(&train(n, &out));
            out
        })
        .collect();
    let w = weights(&runs[0]);
    assert!(w.iter().any(|(n, _)| n.ends_with("running_var")));
    for r in &runs[1..] {
        assert_eq!(weights(r), w, "{}", r.display());
        assert_eq!(
            metrics_values(r),
            metrics_values(&runs[0]),
            "{}",
            r.display()
        );
    }
}

/// The pids of the ranks of the job whose command line holds `marker` (not mpirun itself).
fn ranks_of(marker: &str, mpirun_pid: u32) -> Vec<String> {
    let out = Command::new("pgrep").args(["-f", marker]).output().unwrap();
    text(&out.stdout)
        .lines()
        .filter(|p| *p != mpirun_pid.to_string())
        .map(String::from)
        .collect()
}

#[test]
fn a_killed_rank_ends_the_job_and_resume_reaches_the_same_weights() {
    if !mpirun_available() {
        return;
    }
    let dir = tmpdir("mpi-kill");
    let (reference, victim) = (dir.join("reference"), dir.join("victim"));
    let long = [
        "--max-steps",
        "400",
        "--epochs",
        "40",
        "--checkpoint-every",
        "20",
    ];
    let args = |out: &Path| {
        [TRAIN, &long, &["--out", s(out)]]
            .concat()
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
    };
    ok(&mpirun(
        2,
        &args(&reference)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .output()
    .unwrap());

    let mut job = mpirun(
        2,
        &args(&victim).iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let ckpt = victim.join("checkpoint.safetensors");
    let start = Instant::now();
    while !ckpt.exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "no checkpoint");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pids = ranks_of(s(&victim), job.id());
    assert!(!pids.is_empty(), "no rank found");
    let last = pids.last().unwrap().clone();
    assert!(Command::new("kill")
        .args(["-KILL", &last])
        .status()
        .unwrap()
        .success());
    let killed = Instant::now();
    let status = loop {
        if let Some(st) = job.try_wait().unwrap() {
            break st;
        }
        if killed.elapsed() > Duration::from_secs(60) {
            let _ = job.kill();
            panic!("mpirun still running 60 s after a rank was killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if status.success() {
        eprintln!("the run finished before the kill landed; nothing to resume");
        return;
    }
    let resume = [
        "train",
        "--distributed",
        "--resume",
        s(&victim),
        "--quiet",
        "--no-plots",
    ];
    ok(&mpirun(2, &resume).output().unwrap());
    assert_eq!(weights(&victim), weights(&reference));
    assert_eq!(metrics_values(&victim), metrics_values(&reference));
}

#[test]
fn distributed_needs_an_out_directory() {
    if !mpirun_available() {
        return;
    }
    let out = mpirun(1, &["train", "--distributed"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--distributed needs --out DIR"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_refusal_on_rank_0_ends_the_job_instead_of_hanging() {
    if !mpirun_available() {
        return;
    }
    let dir = tmpdir("mpi-refused");
    let out = dir.join("run");
    let args = [TRAIN, &["--epochs", "1", "--out", s(&out)]].concat();
    ok(&mpirun(2, &args).output().unwrap());
    // Rank 0 refuses the used directory; rank 1 must not wait for it forever.
    let mut job = mpirun(2, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while job.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = job.kill();
            panic!("mpirun still running 60 s after rank 0 refused the run");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = job.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("holds another run's files"),
        "{}",
        text(&out.stderr)
    );
}

//! Helpers shared by the integration tests: running the binary, temporary directories, and
//! the check that a failure is one line naming what went wrong.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

#[path = "../../../nabla/tests/scratch/mod.rs"]
mod scratch;
pub use scratch::Scratch;

/// The `nabla` binary, without the debug-build warning.
pub fn command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nabla"));
    c.env("NABLA_NO_DEBUG_WARNING", "1");
    c
}

/// Runs `nabla ARGS` to completion.
pub fn nabla(args: &[&str]) -> Output {
    command()
        .args(args)
        .output()
        .expect("the nabla binary runs")
}

/// Bytes as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// A fresh, empty directory for one test, removed when the test passes.
pub fn tmpdir(name: &str) -> Scratch {
    Scratch::new(name)
}

/// A failed run: non-zero exit, exactly one line on stderr containing `needle`, no panic.
pub fn fails_with(out: &Output, needle: &str) {
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success: {err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected:\n{err}"
    );
    assert!(err.contains(needle), "{needle:?} not in: {err}");
}

/// Writes an IDX file of unsigned bytes.
pub fn write_idx(path: &Path, dims: &[u32], data: &[u8]) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(&[0, 0, 8, dims.len() as u8]).unwrap();
    for d in dims {
        f.write_all(&d.to_be_bytes()).unwrap();
    }
    f.write_all(data).unwrap();
}

/// A tiny MNIST-format set: 4×4 images whose class is the bright quadrant.
pub fn write_mnist_dir(dir: &Path, n_train: usize, n_test: usize) {
    write_mnist_dir_seeded(dir, n_train, n_test, 1)
}

/// [`write_mnist_dir`] with another pixel-noise seed (other data of the same shape).
pub fn write_mnist_dir_seeded(dir: &Path, n_train: usize, n_test: usize, seed: u64) {
    let make = |n: usize, seed: u64| {
        let mut rng = nabla::Rng::new(seed);
        let mut px = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n {
            let class = i % 4;
            for r in 0..4 {
                for c in 0..4 {
                    let quadrant = (r / 2) * 2 + c / 2;
                    let base = if quadrant == class { 200.0 } else { 30.0 };
                    px.push((base + 40.0 * rng.uniform()) as u8);
                }
            }
            labels.push(class as u8);
        }
        (px, labels)
    };
    let (px, lb) = make(n_train, seed);
    write_idx(
        &dir.join("train-images-idx3-ubyte"),
        &[n_train as u32, 4, 4],
        &px,
    );
    write_idx(&dir.join("train-labels-idx1-ubyte"), &[n_train as u32], &lb);
    let (px, lb) = make(n_test, seed + 1);
    write_idx(
        &dir.join("t10k-images-idx3-ubyte"),
        &[n_test as u32, 4, 4],
        &px,
    );
    write_idx(&dir.join("t10k-labels-idx1-ubyte"), &[n_test as u32], &lb);
}

/// A successful run's stdout; otherwise a panic with its exit code, stdout and stderr.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A run directory's metrics.csv without the time columns (seconds, samples/s).
pub fn metrics_values(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("metrics.csv"))
        .unwrap()
        .lines()
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            cells[..cells.len() - 2].join(",")
        })
        .collect()
}

/// Trains a small model on the MNIST-format directory `data` into `run` (`extra` flags added).
pub fn train_mnist(data: &Path, run: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "train",
        "--data-dir",
        data.to_str().unwrap(),
        "--hidden",
        "8",
        "--epochs",
        "2",
        "--no-plots",
        "--quiet",
        "--out",
        run.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ok(&nabla(&args))
}

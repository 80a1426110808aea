//! Running the Python checks in `crates/nabla/tests/python/` (shared by the library's and the
//! CLI's tests): `python3` (or `$NABLA_PYTHON`) with `safetensors` and `numpy`, and for the
//! ONNX checks `onnx` and `onnxruntime`.
#![allow(dead_code)] // each test binary uses a part

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Python interpreter.
pub fn python() -> String {
    std::env::var("NABLA_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Whether `python3` with safetensors and numpy is here. Without them a test is skipped with a
/// one-line notice, so the README's test command passes on a machine with only cargo, unless
/// `NABLA_REQUIRE_PYTHON=1` (set by `.ci/run`, which installs them), where missing is a failure.
pub fn python_available() -> bool {
    python_with(&["safetensors", "numpy"])
}

/// Whether `python3` with safetensors, numpy, onnx and onnxruntime is here (as
/// [`python_available`], skipping or failing the same way).
pub fn onnx_available() -> bool {
    python_with(&["safetensors", "numpy", "onnx", "onnxruntime"])
}

fn python_with(modules: &[&str]) -> bool {
    let found = Command::new(python())
        .args(["-c", &format!("import {}", modules.join(", "))])
        .output()
        .is_ok_and(|o| o.status.success());
    let required = std::env::var("NABLA_REQUIRE_PYTHON").is_ok_and(|v| v == "1");
    assert!(
        found || !required,
        "NABLA_REQUIRE_PYTHON=1 but `{} -c 'import {}'` fails (pip install {})",
        python(),
        modules.join(", "),
        modules.join(" ")
    );
    if !found {
        eprintln!("skipped: python3 with {} not found", modules.join("+"));
    }
    found
}

/// The path of a script in `crates/nabla/tests/python/` (from either crate's tests).
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../nabla/tests/python")
        .join(name)
}

/// Runs `script` with `args`: whether it succeeded, and its stdout and stderr.
pub fn run_status(name: &str, args: &[&Path]) -> (bool, String) {
    let out = Command::new(python())
        .arg(script(name))
        .args(args)
        .output()
        .expect("python3 runs (checked by python_available)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    (out.status.success(), format!("{stdout}{stderr}"))
}

/// Runs `script` with `args`; panics with its output unless it succeeds. Returns the output.
pub fn run(name: &str, args: &[&Path]) -> String {
    let (ok, output) = run_status(name, args);
    assert!(ok, "{name} failed:\n{output}");
    output
}

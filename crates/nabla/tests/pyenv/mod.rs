//! Running the Python checks in `tests/python/`: `python3` (or `$NABLA_PYTHON`) with the
//! `safetensors` and `numpy` packages.

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
    let found = Command::new(python())
        .args(["-c", "import safetensors, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    let required = std::env::var("NABLA_REQUIRE_PYTHON").is_ok_and(|v| v == "1");
    assert!(
        found || !required,
        "NABLA_REQUIRE_PYTHON=1 but `{} -c 'import safetensors, numpy'` fails (pip install safetensors numpy)",
        python()
    );
    if !found {
        eprintln!("skipped: python3 with safetensors+numpy not found");
    }
    found
}

/// The path of a script in `tests/python/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

/// Runs `script` with `args`; panics with its output unless it succeeds. Returns stdout.
pub fn run(name: &str, args: &[&Path]) -> String {
    let out = Command::new(python())
        .arg(script(name))
        .args(args)
        .output()
        .expect("python3 runs (checked by python_available)");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name} failed:\n{stdout}\n{stderr}");
    stdout
}

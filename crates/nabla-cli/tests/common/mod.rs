//! Helpers shared by the integration tests: running the binary, temporary directories, and
//! the check that a failure is one line naming what went wrong.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

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

/// A fresh, empty directory for one test.
pub fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nabla-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
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

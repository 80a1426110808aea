//! A test's own temporary directory (shared by the library's and the CLI's tests): created empty,
//! removed when the test passes, kept when it fails so that what it wrote can be read.
#![allow(dead_code)] // each test binary uses a part

use std::ffi::OsStr;
use std::ops::Deref;
use std::path::{Path, PathBuf};

/// A fresh, empty directory `nabla-test-{name}-{pid}` under the system's temporary directory.
/// Dereferences to its [`Path`]; dropped after a passing test, it is removed with what is in it.
pub struct Scratch(PathBuf);

impl Scratch {
    /// Creates (emptying first, if a crashed run left it) the directory for `name`.
    pub fn new(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("nabla-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", d.display()));
        Scratch(d)
    }
}

impl Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<OsStr> for Scratch {
    fn as_ref(&self) -> &OsStr {
        self.0.as_os_str()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} (the test failed)", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
